//! Counters of a WebSocket link.

use std::sync::Arc;

link_types::counters! {
    /// The counters of a WebSocket link at one moment.
    pub struct WsStats;
    /// Live counters of one WebSocket link, shared by its halves. Each
    /// counter belongs to the sending or the receiving half, which alone
    /// writes it (so they count with
    /// [`Counter::bump`](link_types::Counter::bump)).
    pub(crate) struct Counters {
        /// Messages committed.
        tx_messages,
        /// Payload bytes committed.
        tx_bytes,
        /// Messages delivered by `recv`.
        rx_messages,
        /// Payload bytes delivered by `recv`.
        rx_bytes,
        /// `reserve` calls that had to wait (for the socket, or for the
        /// browser's `bufferedAmount` to fall).
        reserve_waits,
        /// Text messages refused (the link was not configured to accept text).
        rx_text_rejected,
        /// Messages refused for being above the maximum payload.
        rx_oversize,
        /// Other protocol violations by the peer that ended the link.
        rx_protocol_errors,
        /// Browser: the receive queue went over its limit and the link failed.
        rx_overflow,
        /// Pings received (answered by the framing layer).
        pings,
        /// Native: bytes that had arrived but were never read because the
        /// receiving half was dropped (discarded as the connection ended).
        rx_discarded_bytes,
    }
}

/// A handle to a link's counters; [`WsStatsHandle::snapshot`] reads them.
#[derive(Debug, Clone)]
pub struct WsStatsHandle(pub(crate) Arc<Counters>);

impl WsStatsHandle {
    /// Read every counter.
    pub fn snapshot(&self) -> WsStats {
        self.0.snapshot()
    }
}
