//! A TCP connection through a Shadowsocks node: [`client`] wraps a
//! connected stream in a [`ShadowsocksStream`], which encrypts what is
//! written ([`super::tcp_write`]) and decrypts what is read
//! ([`super::tcp_read`]).
//!
//! Writes are buffered the way `tokio::io::BufWriter`'s are: a write
//! returns once its bytes are encrypted, and what the socket did not take
//! goes out on the next write or flush, so nothing is encrypted twice. The
//! request header goes out with the first write, or with the first flush
//! when nothing was written (SIP022 wants salt, header and first data in
//! one packet).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ShadowsocksError;
use super::method::Key;
use super::tcp_read::Decrypter;
use super::tcp_write::Encrypter;
use crate::dialer::socks5::TargetAddr;

/// Starts a connection to `target` through the node at the other end of
/// `stream` (already connected). Nothing is sent yet: the request goes out
/// with the first write or flush. Fails only on a target address that
/// cannot be encoded.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    key: Arc<Key>,
    target: &TargetAddr,
) -> Result<ShadowsocksStream<S>, ShadowsocksError> {
    ShadowsocksStream::new(stream, key, target)
}

/// A connection through a Shadowsocks node. Read errors are `io::Error`s
/// of kind `InvalidData` (or `UnexpectedEof` for a reply cut short) that
/// hold a [`ShadowsocksError`] ([`ShadowsocksError::from_io`]).
pub struct ShadowsocksStream<S> {
    inner: S,
    write: Encrypter,
    read: Decrypter,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ShadowsocksStream<S> {
    pub(super) fn new(
        inner: S,
        key: Arc<Key>,
        target: &TargetAddr,
    ) -> Result<ShadowsocksStream<S>, ShadowsocksError> {
        let (write, salt) = Encrypter::new(&key, target)?;
        Ok(ShadowsocksStream {
            inner,
            write,
            read: Decrypter::new(key, salt),
        })
    }

    /// The connection to the node.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection to the node, to change (the tests' replies).
    #[cfg(test)]
    pub(super) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The request's salt (the tests' server echoes it).
    #[cfg(test)]
    pub(super) fn request_salt(&self) -> &[u8] {
        self.read.request_salt()
    }

    /// Writes out what is encrypted and not yet written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write.unwritten().is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.write.unwritten()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ShadowsocksStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.read.poll_read(&mut this.inner, cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ShadowsocksStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Room first: the buffer holds one write's worth at most.
        ready!(this.poll_write_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let taken = this
            .write
            .encrypt(data)
            .map_err(ShadowsocksError::into_io)?;
        // The bytes are ours now; what the socket does not take at once
        // goes with the next write or flush.
        if let Poll::Ready(Err(err)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        if this.write.header_pending() {
            this.write.encrypt(&[]).map_err(ShadowsocksError::into_io)?;
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
