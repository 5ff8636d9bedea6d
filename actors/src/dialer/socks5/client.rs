//! The client side of SOCKS5 (RFC 1928) with username/password
//! authentication (RFC 1929): CONNECT tunnels and UDP ASSOCIATE, and
//! watching an association's control connection for its end.
//!
//! The functions run on a stream the caller has already connected to the
//! proxy and set no deadlines of their own: callers wrap them in theirs.
//! Every message is built in one buffer and sent with one write, and replies
//! are read exactly, so nothing of the tunnelled stream is consumed.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::error::Socks5Error;
use super::wire::{
    field_len, put_addr, read_addr, read_exact, Credentials, ReplyCode, TargetAddr, AUTH_VERSION,
    CMD_CONNECT, CMD_UDP_ASSOCIATE, MAX_ADDR_LEN, METHOD_NONE, METHOD_USER_PASS, REPLY_SUCCEEDED,
    VERSION,
};

/// An established UDP association.
#[derive(Debug)]
pub struct UdpAssociation {
    /// The control connection: the association lives as long as it is open.
    pub control: TcpStream,
    /// Where datagrams (with the UDP request header) go.
    pub relay: SocketAddr,
}

/// Runs the SOCKS5 handshake and a CONNECT on `stream` (already connected to
/// the proxy). Returns the stream, ready to carry the tunnelled bytes, and
/// the BND address the proxy reported.
pub async fn connect(
    mut stream: TcpStream,
    credentials: Option<&Credentials>,
    target: &TargetAddr,
) -> Result<(TcpStream, TargetAddr), Socks5Error> {
    command(CMD_CONNECT, target)?;
    negotiate(&mut stream, credentials).await?;
    request_connect(stream, target).await
}

/// The first half of [`connect`]: method negotiation and authentication,
/// which only the node takes part in.
pub async fn negotiate(
    stream: &mut TcpStream,
    credentials: Option<&Credentials>,
) -> Result<(), Socks5Error> {
    handshake(stream, credentials).await
}

/// The second half of [`connect`], on a negotiated stream: the CONNECT
/// request, whose reply waits on the destination.
pub async fn request_connect(
    mut stream: TcpStream,
    target: &TargetAddr,
) -> Result<(TcpStream, TargetAddr), Socks5Error> {
    let request = command(CMD_CONNECT, target)?;
    stream.write_all(&request).await?;
    let bound = read_reply(&mut stream).await?;
    Ok((stream, bound))
}

/// Runs the handshake and a UDP ASSOCIATE on `control` (connected to the
/// proxy). `client` is the address datagrams will come from (`0.0.0.0:0`
/// or `[::]:0` when unknown). An unspecified BND address in the reply means the
/// proxy's own address, with the reply's port.
pub async fn udp_associate(
    mut control: TcpStream,
    credentials: Option<&Credentials>,
    client: SocketAddr,
) -> Result<UdpAssociation, Socks5Error> {
    let request = command(CMD_UDP_ASSOCIATE, &TargetAddr::Ip(client))?;
    handshake(&mut control, credentials).await?;
    control.write_all(&request).await?;
    let relay = match read_reply(&mut control).await? {
        TargetAddr::Ip(addr) => addr,
        bound @ TargetAddr::Domain(..) => {
            return Err(Socks5Error::Protocol(format!(
                "UDP relay given as a domain name ({bound})"
            )))
        }
    };
    if relay.port() == 0 {
        return Err(Socks5Error::Protocol("UDP relay on port 0".into()));
    }
    let relay = if relay.ip().is_unspecified() {
        SocketAddr::new(control.peer_addr()?.ip(), relay.port())
    } else {
        relay
    };
    Ok(UdpAssociation { control, relay })
}

/// Waits until the proxy closes the association's control connection,
/// reading and discarding anything it sends. Returns the error that closed
/// it, or None on EOF. Cancel-safe.
pub async fn control_closed(control: &mut TcpStream) -> Option<io::Error> {
    loop {
        if let Err(err) = control.readable().await {
            return Some(err);
        }
        // The buffer lives only between wake-ups: a watching flow keeps
        // none.
        let mut sink = [0u8; 256];
        match control.try_read(&mut sink) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => return Some(err),
        }
    }
}

/// Method negotiation and, when the proxy picks it, RFC 1929 authentication.
async fn handshake(
    stream: &mut TcpStream,
    credentials: Option<&Credentials>,
) -> Result<(), Socks5Error> {
    // Validated before anything is sent.
    let auth = credentials.map(auth_request).transpose()?;
    let greeting: &[u8] = if auth.is_some() {
        &[VERSION, 2, METHOD_NONE, METHOD_USER_PASS]
    } else {
        &[VERSION, 1, METHOD_NONE]
    };
    stream.write_all(greeting).await?;

    let mut selection = [0u8; 2];
    read_exact(stream, &mut selection).await?;
    let [version, method] = selection;
    if version != VERSION {
        return Err(Socks5Error::Protocol(format!(
            "method selection with version {version}"
        )));
    }
    match (method, auth) {
        (METHOD_NONE, _) => Ok(()),
        (METHOD_USER_PASS, Some(request)) => {
            stream.write_all(&request).await?;
            let mut status = [0u8; 2];
            read_exact(stream, &mut status).await?;
            match status {
                [AUTH_VERSION, 0] => Ok(()),
                [AUTH_VERSION, _] => Err(Socks5Error::AuthRejected),
                [version, _] => Err(Socks5Error::Protocol(format!(
                    "authentication status with version {version}"
                ))),
            }
        }
        // 0xFF (none acceptable), or a method we did not offer.
        _ => Err(Socks5Error::NoAcceptableMethod),
    }
}

/// The RFC 1929 username/password request.
fn auth_request(credentials: &Credentials) -> Result<Vec<u8>, Socks5Error> {
    let username = credentials.username.as_bytes();
    let password = credentials.password.as_bytes();
    let mut request = Vec::with_capacity(3 + username.len() + password.len());
    request.push(AUTH_VERSION);
    request.push(field_len("username", username)?);
    request.extend_from_slice(username);
    request.push(field_len("password", password)?);
    request.extend_from_slice(password);
    Ok(request)
}

/// A request (VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT) in one buffer.
fn command(cmd: u8, target: &TargetAddr) -> Result<Vec<u8>, Socks5Error> {
    let mut request = Vec::with_capacity(3 + MAX_ADDR_LEN);
    request.extend_from_slice(&[VERSION, cmd, 0]);
    put_addr(target, &mut request)?;
    Ok(request)
}

/// Reads a reply (VER, REP, RSV, ATYP, BND.ADDR, BND.PORT), exactly.
async fn read_reply(stream: &mut TcpStream) -> Result<TargetAddr, Socks5Error> {
    let mut head = [0u8; 4];
    read_exact(stream, &mut head).await?;
    let [version, reply, _, atyp] = head;
    if version != VERSION {
        return Err(Socks5Error::Protocol(format!(
            "reply with version {version}"
        )));
    }
    if reply != REPLY_SUCCEEDED {
        return Err(Socks5Error::Reply(ReplyCode::from(reply)));
    }
    read_addr(stream, atyp).await
}
