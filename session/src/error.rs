//! The session's error type.

use std::fmt;
use std::time::Duration;

use link_types::LinkError;

/// Why the host refused a handshake (sent in a `Reject` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No wire version in common.
    Version,
    /// One side requires encryption and the other does not offer it.
    Encryption,
    /// The host's frames may be larger than the client accepts.
    MaxFrame,
    /// The links' payloads are too small for a shard.
    ShardSize,
    /// A reason this version does not know.
    Other(u8),
}

impl RejectReason {
    /// Wire code.
    pub fn to_u8(self) -> u8 {
        match self {
            RejectReason::Version => 1,
            RejectReason::Encryption => 2,
            RejectReason::MaxFrame => 3,
            RejectReason::ShardSize => 4,
            RejectReason::Other(c) => c,
        }
    }

    /// From a wire code.
    pub fn from_u8(c: u8) -> Self {
        match c {
            1 => RejectReason::Version,
            2 => RejectReason::Encryption,
            3 => RejectReason::MaxFrame,
            4 => RejectReason::ShardSize,
            c => RejectReason::Other(c),
        }
    }
}

/// Why a session operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The link under the session failed.
    Link(LinkError),
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// No answer to the handshake in time.
    HandshakeTimeout {
        /// How long the side waited.
        waited: Duration,
        /// Handshake messages that failed authentication meanwhile (a
        /// non-zero count usually means the two sides hold different keys).
        auth_failures: u64,
    },
    /// The host refused the handshake.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The host's explanation.
        detail: String,
    },
    /// The client refused the host's parameters.
    Incompatible(String),
    /// The host could not prove it holds the pre-shared key.
    AuthFailed,
    /// The operating system (or browser) could not supply random bytes.
    Random(getrandom::Error),
    /// A frame larger than the agreed maximum.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The agreed maximum.
        max: usize,
    },
    /// Too many input events wait for acknowledgement.
    InputBacklog {
        /// The limit.
        max: usize,
    },
    /// An input event the wire cannot carry.
    InvalidInput(&'static str),
    /// The packet counter of a direction ran out (the session must end
    /// rather than reuse a nonce).
    CounterExhausted,
    /// The peer closed the link during the handshake.
    ClosedDuringHandshake,
    /// Nothing arrived from the peer for this long (lossy links).
    IdleTimeout(Duration),
    /// The client started a new handshake from the session's address (it
    /// restarted) after being silent for the host's `restart_grace`; the
    /// host should drop this session's link so the new one can begin.
    ClientRestarted,
    /// The Reed-Solomon encoder refused a block (a shard layout it cannot
    /// code: a bug, not a configuration the caller chose).
    Fec(crate::fec::FecError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Link(e) => write!(f, "link failed: {e}"),
            SessionError::InvalidConfig(s) => write!(f, "invalid session configuration: {s}"),
            SessionError::HandshakeTimeout {
                waited,
                auth_failures,
            } => {
                write!(f, "no handshake answer within {waited:?}")?;
                if *auth_failures > 0 {
                    write!(
                        f,
                        " ({auth_failures} messages failed authentication: different keys?)"
                    )?;
                }
                Ok(())
            }
            SessionError::Rejected { reason, detail } => {
                write!(f, "host refused the session ({reason:?}): {detail}")
            }
            SessionError::Incompatible(s) => write!(f, "host parameters not acceptable: {s}"),
            SessionError::AuthFailed => {
                f.write_str("host failed to prove the pre-shared key (different keys?)")
            }
            SessionError::Random(e) => write!(f, "no random bytes: {e}"),
            SessionError::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the agreed maximum of {max}"
                )
            }
            SessionError::InputBacklog { max } => {
                write!(f, "{max} input events already wait for acknowledgement")
            }
            SessionError::InvalidInput(s) => write!(f, "invalid input event: {s}"),
            SessionError::CounterExhausted => f.write_str("packet counter exhausted"),
            SessionError::ClosedDuringHandshake => f.write_str("link closed during the handshake"),
            SessionError::IdleTimeout(d) => write!(f, "nothing received from the peer for {d:?}"),
            SessionError::ClientRestarted => {
                f.write_str("the client restarted (a new handshake from its address)")
            }
            SessionError::Fec(e) => write!(f, "encoding failed: {e}"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Link(e) => Some(e),
            SessionError::Random(e) => Some(e),
            SessionError::Fec(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LinkError> for SessionError {
    fn from(e: LinkError) -> Self {
        SessionError::Link(e)
    }
}

#[cfg(test)]
mod fec_error_tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_fec_failure_is_its_own_error_with_its_cause() {
        let e = SessionError::Fec(crate::fec::FecError("shard size 0".into()));
        assert_eq!(e.to_string(), "encoding failed: FEC: shard size 0");
        assert_eq!(
            e.source().expect("a source").to_string(),
            "FEC: shard size 0"
        );
        assert!(!matches!(e, SessionError::InvalidConfig(_)));
    }
}
