//! A private CA and a server certificate signed by it, made with rcgen for
//! the TLS peers of the tests (unbound's DoT and DoH, a Trojan node): PEM
//! files in a directory of the test's, the CA for ward's `ca_file` / `ca`.
//! Not a PKI: no chain beyond one CA, no revocation.

use std::path::{Path, PathBuf};

/// The PEM files [`certificates`] wrote.
pub struct Certificates {
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes a CA and a certificate for `names` (DNS names or IP addresses,
/// the first also its common name) into `dir`: `ca.pem`, `server.pem` and
/// `server.key`.
pub fn certificates(dir: &Path, names: &[&str]) -> Certificates {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ward test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].as_str());
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let written = Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&written.ca, ca.pem()).unwrap();
    std::fs::write(&written.cert, cert.pem()).unwrap();
    std::fs::write(&written.key, key.serialize_pem()).unwrap();
    written
}
