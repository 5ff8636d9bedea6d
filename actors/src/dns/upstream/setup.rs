//! What an upstream's configured transport asks its actor for: the UDP
//! servers it queries and the stream targets (TCP, TLS, HTTPS) its
//! connections go to, with TLS settings and a `system` upstream's
//! resolv.conf read once per incarnation. Opening anything is not done
//! here: that is the UDP sessions' and the connection pool's job.

use std::net::SocketAddr;
use std::path::Path;

use super::conn::StreamTarget;
use super::failure::UpstreamFailure;
use super::pool::Streams;
use super::tls;
use crate::dns::settings::{resolv_conf_servers, Transport};

/// The UDP servers and the stream setup of a transport.
pub(super) fn transports(
    transport: &Transport,
) -> Result<(Vec<SocketAddr>, Streams), UpstreamFailure> {
    Ok(match transport {
        Transport::Udp(addr) => (vec![*addr], Streams::None),
        Transport::Tcp(addr) => (vec![], Streams::Dns(vec![StreamTarget::Tcp(*addr)])),
        Transport::TcpUdp(addr) => (vec![*addr], Streams::Dns(vec![StreamTarget::Tcp(*addr)])),
        Transport::System(path) => {
            let servers = read_resolv_conf(path)?;
            let streams = servers.iter().map(|a| StreamTarget::Tcp(*a)).collect();
            (servers, Streams::Dns(streams))
        }
        Transport::Tls(target) => {
            let config = tls::client_config(target.ca_file.as_deref(), &[])?;
            let target = StreamTarget::Tls {
                addr: target.addr,
                name: tls::server_name(&target.server_name)?,
                config,
            };
            (vec![], Streams::Dns(vec![target]))
        }
        Transport::Https(https) => {
            let config = tls::client_config(https.tls.ca_file.as_deref(), &[b"h2"])?;
            let target = StreamTarget::Tls {
                addr: https.tls.addr,
                name: tls::server_name(&https.tls.server_name)?,
                config,
            };
            let uri = format!("https://{}{}", https.authority, https.path).into();
            (vec![], Streams::Https { target, uri })
        }
    })
}

/// The nameservers of a resolv.conf (port 53).
pub(super) fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, UpstreamFailure> {
    let text = std::fs::read_to_string(path).map_err(|source| UpstreamFailure::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    let servers = resolv_conf_servers(&text);
    if servers.is_empty() {
        return Err(UpstreamFailure::NoNameservers {
            path: path.to_path_buf(),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let dir = std::env::temp_dir().join(format!("ward-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# x\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%lo\nnameserver fe80::2%nonexistent0\noptions edns0\n",
        )
        .unwrap();
        let servers = read_resolv_conf(&path).unwrap();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let link_local = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, lo);
        assert_eq!(
            servers,
            vec!["127.0.0.53:53".parse().unwrap(), link_local.into()]
        );
        std::fs::write(&path, "search lan\n").unwrap();
        assert!(matches!(
            read_resolv_conf(&path),
            Err(UpstreamFailure::NoNameservers { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
