//! The TLS client settings of a Trojan node: which certificates it
//! trusts (the system's roots, the bundled web PKI roots when the system
//! has none, or only a private CA), or none at all when verification is
//! skipped. Handshake signatures are checked in every case: skipping
//! verification trusts any certificate, not any handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::TrojanError;

/// What trojan-gfw's own client offers: a node looks like an HTTPS server,
/// and its fallback may route on the protocol.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A client config trusting the roots `ca` and `skip_verify` select: with
/// `skip_verify` any certificate (`ca` is then not read); with `ca` the
/// certificates of that PEM file only; otherwise the system's roots.
pub(super) fn client_config(
    ca: Option<&Path>,
    skip_verify: bool,
) -> Result<Arc<ClientConfig>, TrojanError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrojanError::Setup(e.to_string()))?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let roots = match ca {
            Some(path) => private_ca(path)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The certificates of the PEM file at `path`; at least one.
fn private_ca(path: &Path) -> Result<RootCertStore, TrojanError> {
    let fail = |reason: String| TrojanError::Ca(format!("{}: {reason}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("it holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// The system's trust store; the bundled web PKI roots when it yields no
/// usable certificate (a minimal router image often ships none).
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added > 0 {
        return roots;
    }
    tracing::debug!(
        ignored,
        errors = found.errors.len(),
        "no usable system CA certificates; trusting the bundled web PKI roots"
    );
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Accepts any certificate chain for any name, and still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_ca_error() {
        let dir = std::env::temp_dir().join(format!("ward-trojan-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        for path in [dir.join("missing.pem"), empty] {
            let err = client_config(Some(&path), false).unwrap_err();
            assert!(matches!(err, TrojanError::Ca(_)), "{err:?}");
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn skipping_verification_does_not_read_the_ca() {
        let config = client_config(Some(Path::new("/nonexistent/ca.pem")), true).unwrap();
        assert_eq!(config.alpn_protocols.len(), ALPN.len());
    }

    #[test]
    fn without_a_ca_some_roots_are_trusted() {
        assert!(!system_roots().is_empty());
        client_config(None, false).unwrap();
    }
}
