//! The admission hook of a many-peer endpoint (`udp.endpoint.retry`).
//!
//! An endpoint that demultiplexes datagrams by source address sees a new
//! source's first datagram before any protocol state exists for it. Under
//! load it may ask the protocol above, through an [`AdmissionGate`], to
//! answer that datagram statelessly (e.g. with a retry token) instead of
//! making a peer. The endpoint knows nothing of the protocol's messages; the
//! gate knows nothing of sockets.

use std::net::SocketAddr;

/// What an endpoint does with the first datagram of a source it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Make a peer whose address is not validated yet.
    Admit,
    /// Make a peer whose address is already validated (the datagram carried
    /// proof, e.g. a valid retry token).
    AdmitValidated,
    /// Send the bytes the gate wrote into `reply` back to the source and
    /// keep no state for it.
    Reply,
    /// Drop the datagram (the endpoint counts it).
    Drop,
}

/// Decides, without keeping per-source state, whether a new source may
/// become a peer. Implemented by the protocol above the link (the session's
/// retry gate); the link calls it.
pub trait AdmissionGate: Send + Sync {
    /// The first datagram `datagram` from the unknown `source` arrived.
    /// `demand_proof` is true when the endpoint is under load (or configured
    /// to always demand proof): the gate should then admit only a datagram
    /// that proves the source receives at its address, and answer others
    /// with a small reply (at most three times the datagram's length) that
    /// lets an honest source prove it. `reply` is empty on entry.
    fn admit(
        &self,
        source: SocketAddr,
        datagram: &[u8],
        demand_proof: bool,
        reply: &mut Vec<u8>,
    ) -> Admission;
}
