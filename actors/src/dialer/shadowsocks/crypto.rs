//! The ciphers under both editions, behind one small interface: an AEAD
//! that seals and opens a buffer in place with its 16-byte tag at the end
//! ([`Aead`]), the little-endian nonce counter of a TCP stream
//! ([`NonceCounter`]), and what the 2022 PSK itself keys for UDP
//! ([`UdpHeaderCipher`]). Keys are derived in [`super::method`]; framing
//! is in the TCP and UDP modules.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};

use super::error::ShadowsocksError;
use super::method::Method;

/// Bytes of every tag.
pub(super) const TAG_LEN: usize = 16;
/// Bytes of the nonce of the 2022 ChaCha UDP packets (XChaCha20).
pub(super) const XNONCE_LEN: usize = 24;

/// The AEAD of a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CipherKind {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

/// An AEAD keyed for one session. Boxed: the AES key schedules are large
/// and a stream holds two of them.
pub(super) enum Aead {
    Aes128Gcm(Box<Aes128Gcm>),
    Aes256Gcm(Box<Aes256Gcm>),
    ChaCha20Poly1305(Box<ChaCha20Poly1305>),
}

impl Aead {
    pub(super) fn new(kind: CipherKind, key: &[u8]) -> Result<Aead, ShadowsocksError> {
        let bad = |_| ShadowsocksError::BadKey("a subkey of the wrong length".into());
        Ok(match kind {
            CipherKind::Aes128Gcm => {
                Aead::Aes128Gcm(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?))
            }
            CipherKind::Aes256Gcm => {
                Aead::Aes256Gcm(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?))
            }
            CipherKind::ChaCha20Poly1305 => Aead::ChaCha20Poly1305(Box::new(
                ChaCha20Poly1305::new_from_slice(key).map_err(bad)?,
            )),
        })
    }

    /// Encrypts `buf` but its last [`TAG_LEN`] bytes, and writes the tag
    /// there.
    pub(super) fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> Result<(), ShadowsocksError> {
        let len = buf.len();
        let text_len = len
            .checked_sub(TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        let (text, tag_out) = buf.split_at_mut(text_len);
        let nonce = (*nonce).into();
        let tag = match self {
            Aead::Aes128Gcm(c) => c.encrypt_inout_detached(&nonce, &[], text.into()),
            Aead::Aes256Gcm(c) => c.encrypt_inout_detached(&nonce, &[], text.into()),
            Aead::ChaCha20Poly1305(c) => c.encrypt_inout_detached(&nonce, &[], text.into()),
        }
        .map_err(|_| ShadowsocksError::TooLong(text_len))?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Checks the tag at the end of `buf` and decrypts the rest in place;
    /// returns the plaintext's length.
    pub(super) fn open(&self, nonce: &[u8; 12], buf: &mut [u8]) -> Result<usize, ShadowsocksError> {
        let text_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        let (text, tag) = buf.split_at_mut(text_len);
        let tag: [u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| ShadowsocksError::Truncated)?;
        let tag = tag.into();
        let nonce = (*nonce).into();
        match self {
            Aead::Aes128Gcm(c) => c.decrypt_inout_detached(&nonce, &[], text.into(), &tag),
            Aead::Aes256Gcm(c) => c.decrypt_inout_detached(&nonce, &[], text.into(), &tag),
            Aead::ChaCha20Poly1305(c) => c.decrypt_inout_detached(&nonce, &[], text.into(), &tag),
        }
        .map_err(|_| ShadowsocksError::Tag)?;
        Ok(text_len)
    }
}

/// A stream's nonce: a 96-bit little-endian counter from zero, one step
/// per sealed or opened chunk (SIP004, SIP022 section 3.1.1).
#[derive(Default)]
pub(super) struct NonceCounter([u8; 12]);

impl NonceCounter {
    /// The current nonce; the counter moves on.
    pub(super) fn next(&mut self) -> [u8; 12] {
        let current = self.0;
        for byte in &mut self.0 {
            let (sum, carry) = byte.overflowing_add(1);
            *byte = sum;
            if !carry {
                break;
            }
        }
        current
    }
}

/// What the PSK of a 2022 method keys for UDP: AES to encrypt the 16-byte
/// separate header (session and packet IDs), or, for the ChaCha method,
/// XChaCha20-Poly1305 over whole packets (SIP022 sections 3.2.1, 4.1).
pub(super) enum UdpHeaderCipher {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
    XChaCha(Box<XChaCha20Poly1305>),
}

impl UdpHeaderCipher {
    /// The cipher of a 2022 method's key; None for a classic method.
    pub(super) fn for_method(
        method: Method,
        psk: &[u8],
    ) -> Result<Option<UdpHeaderCipher>, ShadowsocksError> {
        if !method.is_2022() {
            return Ok(None);
        }
        let bad = |_| ShadowsocksError::BadKey("a key of the wrong length".into());
        Ok(Some(match method.cipher() {
            CipherKind::Aes128Gcm => {
                UdpHeaderCipher::Aes128(Box::new(aes::Aes128::new_from_slice(psk).map_err(bad)?))
            }
            CipherKind::Aes256Gcm => {
                UdpHeaderCipher::Aes256(Box::new(aes::Aes256::new_from_slice(psk).map_err(bad)?))
            }
            CipherKind::ChaCha20Poly1305 => UdpHeaderCipher::XChaCha(Box::new(
                XChaCha20Poly1305::new_from_slice(psk).map_err(bad)?,
            )),
        }))
    }

    /// Encrypts a separate header in place (one AES block); false for the
    /// XChaCha method, which has none.
    pub(super) fn encrypt_header(&self, block: &mut [u8; 16]) -> bool {
        let mut array = (*block).into();
        match self {
            UdpHeaderCipher::Aes128(c) => c.encrypt_block(&mut array),
            UdpHeaderCipher::Aes256(c) => c.encrypt_block(&mut array),
            UdpHeaderCipher::XChaCha(_) => return false,
        }
        block.copy_from_slice(&array);
        true
    }

    /// Decrypts a separate header in place; false for the XChaCha method.
    pub(super) fn decrypt_header(&self, block: &mut [u8; 16]) -> bool {
        let mut array = (*block).into();
        match self {
            UdpHeaderCipher::Aes128(c) => c.decrypt_block(&mut array),
            UdpHeaderCipher::Aes256(c) => c.decrypt_block(&mut array),
            UdpHeaderCipher::XChaCha(_) => return false,
        }
        block.copy_from_slice(&array);
        true
    }

    /// XChaCha20-Poly1305 sealing of `buf` (its last [`TAG_LEN`] bytes
    /// take the tag); an error for the AES methods.
    pub(super) fn seal_packet(
        &self,
        nonce: &[u8; XNONCE_LEN],
        buf: &mut [u8],
    ) -> Result<(), ShadowsocksError> {
        let UdpHeaderCipher::XChaCha(c) = self else {
            return Err(ShadowsocksError::BadHeader("not an XChaCha method"));
        };
        let text_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        let (text, tag_out) = buf.split_at_mut(text_len);
        let tag = c
            .encrypt_inout_detached(&(*nonce).into(), &[], text.into())
            .map_err(|_| ShadowsocksError::TooLong(text_len))?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Opens an XChaCha20-Poly1305 packet body in place; returns the
    /// plaintext's length.
    pub(super) fn open_packet(
        &self,
        nonce: &[u8; XNONCE_LEN],
        buf: &mut [u8],
    ) -> Result<usize, ShadowsocksError> {
        let UdpHeaderCipher::XChaCha(c) = self else {
            return Err(ShadowsocksError::BadHeader("not an XChaCha method"));
        };
        let text_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(ShadowsocksError::Truncated)?;
        let (text, tag) = buf.split_at_mut(text_len);
        let tag: [u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| ShadowsocksError::Truncated)?;
        c.decrypt_inout_detached(&(*nonce).into(), &[], text.into(), &tag.into())
            .map_err(|_| ShadowsocksError::Tag)?;
        Ok(text_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_counts_up_little_endian() {
        let mut nonce = NonceCounter::default();
        assert_eq!(nonce.next(), [0; 12]);
        assert_eq!(nonce.next()[0], 1);
        let mut nonce = NonceCounter([0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        nonce.next();
        assert_eq!(nonce.next(), [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn seal_then_open_round_trips_and_tampering_fails() {
        for kind in [
            CipherKind::Aes128Gcm,
            CipherKind::Aes256Gcm,
            CipherKind::ChaCha20Poly1305,
        ] {
            let len = if kind == CipherKind::Aes128Gcm {
                16
            } else {
                32
            };
            let aead = Aead::new(kind, &vec![7u8; len]).unwrap();
            let mut buf = b"hello world\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
            aead.seal(&[1; 12], &mut buf).unwrap();
            assert_ne!(&buf[..11], b"hello world");
            let mut copy = buf.clone();
            assert_eq!(aead.open(&[1; 12], &mut copy), Ok(11));
            assert_eq!(&copy[..11], b"hello world");
            assert_eq!(
                aead.open(&[2; 12], &mut buf.clone()),
                Err(ShadowsocksError::Tag)
            );
            buf[3] ^= 1;
            assert_eq!(aead.open(&[1; 12], &mut buf), Err(ShadowsocksError::Tag));
            assert_eq!(
                aead.open(&[1; 12], &mut [0; 5]),
                Err(ShadowsocksError::Truncated)
            );
        }
    }
}
