//! The reports the subcommands print and read back: the demo's rows (one
//! per link, as a table or JSON) and the host's summary (which the demo
//! reads from the host process). It imports no other module of the binary.

use facet::Facet;

/// What one link's run measured.
#[derive(Debug, Clone, Default, Facet)]
pub struct LinkResult {
    pub link: String,
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub frames_lost: u64,
    pub fec_recovered: u64,
    pub corrupt: u64,
    pub zero_copy: u64,
    pub goodput_mbps: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub input_sent: u64,
    pub input_received: u64,
    pub input_in_order: bool,
    pub input_rtt_ms: f64,
    pub injected_loss_pct: f64,
    pub encrypted: bool,
    /// The simulated bottleneck's rate (0: none).
    pub bottleneck_mbps: f64,
    /// Datagrams dropped by the bottleneck's full queue (congestion).
    pub queue_dropped: u64,
    /// Datagrams dropped by the injected random loss.
    pub injected_dropped: u64,
    /// The lowest and highest target bitrate the synthetic encoder
    /// followed (0 when it sent at a fixed rate).
    pub target_mbps_min: f64,
    pub target_mbps_max: f64,
}

/// The `p` quantile (0..=1) of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// p50 and p99 of a latency series (microseconds, unsorted), in milliseconds.
#[derive(Debug, Clone, Copy, Default, Facet)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

impl Quantiles {
    /// The quantiles of `us` (sorted in place).
    pub fn of(us: &mut [u64]) -> Quantiles {
        us.sort_unstable();
        Quantiles {
            p50: percentile_ms(us, 0.5),
            p99: percentile_ms(us, 0.99),
        }
    }
}

