//! Why a Trojan exchange failed ([`TrojanError`]), said so that a user can
//! act on it, and what that means for the path through the node. No text
//! here ever carries the password or its hash.

use std::io;

use rustls::CertificateError;

use crate::io_class::{classify_io_error, IoClass, IoSide};

/// Why building a node, reaching it or reading its frames failed.
#[derive(Debug, thiserror::Error)]
pub enum TrojanError {
    /// The private CA file cannot be read or holds no certificate.
    #[error("cannot use the CA file {0}")]
    Ca(String),
    /// The server or `sni` is no name a certificate can be checked against.
    #[error("no TLS server name: {0}")]
    ServerName(String),
    /// rustls refused the client settings.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// The TLS handshake with the node failed (its certificate did not
    /// verify, it sent an alert, it spoke no TLS).
    #[error("TLS with the Trojan node failed: {0}")]
    Tls(String),
    /// I/O with the node failed while the connection was being set up.
    #[error("I/O with the Trojan node failed: {0}")]
    Io(#[from] io::Error),
    /// The destination cannot be written in a request.
    #[error("cannot ask the Trojan node for {0}")]
    Target(String),
    /// Bytes from the node that are not a UDP frame.
    #[error("the Trojan node sent a malformed UDP frame: {0}")]
    Frame(&'static str),
}

impl TrojanError {
    /// A handshake's error: rustls errors (tokio-rustls wraps them in an
    /// `io::Error`) are [`TrojanError::Tls`], the rest I/O.
    pub(super) fn from_handshake(err: io::Error) -> TrojanError {
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => TrojanError::Tls(describe_tls(tls)),
            None => TrojanError::Io(err),
        }
    }

    /// What the error means for the path through this node: I/O errors
    /// are classified as a dial; a destination that cannot be asked for
    /// says nothing about the path (`Normal`); everything else, settings
    /// included, means the path cannot work.
    pub fn io_class(&self) -> IoClass {
        match self {
            TrojanError::Io(err) => classify_io_error(err, IoSide::Dial),
            TrojanError::Target(_) => IoClass::Normal,
            TrojanError::Ca(_)
            | TrojanError::ServerName(_)
            | TrojanError::Setup(_)
            | TrojanError::Tls(_)
            | TrojanError::Frame(_) => IoClass::PathFailed,
        }
    }

    /// A short stable label for metrics and logs: `config` for settings
    /// that cannot work, `bad_target` for a destination that cannot be
    /// asked for, otherwise the label of [`Self::io_class`].
    pub fn class(&self) -> &'static str {
        match self {
            TrojanError::Ca(_) | TrojanError::ServerName(_) | TrojanError::Setup(_) => "config",
            TrojanError::Target(_) => "bad_target",
            other => other.io_class().label(),
        }
    }
}

/// A rustls error as a user reads it: certificate failures say so first.
fn describe_tls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            format!(
                "the node's certificate did not verify: {}",
                describe_certificate(cert)
            )
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the node refused the handshake (alert {alert:?})")
        }
        other => other.to_string(),
    }
}

fn describe_certificate(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => {
            "it is not signed by a trusted CA (give the node's CA file for a private CA)".into()
        }
        CertificateError::BadSignature => "its signature is invalid".into(),
        CertificateError::Revoked => "it is revoked".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_from_rustls_are_tls_errors() {
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let err = TrojanError::from_handshake(wrapped);
        assert!(matches!(err, TrojanError::Tls(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("certificate did not verify"), "{text}");
        assert!(text.contains("trusted CA"), "{text}");

        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert!(matches!(
            TrojanError::from_handshake(reset),
            TrojanError::Io(_)
        ));
    }

    #[test]
    fn class_of_every_error() {
        let cases = [
            (TrojanError::Ca("x".into()), "config"),
            (TrojanError::ServerName("x".into()), "config"),
            (TrojanError::Setup("x".into()), "config"),
            (TrojanError::Tls("x".into()), "path_failed"),
            (TrojanError::Frame("x"), "path_failed"),
            (TrojanError::Target("x".into()), "bad_target"),
            (
                TrojanError::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
                "path_failed",
            ),
            (
                TrojanError::Io(io::Error::from_raw_os_error(libc::EAGAIN)),
                "transient",
            ),
        ];
        for (err, class) in cases {
            assert_eq!(err.class(), class, "{err:?}");
        }
        assert_eq!(TrojanError::Target("x".into()).io_class(), IoClass::Normal);
    }
}
