//! One Trojan node as a client sees it ([`TrojanNode`]): its TLS settings,
//! the name its certificate must carry and the hash of its password, made
//! once from the config. It opens TLS over a TCP stream the caller has
//! connected and sends the request; Trojan has no reply, so the stream is
//! ready for payload as soon as the request is on its way.

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use sha2::{Digest, Sha224};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::TrojanError;
use super::tls::client_config;
use crate::dialer::socks5::{put_addr, Socks5Error, TargetAddr};

const CMD_CONNECT: u8 = 0x01;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const CRLF: &[u8] = b"\r\n";
/// hex(SHA-224): 28 bytes, two digits each.
const HASH_LEN: usize = 56;

/// A Trojan node: everything needed to open tunnels through it, built
/// once. `Debug` shows neither the password nor its hash (the hash is as
/// good as the password to the node).
pub struct TrojanNode {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    password_hash: [u8; HASH_LEN],
}

impl fmt::Debug for TrojanNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrojanNode")
            .field("server_name", &self.server_name)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TrojanNode {
    /// A node at `server` (`host:port`, `[v6]:port`) with `password`. The
    /// certificate must carry `sni`, or else the server's host (a name or
    /// an IP address). `ca` is a PEM file of a private CA trusted instead
    /// of the system's roots; `skip_verify` trusts any certificate.
    pub fn new(
        server: &str,
        password: &str,
        sni: Option<&str>,
        ca: Option<&Path>,
        skip_verify: bool,
    ) -> Result<TrojanNode, TrojanError> {
        let name = match sni {
            Some(sni) => sni,
            None => server_host(server)?,
        };
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            TrojanError::ServerName(format!("{name:?} is neither a DNS name nor an IP address"))
        })?;
        Ok(TrojanNode {
            config: client_config(ca, skip_verify)?,
            server_name,
            password_hash: password_hash(password),
        })
    }

    /// TLS over `tcp`, then a CONNECT to `target`. The request is queued
    /// before the handshake starts and leaves with the client's last
    /// handshake flight; nothing is read after the handshake.
    pub async fn connect<S>(&self, tcp: S, target: &TargetAddr) -> Result<TlsStream<S>, TrojanError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = self.request(CMD_CONNECT, target)?;
        self.open(tcp, &request).await
    }

    /// TLS over `tcp`, then a UDP ASSOCIATE; datagrams then travel both
    /// ways as frames ([`super::encode_udp`], [`super::decode_udp`]).
    pub async fn udp_associate<S>(&self, tcp: S) -> Result<TlsStream<S>, TrojanError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The address is not used: each frame names its destination.
        let unspecified = TargetAddr::Ip(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let request = self.request(CMD_UDP_ASSOCIATE, &unspecified)?;
        self.open(tcp, &request).await
    }

    /// The request: hash CRLF CMD address CRLF.
    fn request(&self, cmd: u8, target: &TargetAddr) -> Result<Vec<u8>, TrojanError> {
        let mut out = Vec::with_capacity(HASH_LEN + 2 + 1 + 259 + 2);
        out.extend_from_slice(&self.password_hash);
        out.extend_from_slice(CRLF);
        out.push(cmd);
        put_addr(target, &mut out).map_err(|err| {
            let reason = match err {
                Socks5Error::Protocol(reason) => reason,
                other => other.to_string(),
            };
            TrojanError::Target(format!("{target}: {reason}"))
        })?;
        out.extend_from_slice(CRLF);
        Ok(out)
    }

    /// The handshake with `request` queued in rustls's plaintext buffer:
    /// it is encrypted and sent as soon as the handshake completes.
    async fn open<S>(&self, tcp: S, request: &[u8]) -> Result<TlsStream<S>, TrojanError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = TlsConnector::from(self.config.clone());
        let mut queued = Ok(());
        let handshake = connector.connect_with(self.server_name.clone(), tcp, |conn| {
            queued = conn.writer().write_all(request);
        });
        let mut stream = handshake.await.map_err(TrojanError::from_handshake)?;
        queued?;
        // The handshake flushed on completion; this only covers a write
        // the socket took in part.
        stream.flush().await?;
        Ok(stream)
    }
}

/// The host of `server`, without the brackets of an IPv6 address.
fn server_host(server: &str) -> Result<&str, TrojanError> {
    let bad = || TrojanError::ServerName(format!("the server {server:?} is not host:port"));
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

/// hex(SHA-224(password)), in lower case as the node compares it.
fn password_hash(password: &str) -> [u8; HASH_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha224::digest(password.as_bytes());
    let mut out = [0u8; HASH_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0F)];
    }
    out
}

#[cfg(test)]
mod tests;
