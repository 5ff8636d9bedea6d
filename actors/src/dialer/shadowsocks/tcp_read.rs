//! The response stream of a TCP connection: the node's salt, then (2022)
//! the fixed response header, then length and payload chunks, each
//! checked and decrypted in place in one read buffer. [`Decrypter`] reads
//! ahead as far as the buffer goes, so small chunks cost no extra reads;
//! what it refuses is a [`ShadowsocksError`], and the stream stays failed.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::crypto::{Aead, NonceCounter, TAG_LEN};
use super::error::ShadowsocksError;
use super::method::{Key, MAX_KEY_LEN};
use super::{fresh, unix_now};

/// SIP022's header type of a response stream.
const RESPONSE_TYPE: u8 = 1;
/// The read buffer's first size: one classic chunk of the largest size
/// with its length chunk, and the 2022 response header. It grows, once,
/// to the largest 2022 chunk when one comes.
const READ_BUF_START: usize = 16 * 1024 + 128;

/// What the next frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// The salt (2022: with the fixed response header).
    Salt,
    /// A length chunk.
    Length,
    /// A payload chunk of this many bytes.
    Payload(usize),
}

/// Decrypts a response stream.
pub(super) struct Decrypter {
    key: Arc<Key>,
    request_salt: [u8; MAX_KEY_LEN],
    aead: Option<Aead>,
    nonce: NonceCounter,
    next: Next,
    buf: Vec<u8>,
    /// Bytes read and not yet decrypted.
    raw: Range<usize>,
    /// Decrypted payload not yet handed out.
    plain: Range<usize>,
    failed: Option<ShadowsocksError>,
    /// Seconds since the Unix epoch (fixed while fuzzing).
    clock: fn() -> u64,
}

impl Decrypter {
    pub(super) fn new(key: Arc<Key>, request_salt: [u8; MAX_KEY_LEN]) -> Decrypter {
        Decrypter {
            key,
            request_salt,
            aead: None,
            nonce: NonceCounter::default(),
            next: Next::Salt,
            buf: Vec::new(),
            raw: 0..0,
            plain: 0..0,
            failed: None,
            clock: unix_now,
        }
    }

    /// A response stream read at a fixed time (what the fuzzer needs to
    /// reach past the 2022 timestamp).
    pub(super) fn with_clock(mut self, clock: fn() -> u64) -> Decrypter {
        self.clock = clock;
        self
    }

    /// The request's salt, which a 2022 response echoes.
    pub(super) fn request_salt(&self) -> &[u8] {
        &self.request_salt[..self.key.method().key_len()]
    }

    /// Reads payload into `out` (nothing added: the stream ended cleanly).
    pub(super) fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.plain.is_empty() {
                let len = self.plain.len().min(out.remaining());
                let end = self.plain.start + len;
                out.put_slice(&self.buf[self.plain.start..end]);
                self.plain.start = end;
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &self.failed {
                return Poll::Ready(Err(err.clone().into_io()));
            }
            let need = self.frame_len();
            let more = ready!(self.poll_fill(inner, cx, need))?;
            let decoded = if more {
                self.decode_frame(need)
            } else if self.raw.is_empty() && !self.in_payload() {
                // The end of the stream between frames: a clean end.
                return Poll::Ready(Ok(()));
            } else {
                Err(ShadowsocksError::Truncated)
            };
            if let Err(err) = decoded {
                self.failed = Some(err.clone());
                return Poll::Ready(Err(err.into_io()));
            }
        }
    }

    fn in_payload(&self) -> bool {
        matches!(self.next, Next::Payload(_))
    }

    /// Bytes of the next frame, tags included.
    fn frame_len(&self) -> usize {
        let salt_len = self.key.method().key_len();
        match self.next {
            Next::Salt if self.key.method().is_2022() => salt_len + header_len(salt_len) + TAG_LEN,
            Next::Salt => salt_len,
            Next::Length => 2 + TAG_LEN,
            Next::Payload(len) => len + TAG_LEN,
        }
    }

    /// Reads until `need` undecoded bytes are buffered: Ok(false) when the
    /// stream ends first.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        need: usize,
    ) -> Poll<io::Result<bool>> {
        while self.raw.len() < need {
            if self.raw.start + need > self.buf.len() {
                self.buf.copy_within(self.raw.clone(), 0);
                self.raw = 0..self.raw.len();
                if need > self.buf.len() {
                    self.buf.resize(need.max(READ_BUF_START), 0);
                }
            }
            let mut read = ReadBuf::new(&mut self.buf[self.raw.end..]);
            ready!(Pin::new(&mut *inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            self.raw.end += n;
        }
        Poll::Ready(Ok(true))
    }

    /// Checks and decrypts the frame of `len` bytes at the start of `raw`.
    fn decode_frame(&mut self, len: usize) -> Result<(), ShadowsocksError> {
        let frame = self.raw.start..self.raw.start + len;
        self.raw.start = frame.end;
        match self.next {
            Next::Salt => self.salt(frame),
            Next::Length => {
                let chunk_len = self.open(frame.clone())?;
                let len = usize::from(u16::from_be_bytes([
                    self.buf[chunk_len.start],
                    self.buf[chunk_len.start + 1],
                ]));
                if len > self.key.method().max_chunk() {
                    return Err(ShadowsocksError::TooLong(len));
                }
                self.next = Next::Payload(len);
                Ok(())
            }
            Next::Payload(_) => {
                self.plain = self.open(frame)?;
                self.next = Next::Length;
                Ok(())
            }
        }
    }

    /// The node's salt keys the stream; a 2022 response header follows it,
    /// and says how long the first payload chunk is.
    fn salt(&mut self, frame: Range<usize>) -> Result<(), ShadowsocksError> {
        let method = self.key.method();
        let salt_len = method.key_len();
        self.aead = Some(
            self.key
                .session(&self.buf[frame.start..frame.start + salt_len])?,
        );
        if !method.is_2022() {
            self.next = Next::Length;
            return Ok(());
        }
        let header = self.open(frame.start + salt_len..frame.end)?;
        let header = &self.buf[header];
        let (&kind, rest) = header.split_first().ok_or(ShadowsocksError::Truncated)?;
        let (timestamp, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(ShadowsocksError::Truncated)?;
        let (salt, rest) = rest
            .split_at_checked(salt_len)
            .ok_or(ShadowsocksError::Truncated)?;
        let (len, _) = rest
            .split_first_chunk::<2>()
            .ok_or(ShadowsocksError::Truncated)?;
        if kind != RESPONSE_TYPE {
            return Err(ShadowsocksError::BadHeader("not a response stream"));
        }
        if !fresh(u64::from_be_bytes(*timestamp), (self.clock)()) {
            return Err(ShadowsocksError::Stale);
        }
        if salt != self.request_salt() {
            return Err(ShadowsocksError::BadHeader(
                "the response is for another request",
            ));
        }
        self.next = Next::Payload(usize::from(u16::from_be_bytes(*len)));
        Ok(())
    }

    /// Opens the sealed chunk at `frame` in place; returns its plaintext.
    fn open(&mut self, frame: Range<usize>) -> Result<Range<usize>, ShadowsocksError> {
        let aead = self
            .aead
            .as_ref()
            .ok_or(ShadowsocksError::BadHeader("no salt"))?;
        let len = aead.open(&self.nonce.next(), &mut self.buf[frame.clone()])?;
        Ok(frame.start..frame.start + len)
    }
}

/// Bytes of the 2022 fixed response header: type, timestamp, request
/// salt, length.
fn header_len(salt_len: usize) -> usize {
    1 + 8 + salt_len + 2
}
