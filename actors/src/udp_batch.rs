//! Batched UDP I/O for the DNS listeners and the UDP relay inbounds: one
//! `recvmmsg` takes every queued datagram (up to a batch), one `sendmmsg`
//! sends every answer ready at once. Under load that is two system calls
//! per batch instead of two per datagram; at rest it is one `recvmmsg` per
//! wake-up, with readiness cleared when the batch came back short instead
//! of a `recvfrom` that only says EAGAIN.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Datagrams taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// The largest query kept whole; longer ones arrive cut and get FORMERR.
const SLOT: usize = 4096;

/// Buffers and headers for one `recvmmsg`, reused for every call.
pub struct RecvBatch {
    bufs: Vec<u8>,
    /// Bytes per datagram; longer ones arrive cut.
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers in `iovs` and `msgs` only point into this
// struct's own vectors, and are rebuilt before every call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self::with_slot(SLOT)
    }

    /// Room for [`BATCH`] datagrams of up to `slot` bytes each.
    pub fn with_slot(slot: usize) -> Self {
        // SAFETY: all-zero bytes are valid for these plain C structs.
        let zeroed_storage: libc::sockaddr_storage = unsafe { zeroed() };
        let zeroed_msg: libc::mmsghdr = unsafe { zeroed() };
        Self {
            bufs: vec![0u8; BATCH * slot],
            slot,
            addrs: vec![zeroed_storage; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                BATCH
            ],
            msgs: vec![zeroed_msg; BATCH],
            received: 0,
        }
    }

    /// Takes up to [`BATCH`] datagrams without blocking; WouldBlock when
    /// there are none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: `i * slot` stays inside `bufs` (BATCH * slot bytes).
            self.iovs[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            self.iovs[i].iov_len = self.slot;
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of this struct, sized
        // as declared; the kernel writes at most that much.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.received = 0;
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last batch and its sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.received {
            return None;
        }
        let len = (self.msgs[i].msg_len as usize).min(self.slot);
        let addr = socket_addr(&self.addrs[i])?;
        let start = i * self.slot;
        Some((&self.bufs[start..start + len], addr))
    }
}

/// The address the kernel wrote into a `sockaddr_storage`.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Answers waiting to leave together, in one buffer.
#[derive(Default)]
pub struct SendBatch {
    bytes: Vec<u8>,
    answers: Vec<(SockAddr, std::ops::Range<usize>)>,
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddr, answer: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(answer);
        self.answers
            .push((SockAddr::from(to), start..self.bytes.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Sends everything queued without blocking; returns how many could not
    /// be sent (a full socket buffer, a vanished client), and forgets them.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut failed = 0;
        let mut start = 0;
        while start < self.answers.len() {
            let chunk = &self.answers[start..(start + BATCH).min(self.answers.len())];
            match send_chunk(fd, &self.bytes, chunk) {
                Ok(sent) if sent > 0 => start += sent,
                // The first of the chunk failed: drop it and go on.
                _ => {
                    failed += 1;
                    start += 1;
                }
            }
        }
        self.answers.clear();
        self.bytes.clear();
        failed
    }
}

fn send_chunk(
    fd: RawFd,
    bytes: &[u8],
    chunk: &[(SockAddr, std::ops::Range<usize>)],
) -> io::Result<usize> {
    let mut iovs: Vec<libc::iovec> = chunk
        .iter()
        .map(|(_, range)| libc::iovec {
            iov_base: bytes[range.clone()].as_ptr() as *mut libc::c_void,
            iov_len: range.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(chunk.len());
    for (i, (to, _)) in chunk.iter().enumerate() {
        // SAFETY: all-zero bytes are a valid mmsghdr.
        let mut msg: libc::mmsghdr = unsafe { zeroed() };
        msg.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = to.len();
        msg.msg_hdr.msg_iov = &mut iovs[i];
        msg.msg_hdr.msg_iovlen = 1;
        msgs.push(msg);
    }
    // SAFETY: headers point at addresses and answers that outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn batches_come_in_and_go_out_whole() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.recv(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            client
                .send_to(&[i; 20], server.local_addr().unwrap())
                .unwrap();
        }
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), BATCH);
        let (first, from) = batch.get(0).unwrap();
        assert_eq!(
            (first, from),
            (&[0u8; 20][..], client.local_addr().unwrap())
        );
        assert_eq!(batch.get(BATCH - 1).unwrap().0, &[31u8; 20][..]);
        assert!(batch.get(BATCH).is_none());
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 8);

        let mut out = SendBatch::default();
        for i in 0..40u8 {
            out.push(client.local_addr().unwrap(), &[i; 3]);
        }
        assert_eq!(out.flush(server.as_raw_fd()), 0);
        assert!(out.is_empty());
        let mut buf = [0u8; 16];
        for i in 0..40u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 3]);
        }
    }
}