/// Print the demo's rows as a table.
pub fn print_table(rows: &[LinkResult]) {
    println!(
        "{:<5} {:>6} {:>9} {:>5} {:>9} {:>7} {:>9} {:>21} {:>13} {:>9}",
        "link",
        "sent",
        "delivered",
        "lost",
        "recovered",
        "corrupt",
        "Mbit/s",
        "latency p50/p99/max ms",
        "input sent/rcv",
        "input RTT"
    );
    for r in rows {
        println!(
            "{:<5} {:>6} {:>9} {:>5} {:>9} {:>7} {:>9.1} {:>21} {:>13} {:>7.2}ms",
            r.link,
            r.frames_sent,
            r.frames_delivered,
            r.frames_lost,
            r.fec_recovered,
            r.corrupt,
            r.goodput_mbps,
            format!(
                "{:.2}/{:.2}/{:.2}",
                r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms
            ),
            format!(
                "{}/{}{}",
                r.input_sent,
                r.input_received,
                if r.input_in_order { "" } else { "!" }
            ),
            r.input_rtt_ms,
        );
    }
    for r in rows {
        let mut notes = Vec::new();
        if r.bottleneck_mbps > 0.0 {
            notes.push(format!(
                "through a {:.0} Mbit/s bottleneck ({} datagrams dropped by its queue)",
                r.bottleneck_mbps, r.queue_dropped
            ));
        }
        if r.target_mbps_max > 0.0 {
            notes.push(format!(
                "encoder followed the target, {:.1}..{:.1} Mbit/s",
                r.target_mbps_min, r.target_mbps_max
            ));
        }
        if r.injected_loss_pct > 0.0 {
            notes.push(format!(
                "{}% loss injected each way ({} datagrams to the client)",
                r.injected_loss_pct, r.injected_dropped
            ));
        }
        if r.encrypted {
            notes.push("AES-128-GCM".into());
        }
        if r.zero_copy > 0 {
            notes.push(format!("{} frames zero-copy", r.zero_copy));
        }
        if !notes.is_empty() {
            println!("  {}: {}", r.link, notes.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().map(|x| x * 1000).collect();
        let q = Quantiles::of(&mut v);
        assert_eq!(q.p50, 51.0);
        assert_eq!(q.p99, 99.0);
        assert_eq!(Quantiles::of(&mut []).p99, 0.0);
    }
}

/// One viewer's line in the summary.
#[derive(Debug, Clone, Default, Facet)]
pub struct ViewerReport {
    pub id: u64,
    pub transport: String,
    pub peer: String,
    pub frames_sent: u64,
    /// Bytes of the frames sent (envelopes and access units).
    pub frame_bytes_sent: u64,
    /// Padding datagrams sent to this viewer (bandwidth probes).
    pub padding_sent: u64,
    pub frames_skipped: u64,
    pub skip_events: u64,
    pub frames_skipped_budget: u64,
    pub budget_skip_events: u64,
    pub keyframe_requests: u64,
    pub keyframe_requests_coalesced: u64,
    pub keyframes_granted: u64,
    /// The highest temporal layer the viewer received at the end.
    pub layer: u64,
    /// Times its layer changed.
    pub layer_changes: u64,
    /// The rendition it received at the end (0: the full picture).
    pub rendition: u64,
    /// Times it moved to another rendition.
    pub rendition_changes: u64,
    /// The viewer's own target bitrate at the end (its session's
    /// estimate), bit/s.
    pub target_bps: u64,
    /// Frames of layers above the viewer's, not sent to it (not skips).
    pub frames_filtered: u64,
    /// Recoveries the viewer asked for (lost frames, skips of TL0 frames).
    pub recovery_requests: u64,
    /// Requests coalesced into one already under way.
    pub recovery_requests_coalesced: u64,
    /// LTR recovery frames sent to it.
    pub recovery_frames_sent: u64,
    /// Keyframes (IDRs) sent to it.
    pub keyframes_sent: u64,
    pub input_events: u64,
    pub reported_frames_lost: u64,
    pub reported_loss_ppm: u64,
    pub auth_failures: u64,
    pub seconds: f64,
    pub end: String,
}

/// One rendition's encoder in the summary (`--renditions`).
#[derive(Debug, Clone, Default, Facet)]
pub struct RenditionReport {
    /// 0: the capture; `r`: the capture halved `r` times.
    pub rendition: u64,
    pub width: u64,
    pub height: u64,
    /// Frames encoded (only while a viewer received it or moved to it).
    pub frames_encoded: u64,
    pub keyframes: u64,
    /// Its encoder's bitrate at the end, bit/s.
    pub bitrate_bps: u64,
    /// Encoded bytes over the run, Mbit/s of the whole run.
    pub encoded_mbps: f64,
    /// Encode time per frame (the halving included), ms.
    pub encode_ms: Quantiles,
}

/// The host's summary.
#[derive(Debug, Clone, Default, Facet)]
pub struct HostReport {
    pub source: String,
    /// How pictures get from the source into the capture slot (for an X11
    /// screen: which capture path ran).
    pub capture_path: String,
    /// Pictures the X server wrote straight into the capture slot
    /// (MIT-SHM), of `frames_captured`.
    pub frames_zero_copy: u64,
    pub width: u64,
    pub height: u64,
    pub fps: f64,
    pub encrypted: bool,
    pub frames_captured: u64,
    pub capture_dropped: u64,
    pub frames_encoded: u64,
    pub keyframes: u64,
    /// Temporal layers of the encoder (`--temporal-layers`).
    pub temporal_layers: u64,
    /// LTR recovery frames encoded (recoveries answered without an IDR).
    pub recovery_frames: u64,
    /// Recoveries answered by an IDR (no confirmed reference yet).
    pub idr_recoveries: u64,
    /// Recoveries the hub asked for (coalesced across viewers).
    pub recoveries_requested: u64,
    /// LTR marks confirmed (every viewer got them) and rejected.
    pub ltr_confirmed: u64,
    pub ltr_rejected: u64,
    pub encode_errors: u64,
    pub frames_too_large: u64,
    pub encode_ms: Quantiles,
    pub encoded_mbps: f64,
    pub bitrate_bps: u64,
    /// `--latency-budget-ms`: the most a frame waits in the host's queues.
    pub latency_budget_ms: u64,
    pub handshake_failures: u64,
    pub ws_refused_paths: u64,
    /// Browser connections refused with 403 for their page's origin.
    pub ws_refused_origins: u64,
    /// Sessions established (handshakes completed), over both transports.
    pub viewers_joined: u64,
    /// Sessions ended because nothing arrived from the viewer for
    /// `--idle-timeout` (a viewer killed or cut off for good).
    pub viewers_timed_out: u64,
    /// The renditions (simulcast), rendition 0 first.
    pub renditions: Vec<RenditionReport>,
    pub viewers: Vec<ViewerReport>,
}
