//! Counters of a WebSocket link.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one WebSocket link, shared by its halves.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tx_messages: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_messages: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub reserve_waits: AtomicU64,
    pub rx_text_rejected: AtomicU64,
    pub rx_oversize: AtomicU64,
    pub rx_protocol_errors: AtomicU64,
    pub rx_overflow: AtomicU64,
    pub pings: AtomicU64,
}

impl Counters {
    /// Add `n` to a counter that only one half of the link writes (each
    /// counter belongs to the sending or the receiving half): a plain load
    /// and store, no read-modify-write on the hot path. Readers may see a
    /// value a moment old, never a torn one.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// A handle to a link's counters; [`WsStatsHandle::snapshot`] reads them.
#[derive(Debug, Clone)]
pub struct WsStatsHandle(pub(crate) Arc<Counters>);

/// The counters of a WebSocket link at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Messages committed.
    pub tx_messages: u64,
    /// Payload bytes committed.
    pub tx_bytes: u64,
    /// Messages delivered by `recv`.
    pub rx_messages: u64,
    /// Payload bytes delivered by `recv`.
    pub rx_bytes: u64,
    /// `reserve` calls that had to wait (for the socket, or for the
    /// browser's `bufferedAmount` to fall).
    pub reserve_waits: u64,
    /// Text messages refused (the link was not configured to accept text).
    pub rx_text_rejected: u64,
    /// Messages refused for being above the maximum payload.
    pub rx_oversize: u64,
    /// Other protocol violations by the peer that ended the link.
    pub rx_protocol_errors: u64,
    /// Browser: the receive queue went over its limit and the link failed.
    pub rx_overflow: u64,
    /// Pings received (answered by the framing layer).
    pub pings: u64,
}

impl WsStatsHandle {
    /// Read every counter.
    pub fn snapshot(&self) -> WsStats {
        let c = &self.0;
        WsStats {
            tx_messages: c.tx_messages.load(Relaxed),
            tx_bytes: c.tx_bytes.load(Relaxed),
            rx_messages: c.rx_messages.load(Relaxed),
            rx_bytes: c.rx_bytes.load(Relaxed),
            reserve_waits: c.reserve_waits.load(Relaxed),
            rx_text_rejected: c.rx_text_rejected.load(Relaxed),
            rx_oversize: c.rx_oversize.load(Relaxed),
            rx_protocol_errors: c.rx_protocol_errors.load(Relaxed),
            rx_overflow: c.rx_overflow.load(Relaxed),
            pings: c.pings.load(Relaxed),
        }
    }
}
