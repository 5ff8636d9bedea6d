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
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::SockAddr;

/// Datagrams taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// The largest query kept whole; longer ones arrive cut and get FORMERR.
const SLOT: usize = 4096;

/// Buffers and headers for one `recvmmsg`, reused for every call.
pub struct RecvBatch {
    bufs: Buffers,
    /// Bytes per datagram; longer ones arrive cut.
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    received: usize,
    /// What a session made of each datagram ([`RecvBatch::decode`],
    /// [`RecvBatch::push_view`]): its source and its payload's place in
    /// `bufs`. Datagrams that did not decode have none.
    views: Vec<Option<(SocketAddr, std::ops::Range<usize>)>>,
}

// SAFETY: the raw pointers in `iovs` and `msgs` only point into this
// struct's own vectors, and are rebuilt before every call.
unsafe impl Send for RecvBatch {}

/// Past this many bytes a batch's buffers are pages of their own.
const OWN_PAGES: usize = 64 * 1024;

/// A batch's datagram buffers. Large ones (a relay inbound's: 32 slots of
/// 64 KiB, most of each never written) are anonymous pages mapped for
/// them and unmapped with them: the kernel hands them out zeroed and
/// keeps only the pages written in memory. From the allocator instead,
/// a block it reuses would be zeroed whole by hand, and all 2 MiB would
/// stay resident for good after an inbound's restart.
enum Buffers {
    Heap(Vec<u8>),
    Pages(std::ptr::NonNull<u8>, usize),
}

// SAFETY: the mapping is owned by this value alone, like a Vec's block.
unsafe impl Send for Buffers {}

impl Buffers {
    fn zeroed(len: usize) -> Buffers {
        if len < OWN_PAGES {
            return Buffers::Heap(vec![0u8; len]);
        }
        // SAFETY: a fresh private anonymous mapping, no file, no address
        // asked for; the result is checked.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(at.cast::<u8>()) {
            Some(at) if at.as_ptr() != libc::MAP_FAILED.cast() => Buffers::Pages(at, len),
            // No address space for it: the allocator's way still works.
            _ => Buffers::Heap(vec![0u8; len]),
        }
    }
}

impl std::ops::Deref for Buffers {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffers::Heap(v) => v,
            // SAFETY: `len` bytes mapped readable and writable, zeroed by
            // the kernel, owned by this value until it drops.
            Buffers::Pages(at, len) => unsafe { std::slice::from_raw_parts(at.as_ptr(), *len) },
        }
    }
}

