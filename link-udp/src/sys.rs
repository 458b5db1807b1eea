//! The system calls of the UDP link: `sendmmsg` (with UDP GSO), `recvmmsg`
//! (with UDP GRO), the socket drop counter (`SO_MEMINFO`), and socket options.
//!
//! This is the only module with `unsafe`: each block builds `msghdr`s that
//! point at buffers the caller keeps alive for the duration of the call, and
//! reads back only what the kernel reports it wrote.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// `SOL_UDP` (the UDP protocol level for socket options).
pub const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT`: the GSO segment size, as a socket option or a cmsg.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO`: enable receive coalescing; the cmsg carries the segment size.
pub const UDP_GRO: libc::c_int = 104;

/// Most `mmsghdr`s handed to one `sendmmsg`/`recvmmsg`.
pub const MAX_BATCH: usize = 64;
/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload one GSO send may carry in total.
pub const MAX_GSO_BYTES: usize = 65_000;

/// Set an integer socket option.
pub fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives on the stack for the whole call and its size is
    // passed exactly; `fd` is a socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One message of a send batch: `iov_count` iovecs starting at `iov_start`,
/// sent as one datagram, or, when `segment > 0`, as a GSO run cut into
/// `datagrams` datagrams of `segment` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct SendMsg {
    /// First iovec of this message.
    pub iov_start: usize,
    /// Number of iovecs in it.
    pub iov_count: usize,
    /// Number of datagrams it carries.
    pub datagrams: usize,
    /// Payload bytes it carries (all its datagrams).
    pub bytes: usize,
    /// GSO segment size, 0 for a plain datagram.
    pub segment: u16,
}

/// cmsg space for one `UDP_SEGMENT` u16, with the alignment cmsgs need.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 32]);

/// `sendmmsg` the given messages to `dest` (or the connected peer).
/// Returns how many messages the kernel took (at least 1), or the error of
/// the first one.
pub fn send_batch(
    fd: RawFd,
    dest: Option<&SockAddr>,
    iovs: &[io::IoSlice<'_>],
    msgs: &[SendMsg],
) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    debug_assert!(
        msgs[..n]
            .iter()
            .all(|m| m.iov_start + m.iov_count <= iovs.len())
    );
    // Only the first `n` entries are set up and handed to the kernel; the
    // rest stay uninitialised and untouched (zeroing all 64 on every call
    // was a measurable share of the sender's own work).
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut cmsgs = [const { MaybeUninit::<CmsgBuf>::uninit() }; MAX_BATCH];
    for (i, m) in msgs[..n].iter().enumerate() {
        // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
        let h = &mut hdrs[i].write(unsafe { zeroed() }).msg_hdr;
        if let Some(d) = dest {
            h.msg_name = d.as_ptr() as *mut libc::c_void;
            h.msg_namelen = d.len();
        }
        // `IoSlice` is ABI-compatible with `iovec` on Unix.
        h.msg_iov = iovs[m.iov_start..].as_ptr() as *mut libc::iovec;
        h.msg_iovlen = m.iov_count as _;
        if m.segment > 0 {
            let buf = &mut cmsgs[i].write(CmsgBuf([0; 32])).0;
            h.msg_control = buf.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure size computation.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
            // SAFETY: msg_control points at 32 aligned, initialised bytes, at
            // least CMSG_SPACE(2) = 24, so the first header and its u16
            // payload fit.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.segment);
            }
        }
    }
    // SAFETY: the first `n` headers are initialised and point at `dest`,
    // `iovs` and `cmsgs`, all alive and unmoved until the call returns; the
    // kernel reads only those `n` (and writes their `msg_len`).
    let rc = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `SO_MEMINFO`: the socket's memory counters, `SK_MEMINFO_DROPS` among them.
const SO_MEMINFO: libc::c_int = 55;
/// Index of the drop counter in the `SO_MEMINFO` array.
const SK_MEMINFO_DROPS: usize = 8;

