//! Counters of a UDP link or endpoint: nothing is dropped without being
//! counted here.

use std::sync::Arc;

link_types::counters! {
    /// A snapshot of the counters.
    pub struct UdpStats;
    /// The live counters, shared by every half that counts.
    pub(crate) struct Counters {
        /// Datagrams handed to the kernel.
        tx_datagrams,
        /// Payload bytes handed to the kernel.
        tx_bytes,
        /// `sendmmsg` calls that sent something.
        tx_syscalls,
        /// Messages those calls handed to the kernel: a datagram on its own, or a GSO run.
        tx_messages,
        /// Messages sent as a GSO run (each carries several datagrams).
        tx_gso_sends,
        /// Times the kernel refused GSO and the link fell back to plain `sendmmsg`.
        tx_gso_fallbacks,
        /// Transient send errors (ECONNREFUSED from stale ICMP, ENOBUFS, no route: ENETUNREACH, EHOSTUNREACH, ENETDOWN, EHOSTDOWN) that were counted and survived.
        tx_transient_errors,
        /// Datagrams the kernel would not take and that were dropped (ENOBUFS, EMSGSIZE, EPERM, no route).
        tx_dropped,
        /// Times a sender waited for the socket to become writable.
        tx_waits,
        /// Datagrams received and queued for the receiver (after the drops below).
        rx_datagrams,
        /// Payload bytes of those datagrams.
        rx_bytes,
        /// `recvmmsg` calls that returned something.
        rx_syscalls,
        /// Receive buffers that held several datagrams coalesced by GRO.
        rx_gro_buffers,
        /// Datagrams larger than the maximum payload, dropped.
        rx_oversized,
        /// Datagrams the kernel truncated, dropped.
        rx_truncated,
        /// Datagrams the kernel dropped because the socket's receive queue was full (the socket's `sk_drops`, read with `SO_MEMINFO`: the counter `SO_RXQ_OVFL` reports).
        rx_kernel_drops,
        /// Transient receive errors (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH from ICMP) that were counted and survived.
        rx_transient_errors,
        /// Receive slabs allocated beyond the initial ring because the application held datagrams of every slab.
        rx_buffer_growth,
        /// Receive slabs beyond the initial ring that the ring let go of again, once it had not needed to grow for a second (each freed when the application drops its last datagram in it).
        rx_buffer_released,
        /// Gauge: bytes of receive slabs the ring holds now (its initial slabs, plus any it has grown by and not yet let go of).
        rx_ring_bytes,
        /// Endpoint: datagrams from new peers dropped because `max_peers` was reached or the accept queue was full (or after the endpoint handle was dropped, or whose source address could not be read).
        rx_peer_refused,
        /// Endpoint: datagrams dropped because a peer's queue was full.
        rx_peer_queue_full,
        /// Endpoint: datagrams for a peer whose link was dropped.
        rx_peer_gone,
        /// Endpoint: peers forgotten after the idle timeout.
        peers_expired,
        /// Endpoint: unvalidated peers evicted (the oldest first) to make room for a new source.
        unvalidated_evicted,
        /// Endpoint: datagrams queued for an evicted unvalidated peer whose link was never accepted (dropped with it).
        rx_evicted,
        /// Endpoint: peers whose address the protocol above validated.
        peers_validated,
        /// Endpoint: validations refused because `max_peers` validated peers already existed (the peer stays unvalidated).
        validation_refused,
        /// Endpoint: payload bytes received from sources whose address is not validated (whatever became of them).
        unvalidated_rx_bytes,
        /// Endpoint: payload bytes sent to addresses not validated (link datagrams and retry replies).
        unvalidated_tx_bytes,
        /// Endpoint: datagrams to unvalidated peers dropped by the amplification limit.
        tx_amplification_held,
        /// Endpoint: datagrams from new sources dropped by the per-source handshake rate limit.
        rx_rate_limited,
        /// Endpoint: retry replies sent (stateless, no peer made).
        retries_sent,
        /// Endpoint: datagrams from new sources the admission gate dropped, or whose reply could not be sent.
        rx_gate_dropped,
        /// Endpoint: peers admitted already validated (a valid retry token).
        peers_admitted_validated,
    }
}

/// A live view of a link's or endpoint's counters.
#[derive(Clone, Default)]
pub struct UdpStatsHandle(Arc<Counters>);

impl UdpStatsHandle {
    /// A view of `counters`.
    pub(crate) fn of(counters: Arc<Counters>) -> Self {
        UdpStatsHandle(counters)
    }

    /// The live counters, for a half of the link to count into.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.0.clone()
    }

    /// The counters now.
    pub fn snapshot(&self) -> UdpStats {
        self.0.snapshot()
    }
}

impl std::fmt::Debug for UdpStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
