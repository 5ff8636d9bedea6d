//! Datagrams framed in a byte stream to the node ([`StreamDatagrams`]):
//! Trojan's UDP ASSOCIATE carries every datagram of a flow, both ways,
//! inside one TLS connection.
//!
//! The stream is the session: when it breaks, reading fails once with why
//! and the owner ends (one failure, blamed once); nothing is read or
//! written on it again. Writes go through a small pump task that owns the
//! write half, so senders never wait on the stream (a full queue is
//! `WouldBlock`, as a full socket buffer is) and the datagrams waiting are
//! written together. The pump is aborted with the session: dropping the
//! session closes the connection, so nothing is left in CLOSE-WAIT.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::dialer::outbound::ProxyStream;
use crate::net::udp_batch::RecvBatch;

/// How a node's protocol frames datagrams in a stream.
pub trait StreamFraming: Send + Sync + 'static {
    /// Appends the frame of `payload` to `dst` to `out`.
    fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>);

    /// Parses the frame at the front of `buf`: `Ok(None)` while it is
    /// incomplete; its source, its payload's range in `buf` and its whole
    /// length once it is there. An error is a stream that cannot be
    /// trusted any more.
    fn decode(&self, buf: &[u8]) -> io::Result<Option<(SocketAddr, Range<usize>, usize)>>;
}

/// Frames queued for the pump at most: past that, senders hear
/// `WouldBlock` and the flow's own queue holds the rest.
const QUEUED: usize = 256;
/// Bytes written to the stream at once at most.
const WRITE_AT_ONCE: usize = 64 * 1024;
/// The read buffer's first size; it grows to hold the largest frame.
const READ_BUF: usize = 4 * 1024;

/// Datagrams framed in one stream.
pub struct StreamDatagrams {
    framing: Arc<dyn StreamFraming>,
    reader: Mutex<Reader>,
    frames: mpsc::Sender<Vec<u8>>,
    /// Why the pump stopped, once it has.
    broken: Arc<Broken>,
    pump: JoinHandle<()>,
}

struct Reader {
    half: ReadHalf<ProxyStream>,
    buf: Vec<u8>,
    /// Where unread bytes start in `buf`.
    start: usize,
}

/// A write that failed, kept to tell the reader (io::Error is not Clone).
#[derive(Default)]
struct Broken {
    error: OnceLock<(io::ErrorKind, Option<i32>, String)>,
    notify: Notify,
}

impl Broken {
    fn error(&self) -> Option<io::Error> {
        self.error.get().map(|(kind, raw, text)| match raw {
            Some(raw) => io::Error::from_raw_os_error(*raw),
            None => io::Error::new(*kind, text.clone()),
        })
    }

    fn set(&self, error: &io::Error) {
        let _ = self
            .error
            .set((error.kind(), error.raw_os_error(), error.to_string()));
        // A permit waits for the reader if it is not waiting now.
        self.notify.notify_one();
    }
}

impl Drop for StreamDatagrams {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl StreamDatagrams {
    /// Datagrams over `stream` (already past the node's handshake), framed
    /// by `framing`. Spawns the write pump on the current runtime.
    pub fn new(stream: ProxyStream, framing: Arc<dyn StreamFraming>) -> Self {
        let (read, write) = tokio::io::split(stream);
        let (frames, queued) = mpsc::channel(QUEUED);
        let broken = Arc::new(Broken::default());
        let pump = tokio::spawn(pump(write, queued, broken.clone()));
        Self {
            framing,
            reader: Mutex::new(Reader {
                half: read,
                buf: Vec::new(),
                start: 0,
            }),
            frames,
            broken,
            pump,
        }
    }

    fn frame(&self, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(payload.len() + 24);
        self.framing.encode(dst, payload, &mut frame);
        frame
    }

    fn closed(&self) -> io::Error {
        self.broken
            .error()
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Queues one datagram without waiting: `WouldBlock` when the queue is
    /// full, the stream's error once it broke.
    pub fn try_send(&self, dst: SocketAddr, payload: &[u8]) -> io::Result<()> {
        match self.frames.try_send(self.frame(dst, payload)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.closed()),
        }
    }

    /// Queues one datagram, waiting for room.
    pub async fn send(&self, dst: SocketAddr, payload: &[u8]) -> io::Result<()> {
        let frame = self.frame(dst, payload);
        self.frames.send(frame).await.map_err(|_| self.closed())
    }

    /// Waits until a whole frame is buffered; fails with the error that
    /// ended the stream (EOF is `UnexpectedEof`: the node closed it).
    /// Cancel-safe: bytes read stay buffered.
    pub async fn readable(&self) -> io::Result<()> {
        let mut reader = self.reader.lock().await;
        self.readable_locked(&mut reader).await.inspect_err(|e| {
            // Whatever ended it, the stream is over: it is never read
            // again, and every later call says why at once.
            self.broken.set(e);
        })
    }

    async fn readable_locked(&self, reader: &mut Reader) -> io::Result<()> {
        loop {
            if let Some(error) = self.broken.error() {
                return Err(error);
            }
            if self.framing.decode(reader.unread())?.is_some() {
                return Ok(());
            }
            reader.make_room();
            let Reader { half, buf, .. } = reader;
            tokio::select! {
                read = half.read_buf(buf) => match read? {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    _ => continue,
                },
                () = self.broken.notify.notified() => continue,
            }
        }
    }

    /// True once the stream has failed or ended: the session is over and
    /// its owner must end too (a socket's errors pass; a stream's do not).
    pub fn is_over(&self) -> bool {
        self.broken.error.get().is_some()
    }

