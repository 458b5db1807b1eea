//! The system calls under the shared-memory link: a memfd segment mapped
//! into memory, eventfds for wake-ups, and descriptor passing over a Unix
//! socket. The crate's other `unsafe` is in `region.rs` (typed access to the
//! segment), `ring.rs` (entry and slot bytes at checked offsets) and
//! `link.rs` (a write slot's and a lease's bytes as slices); every block
//! carries its `SAFETY` argument.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A shared mapping of a memory file, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// `region.rs`, which uses atomics for shared words and raw, bounds-checked
// copies for payload bytes. Moving or sharing the handle between threads is
// what the link does by design.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Create an anonymous memory file of `len` bytes and map it.
    pub fn create(len: usize) -> io::Result<(Mapping, OwnedFd)> {
        let name = c"linkstream-shm";
        // SAFETY: `name` is a valid NUL-terminated string; flags are valid.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own memfd with a length that fits off_t.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping::map(&fd, len)?;
        Ok((map, fd))
    }

    /// Map `len` bytes of the memory file `fd`, which must be at least that
    /// long (checked with fstat: a peer could hand us a short file).
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: an all-zero `stat` is a valid out-parameter for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open; `st` is a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < len as u64 || len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment is {} bytes, {len} expected", st.st_size),
            ));
        }
        // SAFETY: a fresh shared read-write mapping of a file at least `len`
        // bytes long; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null without failing"),
            len,
        })
    }

    /// The first byte of the mapping.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Bytes mapped (never zero: `map` refuses an empty mapping).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The 32-bit word at byte offset `off` (4-aligned, inside the mapping).
    pub(crate) fn word(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: aligned and inside the mapping (checked above), which lives
        // as long as the borrow of `self`; shared words are only accessed
        // atomically.
        unsafe { &*self.ptr.as_ptr().add(off).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `mmap` returned; nothing
        // refers to it any more (every user holds an `Arc` of the mapping).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add one to an eventfd (wakes a reader of it). A full counter
/// (EAGAIN) means a wake-up is pending anyway.
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to an eventfd.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

/// Reset an eventfd; returns whether it had been signalled.
pub(crate) fn eventfd_drain(fd: &OwnedFd) -> io::Result<bool> {
    let mut v: u64 = 0;
    // SAFETY: reading 8 bytes into a live u64 from an eventfd.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Register an eventfd with the tokio reactor, for readability.
pub(crate) fn async_eventfd(
    fd: std::sync::Arc<OwnedFd>,
) -> io::Result<tokio::io::unix::AsyncFd<std::sync::Arc<OwnedFd>>> {
    // SAFETY: the `Arc<OwnedFd>` moved into the `AsyncFd` keeps the
    // descriptor open, and always the same one, for the `AsyncFd`'s whole
    // life.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(io::Error::from)
    }
}

/// How many descriptors a connection hands over: the segment, then the data
/// and space eventfds of direction 0, then of direction 1.
pub(crate) const HANDOFF_FDS: usize = 5;

/// Send `bytes` with `fds` attached (`SCM_RIGHTS`) on a Unix stream socket.
pub(crate) fn send_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[&OwnedFd]) -> io::Result<()> {
    assert!(fds.len() <= HANDOFF_FDS);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    let payload = fds.len() * 4;
    // SAFETY: `msg` points at live locals (`iov`, `cbuf`); the control
    // buffer is 8-aligned and large enough for CMSG_SPACE(5 * 4) = 40 bytes;
    // we write exactly `fds.len()` ints into the cmsg data.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(payload as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
        }
        let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short handoff write",
            ));
        }
    }
    Ok(())
}

/// Receive up to `buf.len()` bytes and the descriptors attached to them.
/// Every descriptor received is owned by the result (so none leaks, even
/// when the caller then refuses them).
pub(crate) fn recv_fds(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    #[repr(C, align(8))]
    struct Cmsg([u8; 256]);
    let mut cbuf = Cmsg([0; 256]);
    let mut fds = Vec::new();
    // SAFETY: `msg` points at live locals; the kernel writes at most
    // `msg_controllen` bytes of control data; we walk the cmsgs with the
    // CMSG_* macros, which stay within that length, and take ownership of
    // every descriptor in every SCM_RIGHTS cmsg.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.0.len() as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "descriptors truncated",
            ));
        }
        n as usize
    };
    Ok((n, fds))
}

/// Let the descriptor survive `exec` (clear `FD_CLOEXEC`), so a child
/// started next inherits it.
pub(crate) fn inheritable(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor we hold.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take ownership of an inherited descriptor number.
///
/// Fails unless `fd` is an open Unix stream socket (checked with fstat and
/// getsockopt), so a wrong number in the environment is an error, not
/// someone else's descriptor.
pub(crate) fn adopt_socket(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only reads the descriptor table entry.
    if fd < 0 || unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not open"),
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: the descriptor is open and a socket; the environment variable
    // naming it was set for this process by the parent that created it for
    // us, and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
