//! The error type shared by every link.

use std::fmt;
use std::sync::Arc;

/// Why a link operation failed.
///
/// Cheap to clone (sources are behind `Arc`), so that a link can return the
/// same error from every call after it failed (`link.error.sticky`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkError {
    /// This side already closed its sending half; nothing more can be sent.
    Closed,
    /// The peer went away without a graceful close: its half was dropped,
    /// its process died, or the connection was reset.
    PeerGone,
    /// `alloc(len)` asked for more than the link's maximum payload.
    TooLarge {
        /// The requested length.
        len: usize,
        /// The link's maximum payload.
        max: usize,
    },
    /// The peer broke the transport's protocol (a malformed frame, a text
    /// WebSocket message, a corrupt shared-memory descriptor...).
    Protocol(Arc<str>),
    /// An operating-system I/O error.
    Io(Arc<std::io::Error>),
    /// Any other transport-specific failure.
    Transport(Arc<dyn std::error::Error + Send + Sync>),
}

impl LinkError {
    /// A protocol violation with a human-readable reason.
    pub fn protocol(reason: impl Into<String>) -> Self {
        LinkError::Protocol(Arc::from(reason.into()))
    }

    /// Wrap any transport-specific error.
    pub fn transport(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        LinkError::Transport(Arc::new(err))
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Closed => f.write_str("the link was closed by this side"),
            LinkError::PeerGone => f.write_str("the peer went away without closing the link"),
            LinkError::TooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the link's maximum payload of {max} bytes"
                )
            }
            LinkError::Protocol(reason) => write!(f, "protocol violation by the peer: {reason}"),
            LinkError::Io(e) => write!(f, "I/O error: {e}"),
            LinkError::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Io(e) => Some(e.as_ref()),
            LinkError::Transport(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(Arc::new(e))
    }
}

/// Setup errors with an `Io { op, source }` variant: a system call that
/// failed while a link was being made (`op` says which, `source` is the OS
/// error). Lets every crate share [`io_failed`].
pub trait FromIoFailure {
    /// The error for `op` failing with `source`.
    fn from_io_failure(op: &'static str, source: std::io::Error) -> Self;
}

/// `result.map_err(io_failed("bind"))`: the I/O error, named by what was
/// being done, as the crate's own setup error.
pub fn io_failed<E: FromIoFailure>(op: &'static str) -> impl FnOnce(std::io::Error) -> E {
    move |source| E::from_io_failure(op, source)
}
