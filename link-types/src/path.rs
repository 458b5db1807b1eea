//! What the path under a sending half is doing, as its transport sees it.

use core::time::Duration;

// r[impl link.path.sample]
/// One look at the path under a link's sending half, taken by
/// [`LinkTx::path_sample`](crate::LinkTx::path_sample): how much the peer
/// has received, how fast, the round trip, and what is still queued on this
/// side. A stream protocol above (the session) turns a series of these into
/// a bitrate its encoder can follow.
///
/// Counters are cumulative since the link opened, so the caller measures
/// rates over whatever interval it likes (two samples' `delivered_bytes`
/// apart, divided by the time between them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSample {
    /// Bytes the peer's transport acknowledged since the link opened
    /// (framing included). Never decreases.
    pub delivered_bytes: u64,
    /// The transport's own latest delivery-rate sample, bytes per second;
    /// 0 when it has none yet.
    pub delivery_rate: u64,
    /// Smoothed round-trip time; zero when not measured yet.
    pub rtt: Duration,
    /// The least round-trip time seen on this connection; zero when not
    /// measured yet.
    pub min_rtt: Duration,
    /// Bytes committed on this half and not yet handed to the network:
    /// what the link still queues plus what its transport holds unsent.
    pub unsent_bytes: u64,
    /// Bytes handed to the network and not yet acknowledged (an estimate
    /// where the transport counts in packets).
    pub in_flight_bytes: u64,
    /// The delivery-rate sample was taken while the sender had too little
    /// to send (application-limited): the path may carry more than it
    /// shows.
    pub app_limited: bool,
}
