//! Why a SOCKS5 exchange failed ([`Socks5Error`]), and what that means for
//! the path through the proxy ([`IoClass`]): the one error type of the
//! client and the server side.

use std::io;

use super::wire::ReplyCode;
use crate::io_class::{classify_io_error, IoClass, IoSide};

/// Why a SOCKS5 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// I/O with the proxy failed during the handshake (connect already done
    /// by the caller).
    #[error("I/O error during the SOCKS5 handshake: {0}")]
    Io(#[from] io::Error),
    /// The proxy closed the connection mid-handshake.
    #[error("the SOCKS5 proxy closed the connection during the handshake")]
    Closed,
    /// The proxy accepted none of our methods (0xFF), or picked one we did
    /// not offer.
    #[error("the SOCKS5 proxy accepted none of the offered authentication methods")]
    NoAcceptableMethod,
    /// RFC 1929 status != 0.
    #[error("the SOCKS5 proxy rejected the username/password")]
    AuthRejected,
    /// The proxy's reply code.
    #[error("the SOCKS5 proxy replied: {0}")]
    Reply(ReplyCode),
    /// Bytes that are not SOCKS5 (wrong version, bad address type, ...), or
    /// a request that cannot be encoded.
    #[error("SOCKS5 protocol error: {0}")]
    Protocol(String),
}

impl Socks5Error {
    /// What the error means for the path through this proxy: I/O errors are
    /// classified as a dial; a destination that refused (the node itself
    /// works) is `PeerGone`; everything else blames the path.
    pub fn class(&self) -> IoClass {
        match self {
            Socks5Error::Io(err) => classify_io_error(err, IoSide::Dial),
            Socks5Error::Reply(ReplyCode::ConnectionRefused) => IoClass::PeerGone,
            Socks5Error::Closed
            | Socks5Error::NoAcceptableMethod
            | Socks5Error::AuthRejected
            | Socks5Error::Reply(_)
            | Socks5Error::Protocol(_) => IoClass::PathFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_of_every_error() {
        let refused = || io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let cases = [
            (Socks5Error::Io(refused()), IoClass::PathFailed),
            (
                Socks5Error::Io(io::Error::from_raw_os_error(libc::EAGAIN)),
                IoClass::Transient,
            ),
            (Socks5Error::Closed, IoClass::PathFailed),
            (Socks5Error::NoAcceptableMethod, IoClass::PathFailed),
            (Socks5Error::AuthRejected, IoClass::PathFailed),
            (Socks5Error::Protocol("x".into()), IoClass::PathFailed),
            (
                Socks5Error::Reply(ReplyCode::ConnectionRefused),
                IoClass::PeerGone,
            ),
        ];
        for (err, class) in cases {
            assert_eq!(err.class(), class, "{err:?}");
        }
        for code in (1..=u8::MAX).map(ReplyCode::from) {
            let expected = if code == ReplyCode::ConnectionRefused {
                IoClass::PeerGone
            } else {
                IoClass::PathFailed
            };
            assert_eq!(Socks5Error::Reply(code).class(), expected, "{code:?}");
        }
    }
}
