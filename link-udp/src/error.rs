//! Errors of setting up UDP links and endpoints.

use std::fmt;
use std::net::SocketAddr;

/// Why a UDP link or endpoint could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum UdpError {
    /// A socket call failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not called from within a tokio runtime (the socket needs its reactor).
    NoRuntime,
    /// A setting is out of range.
    InvalidConfig(String),
    /// The endpoint already serves `max_peers` peers.
    PeerLimit(usize),
    /// The endpoint already has a link to this peer.
    PeerExists(SocketAddr),
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Io { op, source } => write!(f, "UDP socket: {op} failed: {source}"),
            UdpError::NoRuntime => f.write_str("UDP links must be created inside a tokio runtime"),
            UdpError::InvalidConfig(why) => write!(f, "invalid UDP configuration: {why}"),
            UdpError::PeerLimit(n) => {
                write!(f, "the endpoint already serves its limit of {n} peers")
            }
            UdpError::PeerExists(a) => write!(f, "the endpoint already has a link to {a}"),
        }
    }
}

impl std::error::Error for UdpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UdpError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl link_types::FromIoFailure for UdpError {
    fn from_io_failure(op: &'static str, source: std::io::Error) -> Self {
        UdpError::Io { op, source }
    }
}

/// `map_err(io("what was being done"))`, the helper every link crate shares.
pub(crate) use link_types::io_failed as io;
