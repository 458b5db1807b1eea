//! Errors of setting up shared-memory links.

use std::fmt;

/// Why a shared-memory link could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum ShmError {
    /// A system call failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting is out of range.
    InvalidConfig(String),
    /// Not called from within a tokio runtime (the wake-up descriptors need
    /// its reactor).
    NoRuntime,
    /// The peer's offer (segment, descriptors, header) is not usable.
    Protocol(String),
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::Io { op, source } => write!(f, "shared memory: {op} failed: {source}"),
            ShmError::InvalidConfig(why) => write!(f, "invalid shared-memory configuration: {why}"),
            ShmError::Protocol(why) => write!(f, "shared-memory peer: {why}"),
            ShmError::NoRuntime => {
                f.write_str("shared-memory links must be created inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl link_types::FromIoFailure for ShmError {
    fn from_io_failure(op: &'static str, source: std::io::Error) -> Self {
        ShmError::Io { op, source }
    }
}

/// `map_err(io("what was being done"))`, the helper every link crate shares.
pub(crate) use link_types::io_failed as io;
