//! SOCKS5 client (RFC 1928) with username/password authentication
//! (RFC 1929): CONNECT tunnels, UDP ASSOCIATE and the UDP request header.
//!
//! The functions run on a stream the caller has already connected to the
//! proxy and set no deadlines of their own: callers wrap them in theirs.
//! Every message is built in one buffer and sent with one write, and replies
//! are read exactly, so nothing of the tunnelled stream is consumed.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::io_class::{classify_io_error, IoClass, IoSide};

const VERSION: u8 = 0x05;
const AUTH_VERSION: u8 = 0x01;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const CMD_CONNECT: u8 = 0x01;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
const REPLY_SUCCEEDED: u8 = 0x00;
/// The longest encoded address: ATYP, length, 255 bytes of name, port.
const MAX_ADDR_LEN: usize = 1 + 1 + 255 + 2;

/// Username/password (RFC 1929); None means "no authentication" only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where a SOCKS5 request goes: an address, or a domain name with a port
/// (ATYP 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetAddr {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => addr.fmt(f),
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// A SOCKS5 reply code other than success (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyCode {
    GeneralFailure,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
    /// A code RFC 1928 leaves unassigned.
    Other(u8),
}

impl From<u8> for ReplyCode {
    fn from(code: u8) -> Self {
        match code {
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            other => ReplyCode::Other(other),
        }
    }
}

impl From<ReplyCode> for u8 {
    fn from(code: ReplyCode) -> u8 {
        match code {
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::Other(other) => other,
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
            ReplyCode::Other(code) => return write!(f, "unassigned reply code {code:#04x}"),
        };
        f.write_str(text)
    }
}

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
/// proxy). `client` is the address datagrams will come from (0.0.0.0:0 or
/// [::]:0 when unknown). An unspecified BND address in the reply means the
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

/// Appends the UDP request header (RSV 0x0000, FRAG 0, ATYP, DST.ADDR,
/// DST.PORT) and `payload` to `out`. A domain name that cannot be encoded
/// (empty, or longer than 255 bytes) appends nothing.
pub fn encapsulate(target: &TargetAddr, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0]);
    if put_addr(target, out).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(payload);
}

