//! Connecting two processes: one creates the segment and the wake-up
//! descriptors and hands them over a Unix socket (`SCM_RIGHTS`); the socket
//! stays open as the sign of life of each side.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};

use crate::link::{Fds, ShmLink};
use crate::region::{Layout, MAGIC, Region};
use crate::sys::{self, HANDOFF_FDS, Mapping};
use crate::{ShmConfig, ShmError};

/// The environment variable that tells a spawned child which inherited
/// descriptor is its end of the connection socket.
pub const FD_ENV: &str = "LINKSTREAM_SHM_FD";

/// Accepts shared-memory connections on a Unix socket path.
#[derive(Debug)]
pub struct ShmListener {
    listener: UnixListener,
    config: ShmConfig,
}

// r[impl shm.connect]
impl ShmListener {
    /// Listen on `path` (an existing socket file there is replaced).
    pub fn bind(path: impl AsRef<Path>, config: &ShmConfig) -> Result<ShmListener, ShmError> {
        Layout::new(crate::link::geometry(config)).map_err(ShmError::InvalidConfig)?;
        let _ = std::fs::remove_file(path.as_ref());
        let listener = UnixListener::bind(path).map_err(crate::error::io("bind"))?;
        Ok(ShmListener {
            listener,
            config: config.clone(),
        })
    }

    /// Accept one peer: create a segment for it and hand it over.
    pub async fn accept(&self) -> Result<ShmLink, ShmError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(crate::error::io("accept"))?;
        offer(stream, &self.config).await
    }
}

/// The creating side: make the segment, send it, build end A.
async fn offer(stream: UnixStream, config: &ShmConfig) -> Result<ShmLink, ShmError> {
    let (region, seg, fds) = crate::link::create_segment(config)?;
    let mut hello = [0u8; 16];
    hello[..8].copy_from_slice(&MAGIC.to_le_bytes());
    hello[8..].copy_from_slice(&(region.layout.total as u64).to_le_bytes());
    loop {
        stream
            .writable()
            .await
            .map_err(crate::error::io("handoff"))?;
        let all = [
            &seg,
            &*fds.data[0],
            &*fds.space[0],
            &*fds.data[1],
            &*fds.space[1],
        ];
        match sys::send_fds(&stream, &hello, &all) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                return Err(ShmError::Io {
                    op: "handoff",
                    source: e,
                });
            }
        }
    }
    ShmLink::end(region, Arc::new(seg), &fds, 0, config, Some(stream))
}

/// The joining side: receive the segment, check it, build end B.
async fn join(stream: UnixStream, config: &ShmConfig) -> Result<ShmLink, ShmError> {
    let mut hello = [0u8; 16];
    let (n, fds) = loop {
        stream
            .readable()
            .await
            .map_err(crate::error::io("handoff"))?;
        match sys::recv_fds(&stream, &mut hello) {
            Ok(x) => break x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                return Err(ShmError::Io {
                    op: "handoff",
                    source: e,
                });
            }
        }
    };
    let bad = |why: String| ShmError::Protocol(why);
    if n != 16 || u64::from_le_bytes(hello[..8].try_into().unwrap()) != MAGIC {
        return Err(bad(format!(
            "not a linkstream shared-memory offer ({n} bytes)"
        )));
    }
    if fds.len() != HANDOFF_FDS {
        return Err(bad(format!(
            "{} descriptors offered, {HANDOFF_FDS} expected",
            fds.len()
        )));
    }
    let total = u64::from_le_bytes(hello[8..].try_into().unwrap());
    let total = usize::try_from(total).map_err(|_| bad("segment length out of range".into()))?;
    let mut fds = fds.into_iter();
    let seg = fds.next().unwrap();
    let map = Mapping::map(&seg, total).map_err(|e| bad(format!("segment: {e}")))?;
    // r[impl shm.validate]
    let region = Region::open(map).map_err(|why| bad(format!("segment header: {why}")))?;
    let mut next = || Arc::new(fds.next().unwrap());
    let (d0, s0, d1, s1) = (next(), next(), next(), next());
    let fds = Fds {
        data: [d0, d1],
        space: [s0, s1],
    };
    let config = ShmConfig {
        spin: config.spin,
        ..config.clone()
    };
    ShmLink::end(region, Arc::new(seg), &fds, 1, &config, Some(stream))
}

impl ShmLink {
    /// Connect to a [`ShmListener`] at `path`. The segment's sizes are the
    /// listener's; `config` gives this end's wake-up policy.
    pub async fn connect(path: impl AsRef<Path>, config: &ShmConfig) -> Result<ShmLink, ShmError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(crate::error::io("connect"))?;
        join(stream, config).await
    }

    // r[impl shm.connect]
    /// Start `command` as a child process connected to a new link: the
    /// child inherits one end of a socket pair (its number in the
    /// environment variable [`FD_ENV`]) and calls [`ShmLink::from_parent`].
    pub async fn spawn(
        command: &mut Command,
        config: &ShmConfig,
    ) -> Result<(ShmLink, Child), ShmError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(crate::error::io("socketpair"))?;
        sys::inheritable(&theirs).map_err(crate::error::io("fcntl"))?;
        let child = command
            .env(FD_ENV, theirs.as_raw_fd().to_string())
            .spawn()
            .map_err(crate::error::io("spawn"))?;
        drop(theirs);
        ours.set_nonblocking(true)
            .map_err(crate::error::io("set_nonblocking"))?;
        let stream = UnixStream::from_std(ours).map_err(crate::error::io("register socket"))?;
        let link = offer(stream, config).await?;
        Ok((link, child))
    }

    /// In a child started by [`ShmLink::spawn`]: join the parent's link.
    pub async fn from_parent(config: &ShmConfig) -> Result<ShmLink, ShmError> {
        let fd: i32 = std::env::var(FD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ShmError::InvalidConfig(format!("{FD_ENV} is not set to a descriptor number"))
            })?;
        let fd = sys::adopt_socket(fd).map_err(crate::error::io("inherited socket"))?;
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)
            .map_err(crate::error::io("set_nonblocking"))?;
        let stream = UnixStream::from_std(std).map_err(crate::error::io("register socket"))?;
        join(stream, config).await
    }
}