    /// Moves the whole frames buffered into `batch`: how many, or
    /// `WouldBlock` when there are none (or another task is reading).
    pub fn try_fill(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut reader = self
            .reader
            .try_lock()
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        batch.clear();
        let over = |e: io::Error| {
            self.broken.set(&e);
            e
        };
        while let Some((from, payload, len)) = self.framing.decode(reader.unread()).map_err(over)? {
            let start = reader.start;
            let payload = start + payload.start..start + payload.end;
            if !batch.push_view(from, &reader.buf[payload]) {
                break;
            }
            reader.start += len;
        }
        match batch.views() {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Receives one datagram's payload into the start of `buf` (cut to
    /// its length), with its source.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(SocketAddr, usize)> {
        loop {
            self.readable().await?;
            let mut reader = self.reader.lock().await;
            let decoded = self.framing.decode(reader.unread());
            let Some((from, payload, len)) = decoded.inspect_err(|e| self.broken.set(e))? else {
                continue;
            };
            let start = reader.start;
            let payload = &reader.buf[start + payload.start..start + payload.end];
            let n = payload.len().min(buf.len());
            buf[..n].copy_from_slice(&payload[..n]);
            reader.start += len;
            return Ok((from, n));
        }
    }
}

impl Reader {
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Drops what was read, and makes room for more to be read.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = READ_BUF.max(self.buf.len() * 2);
        if self.buf.capacity() - self.buf.len() < READ_BUF / 2 {
            self.buf.reserve(want - self.buf.len());
        }
    }
}

/// Writes the frames queued, as many at once as are waiting, until the
/// session drops the sender or a write fails.
async fn pump(
    mut write: WriteHalf<ProxyStream>,
    mut queued: mpsc::Receiver<Vec<u8>>,
    broken: Arc<Broken>,
) {
    let mut out = Vec::new();
    while let Some(frame) = queued.recv().await {
        out.clear();
        out.extend_from_slice(&frame);
        while out.len() < WRITE_AT_ONCE {
            match queued.try_recv() {
                Ok(frame) => out.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = async {
            write.write_all(&out).await?;
            write.flush().await
        };
        if let Err(error) = written.await {
            broken.set(&error);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A framing of the tests' own: a v4 address (6 bytes), a length (2),
    /// the payload.
    struct Plain;

    impl StreamFraming for Plain {
        fn encode(&self, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
            let SocketAddr::V4(dst) = dst else { return };
            out.extend_from_slice(&dst.ip().octets());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }

        fn decode(&self, buf: &[u8]) -> io::Result<Option<(SocketAddr, Range<usize>, usize)>> {
            if buf.len() < 8 {
                return Ok(None);
            }
            if buf[0] != 127 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not loopback"));
            }
            let len = u16::from_be_bytes([buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                return Ok(None);
            }
            let ip = std::net::Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3]);
            let from = SocketAddr::from((ip, u16::from_be_bytes([buf[4], buf[5]])));
            Ok(Some((from, 8..8 + len, 8 + len)))
        }
    }

    fn pair() -> (StreamDatagrams, tokio::io::DuplexStream) {
        let (ours, node) = tokio::io::duplex(1 << 16);
        let session = StreamDatagrams::new(ProxyStream::new(ours), Arc::new(Plain));
        (session, node)
    }

    #[tokio::test]
    async fn frames_cross_both_ways_and_a_frame_split_across_reads_waits_whole() {
        let (session, mut node) = pair();
        let dst: SocketAddr = "127.0.0.1:53".parse().unwrap();
        session.try_send(dst, b"one").unwrap();
        session.send(dst, b"two").await.unwrap();
        let mut sent = vec![0u8; 2 * 11];
        node.read_exact(&mut sent).await.unwrap();
        let mut expected = Vec::new();
        Plain.encode(dst, b"one", &mut expected);
        Plain.encode(dst, b"two", &mut expected);
        assert_eq!(sent, expected);

        // Half a frame, then the rest with a whole second one.
        node.write_all(&expected[..5]).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(50), session.readable()).await;
        assert!(early.is_err(), "half a frame is not readable");
        node.write_all(&expected[5..]).await.unwrap();
        session.readable().await.unwrap();
        let mut batch = RecvBatch::with_slot(64);
        let n = session.try_fill(&mut batch).unwrap();
        let got: Vec<_> = (0..n).map(|i| batch.view(i).unwrap()).collect();
        assert_eq!(got, [(dst, &b"one"[..]), (dst, &b"two"[..])]);
        assert_eq!(
            session.try_fill(&mut batch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[tokio::test]
    async fn a_closed_stream_ends_the_session_once_and_for_all() {
        let (session, node) = pair();
        drop(node);
        assert!(!session.is_over());
        let err = session.readable().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(session.is_over());
        let dst: SocketAddr = "127.0.0.1:53".parse().unwrap();
        // The pump hears of it at its first write; then every send fails.
        let _ = session.send(dst, b"x").await;
        let failed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match session.try_send(dst, b"y") {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return e,
                    _ => tokio::task::yield_now().await,
                }
            }
        });
        assert!(failed.await.is_ok(), "sends fail once the stream is gone");
    }

    #[tokio::test]
    async fn garbage_from_the_node_is_an_error_not_a_hang() {
        let (session, mut node) = pair();
        node.write_all(&[10u8; 16]).await.unwrap();
        let err = session.readable().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(session.is_over());
        // Said again at once, never read again.
        let again = session.readable().await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    }
}
