//! Counters of a shared-memory link end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tx_bytes: AtomicU64,
    pub tx_small: AtomicU64,
    pub tx_large: AtomicU64,
    pub tx_inline: AtomicU64,
    pub rx_inline: AtomicU64,
    pub rx_zero_copy: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub reserve_waits: AtomicU64,
    pub wakeups_sent: AtomicU64,
    pub validation_failures: AtomicU64,
}

impl Counters {
    /// Add to a counter that more than one thread may write (wake-ups,
    /// validation failures).
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Add to a counter that only one half writes (`tx_*` by the sending
    /// half, `rx_*` by the receiving half): a plain load and store, no
    /// read-modify-write on the hot path.
    #[inline]
    pub fn bump(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
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
        let c = &self.0;
        // Message totals are the sums of their kinds (one counter fewer to
        // bump per message).
        let (tx_small, tx_large, tx_inline) = (
            c.tx_small.load(Relaxed),
            c.tx_large.load(Relaxed),
            c.tx_inline.load(Relaxed),
        );
        let (rx_inline, rx_zero_copy) = (c.rx_inline.load(Relaxed), c.rx_zero_copy.load(Relaxed));
        ShmStats {
            tx_messages: tx_small + tx_large + tx_inline,
            tx_bytes: c.tx_bytes.load(Relaxed),
            tx_small,
            tx_large,
            tx_inline,
            rx_messages: rx_inline + rx_zero_copy,
            rx_inline,
            rx_zero_copy,
            rx_bytes: c.rx_bytes.load(Relaxed),
            reserve_waits: c.reserve_waits.load(Relaxed),
            wakeups_sent: c.wakeups_sent.load(Relaxed),
            validation_failures: c.validation_failures.load(Relaxed),
        }
    }
}
