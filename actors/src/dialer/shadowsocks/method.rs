//! The methods ward speaks ([`Method`]) and the key a node is configured
//! with ([`Key`]): a classic password stretched by `EVP_BytesToKey`, or a
//! 2022 pre-shared key given in base64 (SIP022 section 2.1, which forbids
//! stretching). What each method's sizes are lives here too; the ciphers
//! themselves are in [`super::crypto`].

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use md5::{Digest, Md5};

use super::crypto::{Aead, CipherKind, UdpHeaderCipher};
use super::error::ShadowsocksError;

/// The longest key of any method (AES-256, ChaCha20).
pub(super) const MAX_KEY_LEN: usize = 32;

/// A Shadowsocks method: the classic AEAD edition (SIP004) or the 2022
/// edition (SIP022).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20IetfPoly1305,
    Blake3Aes128Gcm,
    Blake3Aes256Gcm,
    Blake3Chacha20Poly1305,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Aes128Gcm,
        Method::Aes256Gcm,
        Method::Chacha20IetfPoly1305,
        Method::Blake3Aes128Gcm,
        Method::Blake3Aes256Gcm,
        Method::Blake3Chacha20Poly1305,
    ];

    /// The name nodes and configs use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Aes128Gcm => "aes-128-gcm",
            Method::Aes256Gcm => "aes-256-gcm",
            Method::Chacha20IetfPoly1305 => "chacha20-ietf-poly1305",
            Method::Blake3Aes128Gcm => "2022-blake3-aes-128-gcm",
            Method::Blake3Aes256Gcm => "2022-blake3-aes-256-gcm",
            Method::Blake3Chacha20Poly1305 => "2022-blake3-chacha20-poly1305",
        }
    }

    /// True for the 2022 edition.
    pub fn is_2022(self) -> bool {
        matches!(
            self,
            Method::Blake3Aes128Gcm | Method::Blake3Aes256Gcm | Method::Blake3Chacha20Poly1305
        )
    }

    pub(super) fn cipher(self) -> CipherKind {
        match self {
            Method::Aes128Gcm | Method::Blake3Aes128Gcm => CipherKind::Aes128Gcm,
            Method::Aes256Gcm | Method::Blake3Aes256Gcm => CipherKind::Aes256Gcm,
            Method::Chacha20IetfPoly1305 | Method::Blake3Chacha20Poly1305 => {
                CipherKind::ChaCha20Poly1305
            }
        }
    }

    /// Bytes of the key, and of every salt (both editions use salts as
    /// long as the key).
    pub(super) fn key_len(self) -> usize {
        match self.cipher() {
            CipherKind::Aes128Gcm => 16,
            CipherKind::Aes256Gcm | CipherKind::ChaCha20Poly1305 => 32,
        }
    }

    /// The longest payload of one TCP chunk: SIP004 keeps the two top bits
    /// of the length; SIP022 lifts the cap.
    pub(super) fn max_chunk(self) -> usize {
        if self.is_2022() {
            0xFFFF
        } else {
            0x3FFF
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = ShadowsocksError;

    fn from_str(name: &str) -> Result<Method, ShadowsocksError> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| ShadowsocksError::UnknownMethod(name.to_owned()))
    }
}

/// A node's method and key, ready to derive session keys. `Debug` shows
/// the method only.
pub struct Key {
    method: Method,
    bytes: [u8; MAX_KEY_LEN],
    /// 2022 UDP: what protects the session and packet IDs.
    udp_header: Option<UdpHeaderCipher>,
}

