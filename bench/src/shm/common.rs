//! What the two processes of the `shm` suite and every contender share:
//! the child's [`Role`] and the command that starts it, the frame size and
//! slots, our link's configuration, descriptor passing, the runtime and the
//! reader's sum. It imports nothing from its sibling modules, so that the
//! parent ([`super`]), the child ([`mod@super::child`]) and the contenders
//! ([`super::iox`], [`super::raw`]) all import from it and none from
//! another that imports it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use link_shm::ShmConfig;

/// What the child process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Echo 64 B messages on our link, spinning while it waits.
    LinkEchoSpin,
    /// Echo 64 B messages on our link, sleeping while it waits.
    LinkEchoSleep,
    /// Read frames on our link in full; answer an 8-byte message with the sum.
    LinkSink,
    /// iceoryx2 echo, with the setup of our comparison.
    IoxEcho,
    /// iceoryx2 echo as iceoryx2's own benchmark does it (pre-loaned sample).
    IoxEchoOwn,
    /// iceoryx2 frame reader.
    IoxSink,
    /// Raw atomic ping-pong.
    AtomicEcho,
    /// Bare 64 B ring echo.
    RingEcho,
    /// Bare two-process frame pipeline reader.
    PipeSink,
    /// Blocking eventfd ping-pong.
    EventfdEcho,
    /// Unix socket echo.
    UdsEcho,
    /// Unix socket frame reader.
    UdsSink,
}

const ROLES: [(Role, &str); 12] = [
    (Role::LinkEchoSpin, "link-echo-spin"),
    (Role::LinkEchoSleep, "link-echo-sleep"),
    (Role::LinkSink, "link-sink"),
    (Role::IoxEcho, "iox-echo"),
    (Role::IoxEchoOwn, "iox-echo-own"),
    (Role::IoxSink, "iox-sink"),
    (Role::AtomicEcho, "atomic-echo"),
    (Role::RingEcho, "ring-echo"),
    (Role::PipeSink, "pipe-sink"),
    (Role::EventfdEcho, "eventfd-echo"),
    (Role::UdsEcho, "uds-echo"),
    (Role::UdsSink, "uds-sink"),
];

impl Role {
    /// The role's name on the child's command line.
    pub(super) fn name(self) -> &'static str {
        ROLES
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, n)| *n)
            .expect("every role is named")
    }

    pub(super) fn from_name(name: &str) -> Option<Role> {
        ROLES.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
    }
}

pub(super) const FRAME: usize = 8 << 20;

/// Frame buffers in flight, for our link (large slots), iceoryx2
/// (subscriber buffer) and the bare pipeline alike. Two measured best on
/// this machine for every one of them: each more 8 MiB buffer in the cycle
/// pushes the working set further out of the shared cache (a bare
/// two-process pipeline ran at 1.05x a one-process fill-and-read with 2
/// buffers, 0.85x with 3, 0.65x with 4, 0.53x with 6).
pub(super) const FRAME_SLOTS: usize = 2;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(super) fn link_config(spin: Duration) -> ShmConfig {
    ShmConfig {
        large_size: FRAME,
        large_count: FRAME_SLOTS,
        spin,
        ..ShmConfig::default()
    }
}

pub(super) fn child_command(role: Role) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.arg("__shm-child").arg(role.name()).stdin(Stdio::null());
    c
}

/// Sum of every byte, eight at a time: the reader touches the whole frame.
pub(crate) fn read_all(b: &[u8]) -> u64 {
    let mut s = 0u64;
    let chunks = b.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        s = s.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    for &x in rest {
        s = s.wrapping_add(x as u64);
    }
    s
}

/// Keep a descriptor open across `exec` and name it to the child.
pub(crate) fn pass_fd(cmd: &mut Command, name: &str, fd: &impl AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0);
    }
    cmd.env(name, fd.as_raw_fd().to_string());
}

/// Adopt a descriptor named by the parent in the environment.
pub(crate) fn inherited(name: &str) -> OwnedFd {
    let fd: i32 = std::env::var(name)
        .expect("fd variable")
        .parse()
        .expect("fd number");
    // SAFETY: the parent passed this descriptor to us for our sole use.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Let a child that was told to stop exit by itself (so that iceoryx2 can
/// clean up its node), killing it only if it does not.
pub(super) fn finish_graceful(mut child: Child) {
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    finish(child);
}