impl std::ops::DerefMut for Buffers {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buffers::Heap(v) => v,
            // SAFETY: as in `deref`, borrowed mutably through `self`.
            Buffers::Pages(at, len) => unsafe { std::slice::from_raw_parts_mut(at.as_ptr(), *len) },
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if let Buffers::Pages(at, len) = self {
            // SAFETY: the mapping made in `zeroed`, unmapped once; no
            // borrow of it outlives `self`.
            unsafe { libc::munmap(at.as_ptr().cast(), *len) };
        }
    }
}

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
            bufs: Buffers::zeroed(BATCH * slot),
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
            views: Vec::with_capacity(BATCH),
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

    /// Turns every datagram of the last batch into a view: `decode` gets
    /// its bytes (to rewrite in place, a node's decryption) and sender,
    /// and says where its payload now lies and whom it is from; `None`
    /// drops it. Read the views with [`RecvBatch::view`].
    pub fn decode(
        &mut self,
        mut decode: impl FnMut(&mut [u8], SocketAddr) -> Option<(SocketAddr, std::ops::Range<usize>)>,
    ) {
        self.views.clear();
        for i in 0..self.received {
            let len = (self.msgs[i].msg_len as usize).min(self.slot);
            let view = socket_addr(&self.addrs[i]).and_then(|from| {
                let start = i * self.slot;
                let (source, payload) = decode(&mut self.bufs[start..start + len], from)?;
                (payload.end <= len).then(|| (source, start + payload.start..start + payload.end))
            });
            self.views.push(view);
        }
    }

    /// Empties the batch, to be filled with [`RecvBatch::push_view`].
    pub fn clear(&mut self) {
        self.received = 0;
        self.views.clear();
    }

    /// Adds a datagram that came some other way than `recvmmsg` (framed in
    /// a stream): false when the batch is full or `payload` longer than a
    /// slot.
    pub fn push_view(&mut self, from: SocketAddr, payload: &[u8]) -> bool {
        let i = self.views.len();
        if i == BATCH || payload.len() > self.slot {
            return false;
        }
        let start = i * self.slot;
        self.bufs[start..start + payload.len()].copy_from_slice(payload);
        self.views.push(Some((from, start..start + payload.len())));
        self.received = self.views.len();
        true
    }

    /// How many views the batch holds.
    pub fn views(&self) -> usize {
        self.views.len()
    }

    /// View `i` (see [`RecvBatch::decode`]): the source and payload of a
    /// datagram that decoded.
    pub fn view(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let (from, range) = self.views.get(i)?.as_ref()?;
        Some((*from, &self.bufs[range.clone()]))
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

/// Segments per GSO send at most (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels).
pub const GSO_SEGMENTS: usize = 64;
/// Bytes per GSO send at most: one IP packet's payload, with room for the
/// headers of either family.
pub const GSO_BYTES: usize = 65_000;

/// Sends `buf` as datagrams of `segment` bytes each (the last may be
/// shorter) in one system call, with UDP generic segmentation offload
/// (`UDP_SEGMENT`, Linux 4.18): the stack and the device see one packet
/// until it is cut. `to` is the destination of an unconnected socket.
///
/// All go or none: `WouldBlock` when the socket buffer is full. `EIO` or
/// `ENOPROTOOPT`: this socket's path cannot segment (no checksum offload,
/// an old kernel), so the caller stops trying; `EINVAL`: this send cannot
/// (a segment past the path MTU, too many segments).
pub fn send_segments(fd: RawFd, to: Option<&SockAddr>, buf: &[u8], segment: u16) -> io::Result<()> {
    /// Room for one control message carrying a u16, aligned for cmsghdr.
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr; every pointer set below
    // points at locals that outlive the call, sized as declared.
    let sent = unsafe {
        let mut msg: libc::msghdr = zeroed();
        if let Some(to) = to {
            msg.msg_name = to.as_ptr() as *mut libc::c_void;
            msg.msg_namelen = to.len();
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let space = libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) as usize;
        debug_assert!(space <= control.0.len());
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether a [`send_segments`] error says the socket's path cannot
/// segment at all (rather than this one send).
pub fn gso_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Datagrams to send together, laid out one after another in one buffer,
/// each with its destination (`None`: the socket's connected peer).
#[derive(Default)]
pub struct Datagrams {
    bytes: Vec<u8>,
    list: Vec<(Option<SocketAddr>, std::ops::Range<usize>)>,
}

impl Datagrams {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.list.clear();
    }

    /// Appends a datagram to `to`, written by `write`.
    pub fn push(&mut self, to: Option<SocketAddr>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.list.push((to, start..self.bytes.len()));
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sends them in order from `fd` without waiting. A run to one
    /// destination of one size (the last may be shorter) leaves as one
    /// segmented send while `gso` holds; the rest one by one. `gso` is
    /// cleared when the socket's path cannot segment; a run the kernel
    /// will not segment (past the path MTU) goes one by one. Stops at the
    /// first datagram that cannot go: how many went before it, and why
    /// (`WouldBlock`: the socket buffer is full).
    pub fn send(&self, fd: RawFd, gso: &AtomicBool) -> Result<(), (usize, io::Error)> {
        let mut i = 0;
        while i < self.list.len() {
            let run = self.run(i);
            let (to, first) = &self.list[i];
            let to = to.map(SockAddr::from);
            if run > 1 && gso.load(Ordering::Relaxed) {
                let whole = first.start..self.list[i + run - 1].1.end;
                match send_segments(fd, to.as_ref(), &self.bytes[whole], first.len() as u16) {
                    Ok(()) => {
                        i += run;
                        continue;
                    }
                    Err(e) if gso_unsupported(&e) => gso.store(false, Ordering::Relaxed),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err((i, e)),
                }
            }
            for k in i..i + run {
                let datagram = &self.bytes[self.list[k].1.clone()];
                send_one(fd, to.as_ref(), datagram).map_err(|e| (k, e))?;
            }
            i += run;
        }
        Ok(())
    }

    /// How many datagrams from `i` on can leave as one segmented send: one
    /// destination, one size (the last may be shorter), within the
    /// kernel's limits. At least 1.
    fn run(&self, i: usize) -> usize {
        let (to, first) = &self.list[i];
        let size = first.len();
        if size == 0 || size > usize::from(u16::MAX) {
            return 1;
        }
        let most = GSO_SEGMENTS.min(GSO_BYTES / size);
        let (mut run, mut end) = (1, first.end);
        for (next, range) in &self.list[i + 1..] {
            if run == most || next != to || range.start != end || range.is_empty() {
                break;
            }
            if range.len() > size {
                break;
            }
            run += 1;
            end = range.end;
            if range.len() < size {
                break;
            }
        }
        run
    }
}

/// One datagram, without waiting.
fn send_one(fd: RawFd, to: Option<&SockAddr>, datagram: &[u8]) -> io::Result<()> {
    let (name, len) = match to {
        Some(to) => (to.as_ptr().cast::<libc::sockaddr>(), to.len()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the datagram and the address outlive the call, sized as
    // declared.
    let sent = unsafe {
        libc::sendto(
            fd,
            datagram.as_ptr().cast(),
            datagram.len(),
            libc::MSG_DONTWAIT,
            name,
            len,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
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

    #[test]
    fn segments_leave_in_one_send_and_arrive_as_datagrams() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = SockAddr::from(server.local_addr().unwrap());
        // Three of 100 bytes and a shorter last one.
        let mut buf = Vec::new();
        for i in 0..3u8 {
            buf.extend_from_slice(&[i; 100]);
        }
        buf.extend_from_slice(&[9; 40]);
        send_segments(client.as_raw_fd(), Some(&to), &buf, 100).unwrap();
        let mut got = [0u8; 256];
        for (i, len) in [(0u8, 100), (1, 100), (2, 100), (9, 40)] {
            let (n, from) = server.recv_from(&mut got).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            assert_eq!(&got[..n], &vec![i; len][..]);
        }
        // More segments than the kernel takes: refused for this send only.
        let many = vec![0u8; 200 * 10];
        let e = send_segments(client.as_raw_fd(), Some(&to), &many, 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(!gso_unsupported(&e));
    }

    /// A run the kernel will not segment for this send (here: a socket
    /// without UDP checksums, as a segment past the MTU would be) goes one
    /// by one, and later runs still try segmenting.
    #[test]
    fn a_run_the_kernel_refuses_to_segment_goes_one_by_one() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::net::socket::setsockopt_int(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            1,
        )
        .unwrap();
        let to = Some(server.local_addr().unwrap());
        let mut out = Datagrams::default();
        for i in 0..3u8 {
            out.push(to, |b| b.extend_from_slice(&[i; 50]));
        }
        assert_eq!(out.len(), 3);
        let refused = send_segments(
            client.as_raw_fd(),
            Some(&SockAddr::from(server.local_addr().unwrap())),
            &[0; 100],
            50,
        );
        assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        let gso = AtomicBool::new(true);
        out.send(client.as_raw_fd(), &gso).unwrap();
        assert!(gso.load(Ordering::Relaxed), "refused once, not given up");
        let mut got = [0u8; 64];
        for i in 0..3u8 {
            let n = server.recv(&mut got).unwrap();
            assert_eq!(&got[..n], &[i; 50][..]);
        }
    }
}
