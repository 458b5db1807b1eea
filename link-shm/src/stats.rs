//! Counters of a shared-memory link end.

use std::sync::Arc;

link_types::counters! {
    /// The raw counters at one moment (the public [`ShmStats`] adds the
    /// totals derived from them).
    pub(crate) struct Raw;
    /// The live counters of one link end. Each `tx_*` is written only by
    /// the sending half and each `rx_*` only by the receiving half (so they
    /// count with [`Counter::bump`](link_types::Counter::bump)); wake-ups
    /// and validation failures may come from any thread (so with `add`).
    pub(crate) struct Counters {
        /// Payload bytes committed.
        tx_bytes,
        /// Messages sent in a small slot.
        tx_small,
        /// Messages sent in a large slot.
        tx_large,
        /// Messages sent inside their ring entry.
        tx_inline,
        /// Messages received copied out of their ring entry.
        rx_inline,
        /// Messages received leased in place.
        rx_zero_copy,
        /// Payload bytes received.
        rx_bytes,
        /// `reserve` calls that had to wait for space.
        reserve_waits,
        /// Wake-ups sent to a sleeping peer.
        wakeups_sent,
        /// Words from shared memory that failed validation.
        validation_failures,
    }
}

/// A handle to a link end's counters.
#[derive(Debug, Clone)]
pub struct ShmStatsHandle(pub(crate) Arc<Counters>);

/// The counters of a shared-memory link end at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShmStats {
    /// Messages committed.
    pub tx_messages: u64,
    /// Payload bytes committed.
    pub tx_bytes: u64,
    /// Messages sent in a small slot.
    pub tx_small: u64,
    /// Messages sent in a large slot.
    pub tx_large: u64,
    /// Messages of up to 112 bytes sent inside their ring entry.
    pub tx_inline: u64,
    /// Messages received.
    pub rx_messages: u64,
    /// Of those, copied out of their ring entry (up to 112 bytes).
    pub rx_inline: u64,
    /// Of those, leased in place (zero-copy).
    pub rx_zero_copy: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// `reserve` calls that had to wait for space.
    pub reserve_waits: u64,
    /// Wake-ups sent to a sleeping peer (eventfd writes).
    pub wakeups_sent: u64,
    /// Words read from shared memory that failed validation (the link then
    /// fails with a protocol error).
    pub validation_failures: u64,
}

impl ShmStatsHandle {
    /// Read every counter.
    pub fn snapshot(&self) -> ShmStats {
        let r = self.0.snapshot();
        // Message totals are the sums of their kinds (one counter fewer to
        // bump per message).
        ShmStats {
            tx_messages: r.tx_small + r.tx_large + r.tx_inline,
            tx_bytes: r.tx_bytes,
            tx_small: r.tx_small,
            tx_large: r.tx_large,
            tx_inline: r.tx_inline,
            rx_messages: r.rx_inline + r.rx_zero_copy,
            rx_inline: r.rx_inline,
            rx_zero_copy: r.rx_zero_copy,
            rx_bytes: r.rx_bytes,
            reserve_waits: r.reserve_waits,
            wakeups_sent: r.wakeups_sent,
            validation_failures: r.validation_failures,
        }
    }
}
