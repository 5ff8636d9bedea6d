//! The request stream of a TCP connection, as bytes: the salt and the
//! request header (the target address; for 2022 a fixed and a variable
//! header with padding or the first payload), then length and payload
//! chunks. [`Encrypter`] encrypts into one reused buffer that
//! [`super::stream`] writes out; it does no I/O itself.

use super::crypto::{Aead, NonceCounter, TAG_LEN};
use super::error::ShadowsocksError;
use super::method::{Key, Method, MAX_KEY_LEN};
use super::unix_now;
use crate::dialer::socks5::wire::{put_addr, MAX_ADDR_LEN};
use crate::dialer::socks5::TargetAddr;

/// SIP022's header type of a request stream.
const REQUEST_TYPE: u8 = 0;
/// The most padding a 2022 request header carries (SIP022 3.1.3).
const MAX_PADDING: usize = 900;
/// How many chunks of the largest size one write encrypts at most: about
/// 64 KiB for either edition, so the buffer stays bounded and each write
/// reaches the socket in one call.
fn batch_chunks(method: Method) -> usize {
    if method.is_2022() {
        1
    } else {
        4
    }
}

/// Encrypts a request stream into a buffer.
pub(super) struct Encrypter {
    method: Method,
    aead: Aead,
    nonce: NonceCounter,
    /// The target's SOCKS5 address, until the header is encrypted.
    target: Option<Vec<u8>>,
    salt: [u8; MAX_KEY_LEN],
    /// Encrypted bytes not yet written.
    out: Vec<u8>,
    /// How many bytes of `out` are written.
    written: usize,
}

impl Encrypter {
    /// A request stream to `target`; returns it and its salt (the 2022
    /// reply echoes the salt).
    pub(super) fn new(
        key: &Key,
        target: &TargetAddr,
    ) -> Result<(Encrypter, [u8; MAX_KEY_LEN]), ShadowsocksError> {
        let method = key.method();
        let mut salt = [0u8; MAX_KEY_LEN];
        rand::fill(&mut salt[..method.key_len()]);
        let mut addr = Vec::with_capacity(MAX_ADDR_LEN);
        put_addr(target, &mut addr).map_err(|_| ShadowsocksError::Address)?;
        let encrypter = Encrypter {
            method,
            aead: key.session(&salt[..method.key_len()])?,
            nonce: NonceCounter::default(),
            target: Some(addr),
            salt,
            out: Vec::new(),
            written: 0,
        };
        Ok((encrypter, salt))
    }

    /// True until the request header is encrypted.
    pub(super) fn header_pending(&self) -> bool {
        self.target.is_some()
    }

    /// The encrypted bytes not yet written.
    pub(super) fn unwritten(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// Marks `n` more bytes as written; the buffer is reused once empty.
    pub(super) fn advance(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }

    /// Encrypts a prefix of `data` (the header first, if still pending),
    /// and returns its length: all of `data` up to about 64 KiB. With
    /// `data` empty, encrypts only the header, if pending.
    pub(super) fn encrypt(&mut self, data: &[u8]) -> Result<usize, ShadowsocksError> {
        let mut taken = 0;
        if let Some(addr) = self.target.take() {
            self.out
                .extend_from_slice(&self.salt[..self.method.key_len()]);
            taken = if self.method.is_2022() {
                self.header_2022(&addr, data)?
            } else {
                self.header_classic(&addr, data)?
            };
        }
        let max = self.method.max_chunk();
        let budget = max * batch_chunks(self.method);
        while taken < data.len() && taken < budget {
            let len = (data.len() - taken).min(max);
            self.chunk(&data[taken..taken + len])?;
            taken += len;
        }
        Ok(taken)
    }

    /// SIP004: the address is the start of the first chunk's payload; the
    /// rest of it is data.
    fn header_classic(&mut self, addr: &[u8], data: &[u8]) -> Result<usize, ShadowsocksError> {
        let take = data.len().min(self.method.max_chunk() - addr.len());
        let len = (addr.len() + take) as u16;
        self.seal_with(2, |out| out.extend_from_slice(&len.to_be_bytes()))?;
        self.seal_with(addr.len() + take, |out| {
            out.extend_from_slice(addr);
            out.extend_from_slice(&data[..take]);
        })?;
        Ok(take)
    }

    /// SIP022: the fixed header (type, timestamp, length of the next), then
    /// the variable one: address, padding (only when there is no data: the
    /// request must carry one or the other), and the first data.
    fn header_2022(&mut self, addr: &[u8], data: &[u8]) -> Result<usize, ShadowsocksError> {
        let padding = if data.is_empty() {
            rand::random_range(1..=MAX_PADDING)
        } else {
            0
        };
        let room = usize::from(u16::MAX) - addr.len() - 2 - padding;
        let take = data.len().min(room);
        let var_len = addr.len() + 2 + padding + take;
        self.seal_with(1 + 8 + 2, |out| {
            out.push(REQUEST_TYPE);
            out.extend_from_slice(&unix_now().to_be_bytes());
            out.extend_from_slice(&(var_len as u16).to_be_bytes());
        })?;
        self.seal_with(var_len, |out| {
            out.extend_from_slice(addr);
            out.extend_from_slice(&(padding as u16).to_be_bytes());
            out.resize(out.len() + padding, 0);
            out.extend_from_slice(&data[..take]);
        })?;
        Ok(take)
    }

    /// A length chunk and a payload chunk.
    fn chunk(&mut self, payload: &[u8]) -> Result<(), ShadowsocksError> {
        let len =
            u16::try_from(payload.len()).map_err(|_| ShadowsocksError::TooLong(payload.len()))?;
        self.seal_with(2, |out| out.extend_from_slice(&len.to_be_bytes()))?;
        self.seal_with(payload.len(), |out| out.extend_from_slice(payload))
    }

    /// Appends `len` bytes of plaintext with `fill`, then seals them with
    /// the next nonce, the tag appended.
    fn seal_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ShadowsocksError> {
        let start = self.out.len();
        self.out.reserve(len + TAG_LEN);
        fill(&mut self.out);
        self.out.resize(start + len + TAG_LEN, 0);
        self.aead.seal(&self.nonce.next(), &mut self.out[start..])
    }
}