/// Parses a datagram from the relay: the source address and the payload.
/// Fragmented datagrams (FRAG != 0) and malformed headers are errors.
pub fn decapsulate(datagram: &[u8]) -> Result<(TargetAddr, &[u8]), Socks5Error> {
    let (&[_, _, frag], rest) = datagram.split_first_chunk::<3>().ok_or_else(truncated)?;
    if frag != 0 {
        return Err(Socks5Error::Protocol(format!(
            "fragmented datagram (FRAG {frag})"
        )));
    }
    parse_addr(rest)
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
        stream.write_all(&[VERSION, 0xFF]).await?;
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
) -> io::Result<()> {
    let (code, bound) = match outcome {
        Ok(bound) => (REPLY_SUCCEEDED, bound),
        Err(code) => (u8::from(code), SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    let mut out = vec![VERSION, code, 0];
    put_socket_addr(bound, &mut out);
    stream.write_all(&out).await
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

/// The one-byte length of a field that must be 1..=255 bytes long.
fn field_len(what: &str, bytes: &[u8]) -> Result<u8, Socks5Error> {
    u8::try_from(bytes.len())
        .ok()
        .filter(|&len| len > 0)
        .ok_or_else(|| {
            Socks5Error::Protocol(format!(
                "{what} must be 1 to 255 bytes long, not {}",
                bytes.len()
            ))
        })
}

/// A request (VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT) in one buffer.
fn command(cmd: u8, target: &TargetAddr) -> Result<Vec<u8>, Socks5Error> {
    let mut request = Vec::with_capacity(3 + MAX_ADDR_LEN);
    request.extend_from_slice(&[VERSION, cmd, 0]);
    put_addr(target, &mut request)?;
    Ok(request)
}

/// Appends ATYP, the address and the port; fails, appending nothing, on a
/// domain name that cannot be encoded.
fn put_addr(target: &TargetAddr, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
    match target {
        TargetAddr::Ip(addr) => put_socket_addr(*addr, out),
        TargetAddr::Domain(name, port) => {
            let len = field_len("domain name", name.as_bytes())?;
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

/// Appends ATYP, an IP address and the port.
fn put_socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
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

/// Reads the address and port that follow `atyp` on a stream, and no more.
async fn read_addr<R: AsyncRead + Unpin>(
    reader: &mut R,
    atyp: u8,
) -> Result<TargetAddr, Socks5Error> {
    let mut buf = [0u8; MAX_ADDR_LEN];
    buf[0] = atyp;
    let (start, len) = match atyp {
        ATYP_IPV4 => (1, 1 + 4 + 2),
        ATYP_IPV6 => (1, 1 + 16 + 2),
        ATYP_DOMAIN => {
            read_exact(reader, &mut buf[1..2]).await?;
            (2, 2 + usize::from(buf[1]) + 2)
        }
        other => return Err(unknown_atyp(other)),
    };
    read_exact(reader, &mut buf[start..len]).await?;
    parse_addr(&buf[..len]).map(|(addr, _)| addr)
}

/// Parses ATYP, an address and a port; returns what follows them.
fn parse_addr(buf: &[u8]) -> Result<(TargetAddr, &[u8]), Socks5Error> {
    let (&atyp, rest) = buf.split_first().ok_or_else(truncated)?;
    match atyp {
        ATYP_IPV4 => {
            let (ip, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            Ok((TargetAddr::Ip(SocketAddr::from((*ip, port))), rest))
        }
        ATYP_IPV6 => {
            let (ip, rest) = rest.split_first_chunk::<16>().ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            Ok((TargetAddr::Ip(SocketAddr::from((*ip, port))), rest))
        }
        ATYP_DOMAIN => {
            let (&len, rest) = rest.split_first().ok_or_else(truncated)?;
            let (name, rest) = rest
                .split_at_checked(usize::from(len))
                .ok_or_else(truncated)?;
            let (port, rest) = split_port(rest)?;
            if name.is_empty() {
                return Err(Socks5Error::Protocol("empty domain name".into()));
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| Socks5Error::Protocol("domain name is not UTF-8".into()))?;
            Ok((TargetAddr::Domain(name.to_owned(), port), rest))
        }
        other => Err(unknown_atyp(other)),
    }
}

fn split_port(buf: &[u8]) -> Result<(u16, &[u8]), Socks5Error> {
    let (port, rest) = buf.split_first_chunk::<2>().ok_or_else(truncated)?;
    Ok((u16::from_be_bytes(*port), rest))
}

fn truncated() -> Socks5Error {
    Socks5Error::Protocol("truncated address".into())
}

fn unknown_atyp(atyp: u8) -> Socks5Error {
    Socks5Error::Protocol(format!("unknown address type {atyp}"))
}

/// `read_exact` with EOF reported as the proxy having closed.
async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), Socks5Error> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(Socks5Error::Closed),
        Err(err) => Err(Socks5Error::Io(err)),
    }
}

/// A small real SOCKS5 server for unit tests in this crate.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::future::{pending, poll_fn};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::Poll;
    use std::time::Duration;

    use socket2::{SockRef, Socket};
    use tokio::net::{lookup_host, TcpListener, UdpSocket};
    use tokio::task::JoinSet;

    use super::*;

    /// The method selection that accepts none of the offered methods.
    pub(super) const METHOD_UNACCEPTABLE: u8 = 0xFF;

    /// A TCP server on 127.0.0.1 that echoes every connection.
    pub(crate) async fn tcp_echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    /// A UDP server on 127.0.0.1 that echoes every datagram.
    pub(crate) async fn udp_echo() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..len], from).await;
            }
        });
        addr
    }

    /// A SOCKS5 server on 127.0.0.1 serving CONNECT and UDP ASSOCIATE.
    pub(crate) struct TestProxy {
        pub addr: SocketAddr,
        shared: Arc<Shared>,
    }

    struct Shared {
        credentials: Option<Credentials>,
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        /// None once killed or dropped: the port is closed.
        listener: Option<TcpListener>,
        accepted: usize,
        next_id: u64,
        /// A duplicate of each open connection's socket, to reset it on kill.
        connections: HashMap<u64, Socket>,
        /// The accept loop and one task per connection.
        tasks: JoinSet<()>,
    }

    impl Shared {
        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl TestProxy {
        /// Binds 127.0.0.1:0 and serves CONNECT and UDP ASSOCIATE; with
        /// Some(credentials) it requires RFC 1929 auth.
        pub async fn start(credentials: Option<Credentials>) -> TestProxy {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the test proxy");
            let addr = listener.local_addr().expect("test proxy address");
            let shared = Arc::new(Shared {
                credentials,
                state: Mutex::new(State {
                    listener: Some(listener),
                    ..State::default()
                }),
            });
            let accept = accept_loop(Arc::clone(&shared));
            shared.lock().tasks.spawn(accept);
            TestProxy { addr, shared }
        }

        /// Connections (control or CONNECT) accepted so far.
        pub fn accepted(&self) -> usize {
            self.shared.lock().accepted
        }

        /// Closes every connection it holds with a reset (SO_LINGER 0) and
        /// stops accepting, like a node whose process was killed. The port
        /// refuses as soon as this returns; the resets go out as the runtime
        /// drops the aborted tasks.
        pub fn kill(&self) {
            let mut state = self.shared.lock();
            state.listener = None;
            for socket in state.connections.values() {
                // Best effort: a socket that fails this is already gone.
                let _ = socket.set_linger(Some(Duration::ZERO));
            }
            state.connections.clear();
            state.tasks.abort_all();
        }
    }

    impl Drop for TestProxy {
        fn drop(&mut self) {
            let mut state = self.shared.lock();
            state.listener = None;
            state.connections.clear();
            state.tasks.abort_all();
        }
    }

    /// Accepts until the listener is taken away. Accepting and registering
    /// happen under one lock, so `kill` never misses a connection.
    async fn accept_loop(shared: Arc<Shared>) {
        let accept_one = || {
            poll_fn(|cx| {
                let mut state = shared.lock();
                let Some(listener) = &state.listener else {
                    return Poll::Ready(false);
                };
                match listener.poll_accept(cx) {
                    Poll::Pending => Poll::Pending,
                    // Whatever failed concerns that one connection.
                    Poll::Ready(Err(_)) => Poll::Ready(true),
                    Poll::Ready(Ok((stream, _))) => {
                        state.accepted += 1;
                        let id = state.next_id;
                        state.next_id += 1;
                        if let Ok(socket) = SockRef::from(&stream).try_clone() {
                            state.connections.insert(id, socket);
                        }
                        while state.tasks.try_join_next().is_some() {}
                        state.tasks.spawn(serve(Arc::clone(&shared), id, stream));
                        Poll::Ready(true)
                    }
                }
            })
        };
        while accept_one().await {}
    }

    /// One connection, from greeting to close.
    async fn serve(shared: Arc<Shared>, id: u64, mut stream: TcpStream) {
        // A test proxy has nobody to report errors to: they end the session.
        let _ = session(&shared, &mut stream).await;
        // Forget the duplicate first, so that dropping the stream closes it.
        shared.lock().connections.remove(&id);
    }

    async fn session(shared: &Shared, stream: &mut TcpStream) -> Result<(), Socks5Error> {
        negotiate(stream, shared.credentials.as_ref()).await?;
        let mut head = [0u8; 4];
        read_exact(stream, &mut head).await?;
        let [version, command, _, atyp] = head;
        if version != VERSION {
            return Err(Socks5Error::Protocol(format!("request version {version}")));
        }
        if ![ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6].contains(&atyp) {
            send_reply(stream, Err(ReplyCode::AddressTypeNotSupported)).await?;
            return Err(unknown_atyp(atyp));
        }
        let target = read_addr(stream, atyp).await?;
        match command {
            CMD_CONNECT => relay_tcp(stream, &target).await,
            CMD_UDP_ASSOCIATE => relay_udp(stream).await,
            _ => Ok(send_reply(stream, Err(ReplyCode::CommandNotSupported)).await?),
        }
    }

    /// The server side of method negotiation and RFC 1929 authentication.
    async fn negotiate(
        stream: &mut TcpStream,
        required: Option<&Credentials>,
    ) -> Result<(), Socks5Error> {
        let mut head = [0u8; 2];
        read_exact(stream, &mut head).await?;
        let [version, count] = head;
        if version != VERSION {
            return Err(Socks5Error::Protocol(format!("greeting version {version}")));
        }
        let mut methods = vec![0u8; usize::from(count)];
        read_exact(stream, &mut methods).await?;
        let wanted = if required.is_some() {
            METHOD_USER_PASS
        } else {
            METHOD_NONE
        };
        if !methods.contains(&wanted) {
            stream.write_all(&[VERSION, METHOD_UNACCEPTABLE]).await?;
            return Err(Socks5Error::NoAcceptableMethod);
        }
        stream.write_all(&[VERSION, wanted]).await?;
        let Some(expected) = required else {
            return Ok(());
        };

        let mut head = [0u8; 2];
        read_exact(stream, &mut head).await?;
        let [version, username_len] = head;
        if version != AUTH_VERSION {
            return Err(Socks5Error::Protocol(format!("auth version {version}")));
        }
        let mut username = vec![0u8; usize::from(username_len)];
        read_exact(stream, &mut username).await?;
        let mut password_len = [0u8; 1];
        read_exact(stream, &mut password_len).await?;
        let mut password = vec![0u8; usize::from(password_len[0])];
        read_exact(stream, &mut password).await?;
        let accepted =
            username == expected.username.as_bytes() && password == expected.password.as_bytes();
        stream
            .write_all(&[AUTH_VERSION, u8::from(!accepted)])
            .await?;
        if accepted {
            Ok(())
        } else {
            Err(Socks5Error::AuthRejected)
        }
    }

    /// Sends a reply: success with the bound address, or a failure code.
    async fn send_reply(
        stream: &mut TcpStream,
        result: Result<SocketAddr, ReplyCode>,
    ) -> io::Result<()> {
        let (code, bound) = match result {
            Ok(bound) => (REPLY_SUCCEEDED, bound),
            Err(code) => (u8::from(code), SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let mut reply = vec![VERSION, code, 0];
        put_socket_addr(bound, &mut reply);
        stream.write_all(&reply).await
    }

    /// CONNECT: dial the target, reply, then copy both ways until both close.
    async fn relay_tcp(client: &mut TcpStream, target: &TargetAddr) -> Result<(), Socks5Error> {
        let mut outbound = match dial(target).await {
            Ok(outbound) => outbound,
            Err(code) => return Ok(send_reply(client, Err(code)).await?),
        };
        send_reply(client, Ok(outbound.local_addr()?)).await?;
        tokio::io::copy_bidirectional(client, &mut outbound).await?;
        Ok(())
    }

    async fn dial(target: &TargetAddr) -> Result<TcpStream, ReplyCode> {
        let mut code = ReplyCode::HostUnreachable;
        for addr in resolve(target).await {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => code = reply_code(&err),
            }
        }
        Err(code)
    }

    /// The reply code for a failed dial to the target.
    fn reply_code(err: &io::Error) -> ReplyCode {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => ReplyCode::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
            _ => ReplyCode::GeneralFailure,
        }
    }

    /// The target's addresses; none when a name does not resolve.
    async fn resolve(target: &TargetAddr) -> Vec<SocketAddr> {
        match target {
            TargetAddr::Ip(addr) => vec![*addr],
            TargetAddr::Domain(name, port) => lookup_host((name.as_str(), *port))
                .await
                .map(Iterator::collect)
                .unwrap_or_default(),
        }
    }

    /// UDP ASSOCIATE: relays datagrams until the control connection closes.
    /// The client's address is learned from its first datagram; datagrams
    /// from elsewhere are dropped.
    async fn relay_udp(control: &mut TcpStream) -> Result<(), Socks5Error> {
        let relay = UdpSocket::bind("127.0.0.1:0").await?;
        let outbound_v4 = UdpSocket::bind("0.0.0.0:0").await?;
        // Hosts without IPv6 simply cannot relay to IPv6 targets.
        let outbound_v6 = UdpSocket::bind("[::]:0").await.ok();
        send_reply(control, Ok(relay.local_addr()?)).await?;

        let mut client = None;
        let mut control_buf = [0u8; 64];
        let mut from_client = vec![0u8; 65536];
        let mut from_v4 = vec![0u8; 65536];
        let mut from_v6 = vec![0u8; 65536];
        let mut packet = Vec::new();
        loop {
            tokio::select! {
                read = control.read(&mut control_buf) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return Ok(());
                    }
                }
                received = relay.recv_from(&mut from_client) => {
                    let Ok((len, source)) = received else { continue };
                    if *client.get_or_insert(source) != source {
                        continue;
                    }
                    let Ok((target, payload)) = decapsulate(&from_client[..len]) else {
                        continue;
                    };
                    let Some(dest) = resolve(&target).await.into_iter().next() else {
                        continue;
                    };
                    let socket = match dest {
                        SocketAddr::V4(_) => Some(&outbound_v4),
                        SocketAddr::V6(_) => outbound_v6.as_ref(),
                    };
                    if let Some(socket) = socket {
                        let _ = socket.send_to(payload, dest).await;
                    }
                }
                received = outbound_v4.recv_from(&mut from_v4) => {
                    if let (Ok((len, source)), Some(client)) = (received, client) {
                        back_to_client(&relay, client, source, &from_v4[..len], &mut packet).await;
                    }
                }
                received = recv_from_opt(outbound_v6.as_ref(), &mut from_v6) => {
                    if let (Ok((len, source)), Some(client)) = (received, client) {
                        back_to_client(&relay, client, source, &from_v6[..len], &mut packet).await;
                    }
                }
            }
        }
    }

    /// `recv_from` on a socket that may not exist (then never ready).
    async fn recv_from_opt(
        socket: Option<&UdpSocket>,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        match socket {
            Some(socket) => socket.recv_from(buf).await,
            None => pending().await,
        }
    }

    /// Sends a target's datagram to the client, with the request header.
    async fn back_to_client(
        relay: &UdpSocket,
        client: SocketAddr,
        source: SocketAddr,
        payload: &[u8],
        packet: &mut Vec<u8>,
    ) {
        packet.clear();
        encapsulate(&TargetAddr::Ip(source), payload, packet);
        // Best effort, like any UDP relay.
        let _ = relay.send_to(packet, client).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use tokio::net::{TcpListener, UdpSocket};
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::testing::{tcp_echo, udp_echo, TestProxy, METHOD_UNACCEPTABLE};
    use super::*;

    const BOUND: Duration = Duration::from_secs(2);

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// A fake proxy for one connection: for each scripted response it reads
    /// once (one client message) and writes the response; then it reads once
    /// more, for a short while, and closes (with nothing unread, so a FIN and
    /// not a reset). Returns what it read, one entry per read.
    async fn fake_proxy(script: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut reads = Vec::new();
            let mut buf = [0u8; 1024];
            for response in script {
                let len = stream.read(&mut buf).await.unwrap();
                reads.push(buf[..len].to_vec());
                stream.write_all(&response).await.unwrap();
            }
            let last = timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
            if let Ok(Ok(len)) = last {
                reads.push(buf[..len].to_vec());
            }
            reads
        });
        (addr, task)
    }

    async fn connect_via(
        proxy: SocketAddr,
        credentials: Option<&Credentials>,
        target: &TargetAddr,
    ) -> Result<(TcpStream, TargetAddr), Socks5Error> {
        let stream = TcpStream::connect(proxy).await.unwrap();
        timeout(BOUND, connect(stream, credentials, target))
            .await
            .expect("handshake in time")
    }

    async fn assert_echoes(stream: &mut TcpStream) {
        stream.write_all(b"hello through socks").await.unwrap();
        let mut buf = [0u8; 19];
        timeout(BOUND, stream.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(&buf, b"hello through socks");
    }

    #[test]
    fn encapsulate_round_trips() {
        let targets = [
            TargetAddr::Ip(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 53))),
            TargetAddr::Ip(SocketAddr::from((
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                853,
            ))),
            TargetAddr::Domain("dns.example".into(), 5353),
        ];
        for target in targets {
            let mut out = vec![0xAA];
            encapsulate(&target, b"payload", &mut out);
            assert_eq!(out[0], 0xAA, "existing bytes are kept");
            let (source, payload) = decapsulate(&out[1..]).unwrap();
            assert_eq!(source, target);
            assert_eq!(payload, b"payload");
        }
    }

    #[test]
    fn encapsulate_writes_the_rfc_header() {
        let mut out = Vec::new();
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 0x1234)));
        encapsulate(&target, b"x", &mut out);
        assert_eq!(out, [0, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34, b'x']);

        out.clear();
        encapsulate(&TargetAddr::Domain("ab".into(), 80), b"", &mut out);
        assert_eq!(out, [0, 0, 0, 3, 2, b'a', b'b', 0, 80]);
    }

    #[test]
    fn encapsulate_skips_names_it_cannot_encode() {
        for name in [String::new(), "a".repeat(256)] {
            let mut out = vec![1, 2];
            encapsulate(&TargetAddr::Domain(name, 53), b"payload", &mut out);
            assert_eq!(out, [1, 2]);
        }
    }

    #[test]
    fn decapsulate_rejects_bad_datagrams() {
        let mut good = Vec::new();
        encapsulate(
            &TargetAddr::Domain("example.org".into(), 53),
            b"",
            &mut good,
        );
        for len in 0..good.len() {
            assert!(
                matches!(decapsulate(&good[..len]), Err(Socks5Error::Protocol(_))),
                "truncated to {len} bytes"
            );
        }
        let mut v6 = Vec::new();
        encapsulate(&TargetAddr::Ip("[::1]:53".parse().unwrap()), b"", &mut v6);
        assert!(decapsulate(&v6[..v6.len() - 1]).is_err());

        let fragmented = [0, 0, 1, 1, 127, 0, 0, 1, 0, 53, b'x'];
        assert!(matches!(
            decapsulate(&fragmented),
            Err(Socks5Error::Protocol(_))
        ));
        let unknown_atyp = [0, 0, 0, 2, 127, 0, 0, 1, 0, 53];
        assert!(matches!(
            decapsulate(&unknown_atyp),
            Err(Socks5Error::Protocol(_))
        ));
        let not_utf8 = [0, 0, 0, 3, 1, 0xFF, 0, 53];
        assert!(matches!(
            decapsulate(&not_utf8),
            Err(Socks5Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn connect_without_auth_carries_bytes() {
        let proxy = TestProxy::start(None).await;
        let echo = tcp_echo().await;
        let (mut stream, bound) = connect_via(proxy.addr, None, &TargetAddr::Ip(echo))
            .await
            .unwrap();
        assert!(matches!(bound, TargetAddr::Ip(addr) if addr.ip().is_loopback()));
        assert_echoes(&mut stream).await;
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn connect_to_a_domain_name() {
        let proxy = TestProxy::start(None).await;
        let echo = tcp_echo().await;
        let target = TargetAddr::Domain("localhost".into(), echo.port());
        let (mut stream, _) = connect_via(proxy.addr, None, &target).await.unwrap();
        assert_echoes(&mut stream).await;
    }

    #[tokio::test]
    async fn connect_with_auth() {
        let good = creds("ward", "s3cret");
        let proxy = TestProxy::start(Some(good.clone())).await;
        let target = TargetAddr::Ip(tcp_echo().await);

        let (mut stream, _) = connect_via(proxy.addr, Some(&good), &target).await.unwrap();
        assert_echoes(&mut stream).await;

        let err = connect_via(proxy.addr, Some(&creds("ward", "wrong")), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, Socks5Error::AuthRejected), "{err:?}");
        assert_eq!(err.class(), IoClass::PathFailed);

        let err = connect_via(proxy.addr, None, &target).await.unwrap_err();
        assert!(matches!(err, Socks5Error::NoAcceptableMethod), "{err:?}");
    }

    #[tokio::test]
    async fn credentials_that_cannot_be_encoded_fail_before_sending() {
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 9)));
        for bad in [creds(&"u".repeat(256), "p"), creds("u", ""), creds("", "p")] {
            let (addr, server) = fake_proxy(Vec::new()).await;
            let err = connect_via(addr, Some(&bad), &target).await.unwrap_err();
            assert!(matches!(err, Socks5Error::Protocol(_)), "{err:?}");
            assert_eq!(server.await.unwrap(), [Vec::<u8>::new()], "nothing sent");
        }
    }

    #[tokio::test]
    async fn connect_to_a_closed_port_is_refused() {
        let proxy = TestProxy::start(None).await;
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let err = connect_via(proxy.addr, None, &TargetAddr::Ip(closed))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Socks5Error::Reply(ReplyCode::ConnectionRefused)),
            "{err:?}"
        );
        assert_eq!(err.class(), IoClass::PeerGone);
    }

    #[tokio::test]
    async fn udp_associate_relays_datagrams() {
        let proxy = TestProxy::start(None).await;
        let echo = udp_echo().await;
        let control = TcpStream::connect(proxy.addr).await.unwrap();
        let association = timeout(
            BOUND,
            udp_associate(control, None, SocketAddr::from(([0, 0, 0, 0], 0))),
        )
        .await
        .expect("associate in time")
        .unwrap();
        assert!(association.relay.ip().is_loopback());

        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut out = Vec::new();
        encapsulate(&TargetAddr::Ip(echo), b"ping", &mut out);
        socket.send_to(&out, association.relay).await.unwrap();

        let mut buf = [0u8; 1500];
        let (len, from) = timeout(BOUND, socket.recv_from(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(from, association.relay);
        let (source, payload) = decapsulate(&buf[..len]).unwrap();
        assert_eq!(source, TargetAddr::Ip(echo));
        assert_eq!(payload, b"ping");
    }

    #[tokio::test]
    async fn kill_resets_connections_and_refuses() {
        let proxy = TestProxy::start(None).await;
        let echo = tcp_echo().await;
        let control = TcpStream::connect(proxy.addr).await.unwrap();
        let mut association = udp_associate(control, None, SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .unwrap();
        let (mut tunnel, _) = connect_via(proxy.addr, None, &TargetAddr::Ip(echo))
            .await
            .unwrap();
        assert_eq!(proxy.accepted(), 2);

        proxy.kill();
        let refused = TcpStream::connect(proxy.addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        let closed = timeout(BOUND, control_closed(&mut association.control))
            .await
            .expect("control connection closed in time");
        assert_eq!(
            closed.map(|err| err.kind()),
            Some(io::ErrorKind::ConnectionReset)
        );
        let mut buf = [0u8; 1];
        let read = timeout(BOUND, tunnel.read(&mut buf))
            .await
            .expect("tunnel closed in time");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(proxy.accepted(), 2);
    }

    #[tokio::test]
    async fn requests_are_sent_whole() {
        let (addr, server) = fake_proxy(vec![
            vec![VERSION, METHOD_USER_PASS],
            vec![AUTH_VERSION, 0],
            vec![VERSION, 0, 0, ATYP_IPV4, 10, 0, 0, 1, 0, 80],
        ])
        .await;
        let target = TargetAddr::Domain("example.org".into(), 443);
        connect_via(addr, Some(&creds("user", "pw")), &target)
            .await
            .unwrap();
        let reads = server.await.unwrap();
        assert_eq!(reads[0], [VERSION, 2, METHOD_NONE, METHOD_USER_PASS]);
        assert_eq!(reads[1], b"\x01\x04user\x02pw");
        assert_eq!(reads[2], b"\x05\x01\x00\x03\x0bexample.org\x01\xbb");
    }

    #[tokio::test]
    async fn reply_is_read_exactly() {
        let mut reply = vec![VERSION, 0, 0, ATYP_DOMAIN, 5];
        reply.extend_from_slice(b"proxy\x10\x00tunnelled");
        let (addr, _server) = fake_proxy(vec![vec![VERSION, METHOD_NONE], reply]).await;
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 80)));
        let (mut stream, bound) = connect_via(addr, None, &target).await.unwrap();
        assert_eq!(bound, TargetAddr::Domain("proxy".into(), 0x1000));
        let mut rest = [0u8; 9];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tunnelled");

        let v6_reply = [&[VERSION, 0, 0, ATYP_IPV6][..], &[0; 15], &[1, 0, 53, b'!']].concat();
        let (addr, _server) = fake_proxy(vec![vec![VERSION, METHOD_NONE], v6_reply]).await;
        let (mut stream, bound) = connect_via(addr, None, &target).await.unwrap();
        assert_eq!(bound, TargetAddr::Ip("[::1]:53".parse().unwrap()));
        let mut rest = [0u8; 1];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"!");
    }

    #[tokio::test]
    async fn unspecified_relay_means_the_proxy() {
        let (addr, _server) = fake_proxy(vec![
            vec![VERSION, METHOD_NONE],
            vec![VERSION, 0, 0, ATYP_IPV4, 0, 0, 0, 0, 0x12, 0x34],
        ])
        .await;
        let control = TcpStream::connect(addr).await.unwrap();
        let association = udp_associate(control, None, "127.0.0.1:5000".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            association.relay,
            SocketAddr::from(([127, 0, 0, 1], 0x1234))
        );
    }

    #[tokio::test]
    async fn misbehaving_proxies() {
        let target = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 80)));
        let ok_method = vec![VERSION, METHOD_NONE];
        // Each script, and the error it must give (as Debug shows it).
        let cases = [
            // A SOCKS4-ish answer to the greeting.
            (vec![vec![4, 0]], "Protocol"),
            // Accepts the method, then closes on the request.
            (vec![ok_method.clone()], "Closed"),
            (
                vec![vec![VERSION, METHOD_UNACCEPTABLE]],
                "NoAcceptableMethod",
            ),
            // Picks username/password, which was not offered.
            (vec![vec![VERSION, METHOD_USER_PASS]], "NoAcceptableMethod"),
            (
                vec![ok_method.clone(), vec![4, 0, 0, 1, 0, 0, 0, 0, 0, 0]],
                "Protocol",
            ),
            (
                vec![ok_method.clone(), vec![VERSION, 0, 0, 9, 0, 0]],
                "Protocol",
            ),
            // A reply cut short.
            (
                vec![ok_method.clone(), vec![VERSION, 0, 0, ATYP_IPV4, 1]],
                "Closed",
            ),
            (
                vec![ok_method.clone(), vec![VERSION, 2, 0, ATYP_IPV4]],
                "Reply(NotAllowed)",
            ),
        ];
        for (script, expected) in cases {
            let (addr, _server) = fake_proxy(script.clone()).await;
            let err = connect_via(addr, None, &target).await.unwrap_err();
            let shown = format!("{err:?}");
            assert!(
                shown.starts_with(expected),
                "script {script:?} gave {shown}"
            );
        }
    }

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

    #[test]
    fn reply_codes_round_trip() {
        for byte in 1..=u8::MAX {
            assert_eq!(u8::from(ReplyCode::from(byte)), byte);
        }
        assert_eq!(ReplyCode::from(5), ReplyCode::ConnectionRefused);
        assert_eq!(ReplyCode::from(9), ReplyCode::Other(9));
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", creds("ward", "s3cret"));
        assert!(
            shown.contains("ward") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
