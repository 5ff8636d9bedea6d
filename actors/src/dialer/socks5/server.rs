//! The server side of SOCKS5, as the SOCKS5 inbound serves its clients:
//! method negotiation (requiring RFC 1929 authentication when configured),
//! reading the request, and the reply. What follows the reply (a UDP
//! relay, a refusal) is the inbound's business.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::error::Socks5Error;
use super::wire::{
    put_socket_addr, read_addr, read_exact, Credentials, ReplyCode, TargetAddr, AUTH_VERSION,
    CMD_CONNECT, CMD_UDP_ASSOCIATE, METHOD_NONE, METHOD_UNACCEPTABLE, METHOD_USER_PASS,
    REPLY_SUCCEEDED, VERSION,
};

/// What a client asked a SOCKS5 server for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    /// UDP ASSOCIATE; the address is where the client will send from
    /// (often unspecified).
    UdpAssociate,
    Other(u8),
}

/// Server side: negotiates a method with a client (requiring RFC 1929
/// authentication when `credentials` are set) and reads its request.
/// Refusals are answered before the error is returned.
pub async fn accept(
    stream: &mut TcpStream,
    credentials: Option<&Credentials>,
) -> Result<(Command, TargetAddr), Socks5Error> {
    let mut head = [0u8; 2];
    read_exact(stream, &mut head).await?;
    if head[0] != VERSION {
        return Err(Socks5Error::Protocol(format!(
            "greeting with version {}",
            head[0]
        )));
    }
    let mut methods = [0u8; 255];
    let methods = &mut methods[..usize::from(head[1])];
    read_exact(stream, methods).await?;
    let wanted = if credentials.is_some() {
        METHOD_USER_PASS
    } else {
        METHOD_NONE
    };
    if !methods.contains(&wanted) {
        stream.write_all(&[VERSION, METHOD_UNACCEPTABLE]).await?;
        return Err(Socks5Error::NoAcceptableMethod);
    }
    stream.write_all(&[VERSION, wanted]).await?;
    if let Some(credentials) = credentials {
        let mut version_len = [0u8; 2];
        read_exact(stream, &mut version_len).await?;
        let mut username = vec![0u8; usize::from(version_len[1])];
        read_exact(stream, &mut username).await?;
        let mut len = [0u8; 1];
        read_exact(stream, &mut len).await?;
        let mut password = vec![0u8; usize::from(len[0])];
        read_exact(stream, &mut password).await?;
        let ok = version_len[0] == AUTH_VERSION
            && username == credentials.username.as_bytes()
            && password == credentials.password.as_bytes();
        stream.write_all(&[AUTH_VERSION, u8::from(!ok)]).await?;
        if !ok {
            return Err(Socks5Error::AuthRejected);
        }
    }
    let mut request = [0u8; 4];
    read_exact(stream, &mut request).await?;
    if request[0] != VERSION {
        return Err(Socks5Error::Protocol(format!(
            "request with version {}",
            request[0]
        )));
    }
    let target = read_addr(stream, request[3]).await?;
    let command = match request[1] {
        CMD_CONNECT => Command::Connect,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        other => Command::Other(other),
    };
    Ok((command, target))
}

/// Server side: the reply to a request, success with the bound address, or
/// a refusal.
pub async fn reply(
    stream: &mut TcpStream,
    outcome: Result<SocketAddr, ReplyCode>,
) -> std::io::Result<()> {
    let (code, bound) = match outcome {
        Ok(bound) => (REPLY_SUCCEEDED, bound),
        Err(code) => (u8::from(code), SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    let mut out = vec![VERSION, code, 0];
    put_socket_addr(bound, &mut out);
    stream.write_all(&out).await
}