impl Key {
    /// The key for `method`: a classic method stretches `password`
    /// (OpenSSL's `EVP_BytesToKey` with MD5, as every implementation does);
    /// a 2022 method takes it as the base64 of exactly the key's bytes.
    pub fn new(method: Method, password: &str) -> Result<Key, ShadowsocksError> {
        let len = method.key_len();
        let mut bytes = [0u8; MAX_KEY_LEN];
        if method.is_2022() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(password.trim())
                .map_err(|_| {
                    ShadowsocksError::BadKey(format!(
                        "{method} takes a base64 key of {len} bytes (`openssl rand -base64 {len}`), and this one is not base64"
                    ))
                })?;
            if decoded.len() != len {
                return Err(ShadowsocksError::BadKey(format!(
                    "{method} takes a base64 key of {len} bytes (`openssl rand -base64 {len}`), not {}",
                    decoded.len()
                )));
            }
            bytes[..len].copy_from_slice(&decoded);
        } else {
            if password.is_empty() {
                return Err(ShadowsocksError::BadKey(format!(
                    "{method} needs a password, and it is empty"
                )));
            }
            evp_bytes_to_key(password.as_bytes(), &mut bytes[..len]);
        }
        let udp_header = UdpHeaderCipher::for_method(method, &bytes[..len])?;
        Ok(Key {
            method,
            bytes,
            udp_header,
        })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The key's bytes (the PSK of a 2022 method).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.method.key_len()]
    }

    pub(super) fn udp_header(&self) -> Option<&UdpHeaderCipher> {
        self.udp_header.as_ref()
    }

    /// The cipher of one session (a TCP stream's direction, a classic
    /// datagram, a 2022 UDP session), keyed by a subkey derived from the
    /// key and `salt`: HKDF-SHA1 with info "ss-subkey" (SIP004), or
    /// BLAKE3's key derivation (SIP022 section 2.2).
    pub(super) fn session(&self, salt: &[u8]) -> Result<Aead, ShadowsocksError> {
        let len = self.method.key_len();
        let mut subkey = [0u8; MAX_KEY_LEN];
        if self.method.is_2022() {
            let mut material = [0u8; 2 * MAX_KEY_LEN];
            material[..len].copy_from_slice(self.bytes());
            material[len..len + salt.len()].copy_from_slice(salt);
            let derived = blake3::derive_key(
                "shadowsocks 2022 session subkey",
                &material[..len + salt.len()],
            );
            subkey[..len].copy_from_slice(&derived[..len]);
        } else {
            hkdf::Hkdf::<sha1::Sha1>::new(Some(salt), self.bytes())
                .expand(b"ss-subkey", &mut subkey[..len])
                .map_err(|_| ShadowsocksError::BadKey("cannot derive a subkey".into()))?;
        }
        Aead::new(self.method.cipher(), &subkey[..len])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("method", &self.method)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// OpenSSL's `EVP_BytesToKey` with MD5, one round and no salt: MD5 of the
/// password, then MD5 of the previous digest and the password, until
/// `out` is full.
fn evp_bytes_to_key(password: &[u8], out: &mut [u8]) {
    let mut filled = 0;
    let mut previous: Option<[u8; 16]> = None;
    while filled < out.len() {
        let mut md5 = Md5::new();
        if let Some(previous) = previous {
            md5.update(previous);
        }
        md5.update(password);
        let digest: [u8; 16] = md5.finalize().into();
        let take = digest.len().min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&digest[..take]);
        filled += take;
        previous = Some(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for method in Method::ALL {
            assert_eq!(method.name().parse::<Method>(), Ok(method));
            assert_eq!(method.to_string(), method.name());
            assert_eq!(method.is_2022(), method.name().starts_with("2022-"));
        }
        assert_eq!(
            "rc4-md5".parse::<Method>(),
            Err(ShadowsocksError::UnknownMethod("rc4-md5".into()))
        );
    }

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -md md5 -nosalt -k foobar -P` prints
        // this key.
        let mut key = [0u8; 32];
        evp_bytes_to_key(b"foobar", &mut key);
        let hex = "3858f62230ac3c915f300c664312c63f568378529614d22ddb49237d2f60bfdf";
        let expected: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(key[..], expected[..]);
        let mut short = [0u8; 16];
        evp_bytes_to_key(b"foobar", &mut short);
        assert_eq!(short, key[..16]);
    }

    #[test]
    fn a_2022_key_is_base64_of_the_key_length() {
        let psk16 = "AAECAwQFBgcICQoLDA0ODw==";
        let key = Key::new(Method::Blake3Aes128Gcm, psk16).unwrap();
        assert_eq!(key.bytes(), (0u8..16).collect::<Vec<_>>());
        for (method, password) in [
            (Method::Blake3Aes256Gcm, psk16),
            (Method::Blake3Aes128Gcm, "not base64 at all!"),
            (Method::Blake3Chacha20Poly1305, ""),
        ] {
            let Err(ShadowsocksError::BadKey(text)) = Key::new(method, password) else {
                panic!("{method} accepted {password:?}");
            };
            assert!(password.is_empty() || !text.contains(password), "{text}");
        }
        assert!(matches!(
            Key::new(Method::Aes128Gcm, ""),
            Err(ShadowsocksError::BadKey(_))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let key = Key::new(Method::Aes256Gcm, "s3cret").unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("Aes256Gcm") && !shown.contains("s3cret"));
    }
}
