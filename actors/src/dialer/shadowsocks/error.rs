//! Why a Shadowsocks exchange failed ([`ShadowsocksError`]), and how a
//! failure reaches the reader of a [`super::ShadowsocksStream`]: as an
//! `io::Error` whose inner error is the [`ShadowsocksError`], so callers
//! classify it without parsing text. The messages are for users: they say
//! what most likely went wrong, never a key.

use std::io;

use crate::io_class::IoClass;

/// Why a Shadowsocks request, reply or datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShadowsocksError {
    /// A method name ward does not speak.
    #[error("unknown Shadowsocks method {0:?} (known: aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, 2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305)")]
    UnknownMethod(String),
    /// A password or key unusable with its method (the text never holds
    /// the key).
    #[error("bad Shadowsocks key: {0}")]
    BadKey(String),
    /// Authentication failed: the node's key or method differs from ours,
    /// or the bytes were damaged or forged.
    #[error("a reply did not decrypt: the password or method does not match the node's")]
    Tag,
    /// The node closed the connection, or sent a datagram that ended, in
    /// the middle of a frame.
    #[error("the Shadowsocks node's reply was cut short")]
    Truncated,
    /// A chunk longer than its edition allows.
    #[error("the Shadowsocks node sent a chunk of {0} bytes, longer than the protocol allows")]
    TooLong(usize),
    /// A reply that decrypted but whose header is wrong.
    #[error("the Shadowsocks node's reply has a bad header: {0}")]
    BadHeader(&'static str),
    /// A 2022 reply whose timestamp is more than 30 s away from our clock.
    #[error(
        "the Shadowsocks node's reply is more than 30 s away from our clock (check both clocks)"
    )]
    Stale,
    /// A 2022 datagram already received, or too old for the replay window.
    #[error("a Shadowsocks datagram was received twice (replayed) or too late")]
    Replay,
    /// A 2022 reply for another client session, or from a server session
    /// beyond the ones this client session accepts.
    #[error("a Shadowsocks reply belongs to another session")]
    WrongSession,
    /// A target address that cannot be encoded: a domain name empty or
    /// over 255 bytes. (A reply's unreadable address is a `BadHeader`.)
    #[error("the target address cannot be sent through Shadowsocks (a domain name must be 1 to 255 bytes long)")]
    Address,
}

impl ShadowsocksError {
    /// True for a 2022 reply refused by its timestamp or the replay window:
    /// a clock gap or a duplicate, not a wrong key.
    pub fn is_replay_or_stale(&self) -> bool {
        matches!(self, ShadowsocksError::Replay | ShadowsocksError::Stale)
    }

    /// What the error means for the path through this node: every refusal
    /// of the node's bytes blames the path (a node with another key, a
    /// damaged or forged reply, a clock far off); a target address we could
    /// not encode is the request's fault, not the path's.
    pub fn class(&self) -> IoClass {
        match self {
            ShadowsocksError::Address => IoClass::Normal,
            _ => IoClass::PathFailed,
        }
    }

    /// The `io::Error` a stream reports: `UnexpectedEof` for a reply cut
    /// short, `InvalidData` for everything else.
    pub(super) fn into_io(self) -> io::Error {
        let kind = match self {
            ShadowsocksError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// The [`ShadowsocksError`] inside an `io::Error` from a
    /// [`super::ShadowsocksStream`], if it holds one.
    pub fn from_io(err: &io::Error) -> Option<&ShadowsocksError> {
        err.get_ref()?.downcast_ref::<ShadowsocksError>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_carry_the_shadowsocks_error() {
        let err = ShadowsocksError::Tag.into_io();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            ShadowsocksError::from_io(&err),
            Some(&ShadowsocksError::Tag)
        );
        let err = ShadowsocksError::Truncated.into_io();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            ShadowsocksError::from_io(&err),
            Some(&ShadowsocksError::Truncated)
        );
        assert_eq!(ShadowsocksError::from_io(&io::Error::other("x")), None);
    }

    #[test]
    fn replay_and_stale_are_told_apart() {
        assert!(ShadowsocksError::Replay.is_replay_or_stale());
        assert!(ShadowsocksError::Stale.is_replay_or_stale());
        assert!(!ShadowsocksError::Tag.is_replay_or_stale());
        assert_eq!(ShadowsocksError::Tag.class(), IoClass::PathFailed);
        assert_eq!(ShadowsocksError::Address.class(), IoClass::Normal);
    }
}
