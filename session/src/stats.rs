//! Counters for both ends (`session.stats`): serialisable snapshots
//! (`facet::Facet`, JSON through `facet-json`).

use facet::Facet;
use link_types::Counter;

use crate::open::Dropped;

// r[impl session.stats]
/// The session's counters, in the one pattern of every crate
/// (`link_types::counters!`): a live struct the session's tasks count in,
/// and a serialisable snapshot.
macro_rules! session_counters {
    ($(#[$m:meta])* $snap:ident, $cnt:ident { $( $(#[$fm:meta])* $f:ident, )* }) => {
        link_types::counters! {
            $(#[$m])*
            #[derive(Facet)]
            pub struct $snap;
            /// The live counters behind the snapshot.
            pub(crate) struct $cnt {
                $( $(#[$fm])* $f, )*
            }
        }

        impl $snap {
            /// As JSON.
            pub fn to_json(&self) -> String {
                facet_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            }
        }
    };
}

/// Count a dropped message under its reason, the same three counters on
/// both ends.
macro_rules! count_drop {
    ($($cnt:ident),*) => {$(
        impl $cnt {
            /// Count a message the receiving checks dropped.
            pub(crate) fn count_drop(&self, d: Dropped) {
                match d {
                    Dropped::Malformed => add(&self.malformed_dropped, 1),
                    Dropped::Auth => add(&self.auth_failures, 1),
                    Dropped::Replay => add(&self.replays_dropped, 1),
                }
            }
        }
    )*};
}

/// Count `n` events (from any task).
pub(crate) fn add(c: &Counter, n: u64) {
    c.add(n);
}

/// Set a gauge.
pub(crate) fn set(c: &Counter, v: u64) {
    c.set(v);
}

/// Keep the largest value seen.
pub(crate) fn max(c: &Counter, v: u64) {
    c.max(v);
}

session_counters! {
    /// What the host sent and received.
    HostStats, HostCounters {
        /// Frames submitted and sent.
        frames_sent,
        /// Bytes of those frames.
        frame_bytes_sent,
        /// Link messages sent (all kinds).
        messages_sent,
        /// Data shards sent (lossy links).
        data_shards_sent,
        /// Parity shards sent (lossy links).
        parity_shards_sent,
        /// Parity percentage in use (changes with adaptive parity).
        parity_pct,
        /// Input events delivered to the application.
        input_events,
        /// Input events that arrived again and were ignored.
        input_duplicates,
        /// Input events dropped because an earlier one was missing (resent later).
        input_gaps,
        /// Keyframe requests seen (new frame losses reported).
        keyframe_requests,
        /// Loss reports received.
        feedback_received,
        /// Loss the client last reported, in parts per million.
        reported_loss_ppm,
        /// Frames the client last reported lost in total.
        reported_frames_lost,
        /// Messages that failed authentication (dropped).
        auth_failures,
        /// Messages dropped by the replay window (duplicates, too old, too far ahead).
        replays_dropped,
        /// Malformed messages dropped.
        malformed_dropped,
        /// Well-formed messages of a kind not expected here (dropped).
        unexpected_dropped,
        /// Key changes of the sending direction.
        rekeys,
        /// Arrival reports received (bandwidth estimation).
        arrivals_received,
        /// The bandwidth estimate, bits per second.
        estimate_bps,
        /// The target bitrate for the application, bits per second.
        target_bps,
        /// The pacing rate, bits per second (0 when not pacing).
        pacing_bps,
        /// Queue delay at the pacing rate when the last frame was submitted, µs.
        pacing_queue_delay_us,
        /// Largest such queue delay, µs.
        pacing_queue_delay_max_us,
        /// Frames submitted while the queue was over the latency budget.
        pacing_overruns,
        /// Time from a frame's first to its last datagram, last frame, µs.
        frame_send_spread_us,
        /// Largest such spread, µs.
        frame_send_spread_max_us,
        /// Probe clusters sent.
        probes,
        /// Padding datagrams sent (probes).
        padding_sent,
        /// Overuse signals of the delay-based detector acted on.
        overuses,
        /// Stream links with path samples: the delivery rate measured over
        /// the last window, bits per second.
        path_delivered_bps,
        /// Stream links with path samples: how long a byte committed as the
        /// last frame started waited before the peer had it (beyond one
        /// least round trip), µs.
        path_queue_delay_us,
        /// Stream links with path samples: the least such delay over the
        /// last window (the standing queue), µs.
        path_standing_queue_us,
        /// Stream links with path samples: times the target came down for a
        /// standing queue.
        path_decreases,
        /// Bytes received from the client during the handshake.
        handshake_bytes_received,
        /// Bytes sent to the client during the handshake (Welcome, Reject).
        handshake_bytes_sent,
        /// Welcome sends held back by the anti-amplification limit (waiting for more bytes from the client).
        amplification_held,
        /// 1 once the client proved its address (its Finish showed it received the Welcome).
        address_validated,
        /// Hellos that arrived on the established session (a late
        /// duplicate, a forged one, or the client restarting).
        hellos_on_session,
    }
}

session_counters! {
    /// What the client received and sent.
    ClientStats, ClientCounters {
        /// Whole frames delivered.
        frames_delivered,
        /// Bytes of those frames.
        frame_bytes_delivered,
        /// Frames reported lost (never delivered).
        frames_lost,
        /// Frames delivered thanks to parity.
        frames_recovered,
        /// Blocks rebuilt from parity.
        blocks_recovered,
        /// Data shards received.
        data_shards_received,
        /// Parity shards received.
        parity_shards_received,
        /// Shards of frames already delivered or reported lost (dropped).
        late_shards,
        /// Shards of blocks already complete or rebuilt (dropped).
        redundant_shards,
        /// Shards received twice (dropped).
        duplicate_shards,
        /// Incomplete frames given up to keep memory under the ceiling.
        evicted_frames,
        /// Bytes held by incomplete frames now.
        pending_bytes,
        /// Most bytes ever held by incomplete frames.
        pending_bytes_peak,
        /// Messages that failed authentication (dropped).
        auth_failures,
        /// Messages dropped by the replay window.
        replays_dropped,
        /// Malformed messages dropped.
        malformed_dropped,
        /// Well-formed messages of a kind not expected here (dropped).
        unexpected_dropped,
        /// Input events queued by the application.
        input_sent,
        /// Input events retransmitted.
        input_retransmits,
        /// Input events acknowledged by the host.
        input_acked,
        /// Input events never acknowledged when the session ended.
        input_abandoned,
        /// Smoothed input round trip in microseconds (0 until measured).
        input_rtt_us,
        /// Link messages sent (all kinds).
        messages_sent,
        /// Loss reports sent.
        feedback_sent,
        /// Loss over the last report interval, in parts per million.
        loss_ppm,
        /// Arrival reports sent (bandwidth estimation).
        arrivals_sent,
        /// Arrival records not kept because the report buffer was full.
        arrivals_dropped,
        /// Padding datagrams received (the host's probes).
        padding_received,
        /// Retry messages followed during the handshake (the host demanded proof of address).
        retries_followed,
    }
}

count_drop!(HostCounters, ClientCounters);