/// The socket's cumulative drop counter (`sk_drops`: datagrams the kernel
/// dropped because the receive queue was full, the counter `SO_RXQ_OVFL`
/// reports), read in one call instead of a cmsg on every datagram.
pub fn socket_drops(fd: RawFd) -> io::Result<u32> {
    let mut info = [0u32; 16];
    let mut len = size_of::<[u32; 16]>() as libc::socklen_t;
    // SAFETY: `info` and `len` live on the stack for the call; the kernel
    // writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO has no drop counter",
        ));
    }
    Ok(info[SK_MEMINFO_DROPS])
}

/// What `recvmmsg` reported for one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecvMeta {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The kernel cut the datagram to fit (`MSG_TRUNC`).
    pub truncated: bool,
    /// GRO segment size, when the kernel coalesced datagrams.
    pub gro_segment: Option<usize>,
    /// The sender's address.
    pub source: Option<SocketAddr>,
}

/// cmsg space for `UDP_GRO` (int), with room to spare, aligned.
#[repr(C, align(8))]
struct RecvCmsgBuf([u8; 64]);

/// `recvmmsg` into `bufs` (one message per buffer), filling `meta`;
/// source addresses only when `want_source` (a connected socket knows its
/// peer). Returns how many messages arrived.
pub fn recv_batch(
    fd: RawFd,
    bufs: &mut [&mut [u8]],
    meta: &mut [RecvMeta],
    want_source: bool,
) -> io::Result<usize> {
    let n = bufs.len().min(meta.len()).min(MAX_BATCH);
    // Only the first `n` entries are set up and handed to the kernel; the
    // rest stay uninitialised and untouched.
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut cmsgs = [const { MaybeUninit::<RecvCmsgBuf>::uninit() }; MAX_BATCH];
    for i in 0..n {
        let iov = iovs[i].write(libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        });
        // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
        let h = hdrs[i].write(unsafe { zeroed() });
        if want_source {
            h.msg_hdr.msg_name = names[i].as_mut_ptr().cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = size_of::<RecvCmsgBuf>() as _;
    }
    // SAFETY: the first `n` headers are initialised; each points at its own
    // iovec (into a distinct live buffer the caller lent us mutably), its own
    // sockaddr_storage (or none) and its own cmsg buffer, all alive until
    // the call returns; the kernel writes at most the lengths given.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = rc as usize;
    for i in 0..got {
        // SAFETY: headers below `n` (and `got <= n`) were initialised above.
        let hdr = unsafe { hdrs[i].assume_init_ref() };
        let h = &hdr.msg_hdr;
        let mut m = RecvMeta {
            len: (hdr.msg_len as usize).min(bufs[i].len()),
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            ..RecvMeta::default()
        };
        if want_source && h.msg_namelen as usize >= size_of::<libc::sa_family_t>() {
            // SAFETY: the kernel initialised the first `msg_namelen` bytes
            // of names[i]; `sockaddr_from` reads only within them.
            m.source = unsafe { sockaddr_from(names[i].as_ptr(), h.msg_namelen as usize) };
        }
        // SAFETY: the CMSG_* macros walk the control buffer within the
        // `msg_controllen` bytes the kernel reported; each payload is read
        // unaligned and only when its length covers the value's size.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let data_len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (SOL_UDP, UDP_GRO) if data_len >= size_of::<libc::c_int>() => {
                        let seg = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                        if seg > 0 {
                            m.gro_segment = Some(seg as usize);
                        }
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        meta[i] = m;
    }
    Ok(got)
}

/// Decode an IPv4 or IPv6 socket address from a `sockaddr_storage` whose
/// first `len` bytes are initialised.
///
/// # Safety
/// `storage` must point at a `sockaddr_storage` with at least `len`
/// initialised bytes.
unsafe fn sockaddr_from(storage: *const libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    // SAFETY: the caller guarantees `storage` points at a `sockaddr_storage`
    // with `len` initialised bytes; each read below is of a type whose size
    // was checked against `len`, at the start of the storage, unaligned.
    unsafe {
        match (*storage).ss_family as libc::c_int {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let a = std::ptr::read_unaligned(storage.cast::<libc::sockaddr_in>());
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = std::ptr::read_unaligned(storage.cast::<libc::sockaddr_in6>());
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}
