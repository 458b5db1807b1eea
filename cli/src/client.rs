//! `linkstream client URL`: a native viewer. It connects over UDP or
//! WebSocket, decodes every access unit (H.264), checks each decoded
//! test-pattern picture (the burned-in index against the envelope's capture
//! index, PSNR against the pattern regenerated for that index), sends
//! synthetic input at a steady rate, shows live stats and ends with a
//! summary (one JSON object with `--json`).
//!
//! Latency by stage, per frame: capture -> encoded -> sent (host clock,
//! from the envelope), sent -> reassembled (host clock to client clock),
//! reassembled -> decoded (client clock). Host and client clocks are
//! compared directly (`--clock shared`: same machine, or synchronised
//! clocks); the summary also gives an estimate of the offset between them
//! from the session's input round trip (smallest sent -> reassembled minus
//! half the round trip), and `--clock estimate` corrects the cross-clock
//! stages by it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use facet::Facet;
use link_session::{Client, ClientConfig, ClientEvent, InputEvent, SessionError};
use link_types::Link;

use crate::progress::Progress;
use crate::report::Quantiles;
use crate::util::{now_us, read_psk};
use link_video::index::{read_index_scaled, unwrap_index};
use link_video::{Decoder as _, LayeredDecoder, TestSrc, VideoHeader, psnr_yuv};

/// Options of `linkstream client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The host: udp://HOST:PORT, ws://HOST:PORT or wss://HOST:PORT (path
    /// /stream unless given).
    pub url: String,
    /// Pre-shared key file (the host's key).
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Stop after N seconds (default: until the host ends the stream).
    #[arg(long, value_name = "N", value_parser = crate::util::non_negative)]
    pub seconds: Option<f64>,
    /// Write the stream to FILE.h264 (the access units) or FILE.y4m (the
    /// decoded pictures).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Synthetic input events per second (0: none).
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub input_rate: u32,
    /// Send what is typed on standard input as key events (a press and a
    /// release per character, as USB HID usages; a line is sent when Enter
    /// is pressed) instead of synthetic input.
    #[arg(long)]
    pub terminal_input: bool,
    /// Give up connecting after N seconds.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = crate::util::non_negative)]
    pub timeout: f64,
    /// Compute PSNR on every Nth decoded picture (the index is checked on all).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub psnr_every: u64,
    /// How host timestamps are compared with this machine's clock:
    /// `shared` (same machine or synchronised clocks) or `estimate`
    /// (corrected by the offset estimated from the session's round trip).
    #[arg(long, value_name = "shared|estimate", default_value = "shared",
          value_parser = ["shared", "estimate"])]
    pub clock: String,
    /// For testing on one machine: receive UDP through a simulated
    /// bottleneck of MBPS Mbit/s (50 ms queue, 5 ms delay), so that the
    /// host's pacing and bandwidth estimation have a path to adapt to.
    #[arg(long, value_name = "MBPS", value_parser = crate::util::non_negative)]
    pub simulate_bottleneck: Option<f64>,
    /// The `settled` part of the report counts the pictures decoded from N
    /// seconds after the first one on (latency, pictures a second, longest
    /// gap once the stream has adapted to the path).
    #[arg(long, value_name = "N", default_value_t = 3.0, value_parser = crate::util::non_negative)]
    pub settle: f64,
    /// For wss://: trust this CA certificate (PEM) instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Over UDP, end the session when nothing arrived from the host for N
    /// seconds. A shorter outage is resumed in the same session, without a
    /// new handshake.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = crate::util::idle_timeout)]
    pub idle_timeout: f64,
}

// r[impl cli.client.input]
/// The USB HID usage of a typed byte: letters, digits, Enter, space and
/// a few punctuation keys (`None` for the rest).
fn hid_usage(b: u8) -> Option<u32> {
    Some(match b.to_ascii_lowercase() {
        c @ b'a'..=b'z' => 4 + (c - b'a') as u32,
        c @ b'1'..=b'9' => 30 + (c - b'1') as u32,
        b'0' => 39,
        b'\n' | b'\r' => 40,
        0x1b => 41,
        0x7f | 0x08 => 42,
        b'\t' => 43,
        b' ' => 44,
        b'-' => 45,
        b'=' => 46,
        b',' => 54,
        b'.' => 55,
        b'/' => 56,
        _ => return None,
    })
}

/// Latency of one stage, p50 and p99 in milliseconds.
#[derive(Debug, Clone, Default, Facet)]
pub struct Stages {
    pub capture_to_encoded: Quantiles,
    pub encoded_to_sent: Quantiles,
    pub sent_to_reassembled: Quantiles,
    pub reassembled_to_decoded: Quantiles,
}

// r[impl cli.client.report]
/// The client's summary.
#[derive(Debug, Clone, Default, Facet)]
pub struct ClientReport {
    pub url: String,
    pub encrypted: bool,
    pub width: u64,
    pub height: u64,
    pub seconds: f64,
    pub frames_received: u64,
    pub frames_lost: u64,
    /// Pieces of frames that arrived after their frame was given up as
    /// lost (the sender stalled longer than the frame timeout, 100 ms).
    pub late_shards: u64,
    pub fec_recovered: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub envelope_errors: u64,
    pub frames_skipped: u64,
    pub index_checked: u64,
    pub index_mismatches: u64,
    pub index_unreadable: u64,
    pub psnr_frames: u64,
    pub psnr_db_mean: f64,
    pub psnr_db_min: f64,
    pub latency_ms: Quantiles,
    /// The same measures over the pictures decoded from `--settle` seconds
    /// after the first one on.
    pub settled: Settled,
    pub stages_ms: Stages,
    pub clock: String,
    pub clock_offset_estimate_ms: f64,
    pub bitrate_mbps: f64,
    pub target_mbps: f64,
    pub input_sent: u64,
    pub input_acked: u64,
    pub input_rtt_ms: f64,
    /// The simulated bottleneck's rate (`--simulate-bottleneck`; 0: none).
    pub bottleneck_mbps: f64,
    /// Datagrams its full queue dropped.
    pub bottleneck_queue_dropped: u64,
    /// UDP: datagrams the kernel dropped because this viewer's socket
    /// receive queue was full (the viewer fell behind).
    pub udp_kernel_drops: u64,
    /// UDP: datagrams that could not be sent (no route while the path was
    /// down, a full send buffer), dropped and counted.
    pub udp_send_dropped: u64,
    /// The longest time between two consecutive decoded pictures, in
    /// milliseconds (an outage, a loss waiting for its keyframe).
    pub longest_gap_ms: f64,
    /// When the last picture before that gap was decoded (microseconds
    /// since the UNIX epoch, this machine's clock; 0 with fewer than two
    /// pictures).
    pub gap_start_us: u64,
    /// When the first picture after that gap was decoded (same clock).
    pub resumed_at_us: u64,
    /// Every time between two decoded pictures of more than
    /// [`GAP_REPORT_MS`] (an outage, a stall), oldest first, at most
    /// [`MAX_GAPS`] of them.
    pub gaps: Vec<Gap>,
    /// How many such gaps there were (also those beyond `MAX_GAPS`).
    pub gaps_count: u64,
    /// Pictures decoded per second of the run.
    pub fps_displayed: f64,
    /// Frames that could not be decoded whole because an earlier frame
    /// was lost or skipped, until the stream's next recovery point (not
    /// counted in `decode_errors`).
    pub frames_broken: u64,
    /// Keyframes (IDRs) decoded.
    pub keyframes: u64,
    /// LTR recovery frames decoded (recovery points that are not IDRs).
    pub recovery_frames: u64,
    /// The highest temporal layer received over the last second of the
    /// run (0: the base layer only).
    pub layer: u64,
    /// Pictures decoded per temporal layer (TL0, TL1, TL2, TL3).
    pub frames_by_layer: Vec<u64>,
    /// The rendition of the last picture decoded (0: the full picture, `r`:
    /// halved `r` times; simulcast).
    pub rendition: u64,
    /// Times the rendition of the decoded pictures changed.
    pub rendition_changes: u64,
    /// Pictures decoded per rendition (0, 1, 2, 3).
    pub frames_by_rendition: Vec<u64>,
    /// This viewer's own target bitrate as the host last reported it (its
    /// session's estimate of this path), Mbit/s; `target_mbps` is the
    /// encoder's.
    pub viewer_target_mbps: f64,
}

/// The pictures decoded from `--settle` seconds after the first picture on.
#[derive(Debug, Clone, Default, Facet)]
pub struct Settled {
    /// `--settle`: seconds after the first picture.
    pub after_s: f64,
    pub frames_decoded: u64,
    /// Pictures decoded per second from then to the last picture.
    pub fps_displayed: f64,
    /// Capture to decoded, ms (as `latency_ms`).
    pub latency_ms: Quantiles,
    /// The longest time between two decoded pictures, the later one
    /// decoded from then on, ms.
    pub longest_gap_ms: f64,
}

/// Gaps between decoded pictures longer than this are listed.
pub const GAP_REPORT_MS: u64 = 250;
/// At most this many gaps are listed.
pub const MAX_GAPS: usize = 64;

/// A time without decoded pictures: the last picture before it and the
/// first after it, in microseconds since the UNIX epoch (this machine's
/// clock).
#[derive(Debug, Clone, Default, Facet)]
pub struct Gap {
    pub from_us: u64,
    pub to_us: u64,
}

/// One received frame for the decoder thread.
struct Job {
    data: Vec<u8>,
    /// The session's frame index (what a report to the host names).
    index: u32,
    reassembled_us: u64,
    /// Frames are missing before this one (lost, or dropped because the
    /// decoder was behind): decoding restarts at the next keyframe.
    gap_before: bool,
}

/// Counters the decoder thread updates and the live display reads.
#[derive(Default)]
struct Live {
    decoded: AtomicU64,
    last_latency_us: AtomicU64,
}

/// What the decoder thread measured.
#[derive(Default)]
struct DecodeStats {
    width: u64,
    height: u64,
    decoded: u64,
    decode_errors: u64,
    envelope_errors: u64,
    skipped: u64,
    index_checked: u64,
    index_mismatches: u64,
    index_unreadable: u64,
    psnr: Vec<f64>,
    capture_to_encoded: Vec<u64>,
    encoded_to_sent: Vec<u64>,
    sent_to_reassembled: Vec<i64>,
    reassembled_to_decoded: Vec<u64>,
    capture_to_decoded: Vec<i64>,
    /// (decoded at, capture to decoded) of every picture, µs.
    decoded_log: Vec<(u64, i64)>,
    /// When the previous picture was decoded (UNIX microseconds).
    last_decoded_us: u64,
    /// The longest time between two decoded pictures: (from, to).
    longest_gap: Option<(u64, u64)>,
    gaps: Vec<Gap>,
    gaps_count: u64,
    broken: u64,
    keyframes: u64,
    recovery_frames: u64,
    by_layer: [u64; 4],
    by_rendition: [u64; 4],
    rendition: Option<u8>,
    rendition_changes: u64,
    /// (decoded at, temporal id) of the last second's pictures.
    recent_layers: std::collections::VecDeque<(u64, u8)>,
    viewer_target_10kbps: u16,
    out_error: Option<String>,
}

enum Out {
    H264(std::io::BufWriter<std::fs::File>),
    Y4m(std::io::BufWriter<std::fs::File>, bool),
}

fn open_out(path: &std::path::Path) -> Result<Out, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let open = || {
        std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .map_err(|e| format!("--out {}: {e}", path.display()))
    };
    match ext {
        "h264" | "264" => Ok(Out::H264(open()?)),
        "y4m" => Ok(Out::Y4m(open()?, false)),
        _ => Err(format!(
            "--out {}: the name must end in .h264 or .y4m",
            path.display()
        )),
    }
}

// r[impl cli.client.check]
/// The decoder thread: decode, check, measure, write.
fn decode_thread(
    jobs: std::sync::mpsc::Receiver<Job>,
    unusable: tokio::sync::mpsc::UnboundedSender<u32>,
    mut out: Option<Out>,
    psnr_every: u64,
    live: Arc<Live>,
) -> DecodeStats {
    let mut s = DecodeStats::default();
    let mut decoder = match LayeredDecoder::new() {
        Ok(d) => d,
        Err(e) => {
            s.out_error = Some(format!("decoder: {e}"));
            return s;
        }
    };
    let mut reference: Option<(TestSrc, Vec<u8>)> = None;
    // A live source: the highest pattern index shown so far, and the
    // buffer the pattern is drawn through (BGRX) for its reference.
    let mut drawn: Option<u64> = None;
    let mut bgrx = Vec::new();
    // Nothing decodes before the first keyframe.
    let mut started = false;
    // Frames are missing before this one: until a picture decodes whole
    // again (the host's recovery frame, or the next TL0 frame when only a
    // higher layer was lost), a decode error is expected, not a fault.
    let mut broken = false;
    // The last access unit decoded did not decode whole.
    let mut prev_failed = false;
    while let Ok(job) = jobs.recv() {
        if job.gap_before {
            broken = true;
        }
        let (h, au) = match VideoHeader::parse(&job.data) {
            Ok(x) => x,
            Err(e) => {
                s.envelope_errors += 1;
                tracing::warn!("envelope: {e}");
                continue;
            }
        };
        s.viewer_target_10kbps = h.viewer_target_10kbps;
        if !started && !h.keyframe {
            s.skipped += 1;
            continue;
        }
        started = true;
        if let Some(Out::H264(w)) = &mut out
            && let Err(e) = w.write_all(au)
        {
            s.out_error
                .get_or_insert(format!("writing the stream: {e}"));
        }
        let picture = match decoder.decode(au) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                // A keyframe right after an access unit that did not
                // decode whole may report that one's damage (OpenH264
                // completes a damaged picture in the next call,
                // `video.layered.concealment`): the loss's, not its own.
                let carried = h.keyframe && prev_failed;
                prev_failed = true;
                if broken && (!h.recovery || carried) {
                    s.broken += 1;
                } else {
                    // r[impl video.hub.recovery-failed]
                    // A recovery frame that does not decode whole: its
                    // reference never reached this decoder. Reported as
                    // unusable, the host answers with a keyframe.
                    if h.recovery && !h.keyframe {
                        let _ = unusable.send(job.index);
                    }
                    s.decode_errors += 1;
                    tracing::warn!("decode: {e}");
                }
                continue;
            }
        };
        broken = false;
        prev_failed = false;
        if h.keyframe {
            s.keyframes += 1;
        } else if h.recovery {
            s.recovery_frames += 1;
        }
        s.by_layer[usize::from(h.temporal_id.min(3))] += 1;
        s.by_rendition[usize::from(h.rendition.min(3))] += 1;
        if s.rendition.is_some_and(|r| r != h.rendition) {
            s.rendition_changes += 1;
        }
        s.rendition = Some(h.rendition);
        let decoded_us = now_us();
        s.decoded += 1;
        if s.last_decoded_us != 0 {
            let gap = decoded_us.saturating_sub(s.last_decoded_us);
            if s.longest_gap.is_none_or(|(a, b)| gap > b - a) {
                s.longest_gap = Some((s.last_decoded_us, decoded_us));
            }
            if gap > GAP_REPORT_MS * 1000 {
                s.gaps_count += 1;
                if s.gaps.len() < MAX_GAPS {
                    s.gaps.push(Gap {
                        from_us: s.last_decoded_us,
                        to_us: decoded_us,
                    });
                }
            }
        }
        s.last_decoded_us = decoded_us;
        s.recent_layers.push_back((decoded_us, h.temporal_id));
        while s
            .recent_layers
            .front()
            .is_some_and(|f| decoded_us.saturating_sub(f.0) > 1_000_000)
        {
            s.recent_layers.pop_front();
        }
        let (w, hgt) = (picture.width, picture.height);
        s.width = w as u64;
        s.height = hgt as u64;
        let yuv = &picture.data[..];
        // Stages.
        s.capture_to_encoded
            .push(h.encoded_us.saturating_sub(h.capture_us));
        s.encoded_to_sent
            .push(h.sent_us.saturating_sub(h.encoded_us));
        s.sent_to_reassembled
            .push(job.reassembled_us as i64 - h.sent_us as i64);
        s.reassembled_to_decoded
            .push(decoded_us.saturating_sub(job.reassembled_us));
        s.capture_to_decoded
            .push(decoded_us as i64 - h.capture_us as i64);
        s.decoded_log
            .push((decoded_us, decoded_us as i64 - h.capture_us as i64));
        live.decoded.fetch_add(1, Relaxed);
        live.last_latency_us
            .store(decoded_us.saturating_sub(h.capture_us), Relaxed);
        // The burned-in index, read through the rendition's scaling.
        // r[impl video.scale.index]
        match read_index_scaled(&yuv[..w * hgt], w, hgt, h.rendition) {
            Some(low) => {
                s.index_checked += 1;
                // A live source (a screen) numbers its frames itself; a
                // test pattern drawn on it carries its own index, which
                // must never go back (an older picture shown after a newer
                // one). Otherwise the index is the host's capture index.
                let (index, ok) = if h.live {
                    let index = unwrap_index(low, drawn.unwrap_or(low));
                    let ok = drawn.is_none_or(|d| index >= d);
                    drawn = Some(drawn.map_or(index, |d| d.max(index)));
                    (index, ok)
                } else {
                    let index = unwrap_index(low, h.capture_index);
                    (index, index == h.capture_index)
                };
                if !ok {
                    s.index_mismatches += 1;
                } else if s.decoded % psnr_every == 0 || s.psnr.is_empty() {
                    // The reference: the pattern at the source's size,
                    // halved as the host made the rendition.
                    let r = u32::from(h.rendition);
                    let (sw, sh) = (w << r, hgt << r);
                    let fresh =
                        !matches!(&reference, Some((t, _)) if t.width() == sw && t.height() == sh);
                    if fresh {
                        reference = TestSrc::new(sw, sh, 30).ok().map(|t| {
                            let n = t.frame_len();
                            (t, vec![0u8; n])
                        });
                    }
                    if let Some((t, buf)) = &mut reference
                        && t.render(index, buf).is_ok()
                        && (!h.live || as_drawn(buf, sw, sh, &mut bgrx))
                        && let Some(scaled) = halve_times(buf, sw, sh, r)
                        && let Ok(db) = psnr_yuv(yuv, &scaled, w, hgt)
                    {
                        s.psnr.push(db);
                    }
                }
            }
            None => s.index_unreadable += 1,
        }
        if let Some(Out::Y4m(wr, started)) = &mut out {
            let r = (|| {
                if !*started {
                    writeln!(wr, "YUV4MPEG2 W{w} H{hgt} F30:1 Ip A1:1 C420jpeg")?;
                    *started = true;
                }
                wr.write_all(b"FRAME\n")?;
                wr.write_all(yuv)
            })();
            if let Err(e) = r {
                s.out_error
                    .get_or_insert(format!("writing the pictures: {e}"));
            }
        }
    }
    if let Some(Out::H264(mut w) | Out::Y4m(mut w, _)) = out
        && let Err(e) = w.flush()
    {
        s.out_error.get_or_insert(format!("writing: {e}"));
    }
    s
}

/// Resolve `host:port`.
async fn resolve(hostport: &str) -> Result<std::net::SocketAddr, String> {
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))
}

// r[impl cli.errors.unreachable]
/// `linkstream client`.
pub async fn run(args: ClientArgs) -> Result<(), String> {
    let psk = args.psk_file.as_deref().map(read_psk).transpose()?;
    let out = args.out.as_deref().map(open_out).transpose()?;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let cfg = ClientConfig {
        psk: psk.clone(),
        handshake_timeout: timeout,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        ..Default::default()
    };
    let url = args.url.trim().to_string();
    if let Some(rest) = url.strip_prefix("udp://") {
        let hostport = rest.trim_end_matches('/');
        let peer = resolve(hostport).await?;
        let local: std::net::SocketAddr = if peer.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let link = link_udp::UdpLink::connect(local, peer, &link_udp::UdpConfig::default())
            .map_err(|e| format!("UDP {peer}: {e}"))?;
        let udp = Some(link.stats());
        match args.simulate_bottleneck.filter(|m| *m > 0.0) {
            Some(mbps) => {
                let spec = link_types::FaultSpec {
                    bottleneck: Some(link_types::Bottleneck::new(
                        (mbps * 1e6) as u64,
                        Duration::from_millis(50),
                        Duration::from_millis(5),
                    )),
                    ..link_types::FaultSpec::none()
                };
                let link = link_types::fault::wrap(link, spec, 0x5EED)
                    .map_err(|e| format!("--simulate-bottleneck {mbps}: {e}"))?;
                let faults = link.stats();
                let bottleneck = Some((mbps, faults));
                view(link, cfg, &args, out, psk.is_some(), bottleneck, udp).await
            }
            None => view(link, cfg, &args, out, psk.is_some(), None, udp).await,
        }
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let full = if url[scheme_end..].contains('/') {
            url.clone()
        } else {
            format!("{url}{}", link_video::stream::STREAM_PATH)
        };
        let ws_cfg = link_ws::WsConfig {
            handshake_timeout: timeout,
            ..Default::default()
        };
        let link = match &args.ca_file {
            Some(ca) => {
                let tls = link_ws::ClientTls::from_ca_file(ca)
                    .map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
                link_ws::WsLink::connect_with_tls(&full, &ws_cfg, &tls).await
            }
            None => link_ws::WsLink::connect(&full, &ws_cfg).await,
        }
        .map_err(|e| format!("{full}: {e}"))?;
        if args.simulate_bottleneck.is_some() {
            return Err("--simulate-bottleneck is for udp:// (a WebSocket is paced by TCP)".into());
        }
        view(link, cfg, &args, out, psk.is_some(), None, None).await
    } else {
        Err(format!(
            "{url}: expected udp://HOST:PORT, ws://HOST:PORT or wss://HOST:PORT"
        ))
    }
}

async fn view<L>(
    link: L,
    cfg: ClientConfig,
    args: &ClientArgs,
    out: Option<Out>,
    encrypted: bool,
    bottleneck: Option<(f64, link_types::fault::FaultStatsHandle)>,
    udp: Option<link_udp::UdpStatsHandle>,
) -> Result<(), String>
where
    L: Link + 'static,
    L::Tx: Send + Sync + 'static,
    L::Rx: Send + 'static,
{
    let encrypted_hint = if encrypted {
        "with the same pre-shared key"
    } else {
        "without a pre-shared key (give --psk-file if the host has one)"
    };
    // r[impl cli.errors.psk]
    let (mut frames, mut input) = Client::connect(link, cfg).await.map_err(|e| match e {
        SessionError::HandshakeTimeout { waited, .. } => format!(
            "{}: no session within {:.1} s: is a linkstream host running there, {encrypted_hint}?",
            args.url,
            waited.as_secs_f64()
        ),
        SessionError::AuthFailed => {
            format!("{}: the host holds a different pre-shared key", args.url)
        }
        e => format!("{}: {e}", args.url),
    })?;
    let started = Instant::now();
    let live = Arc::new(Live::default());
    let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(64);
    let (unusable_tx, mut unusable) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let decoder = {
        let live = live.clone();
        let every = args.psnr_every;
        std::thread::Builder::new()
            .name("decoder".into())
            .spawn(move || decode_thread(rx, unusable_tx, out, every, live))
            .map_err(|e| format!("decoder thread: {e}"))?
    };
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let period = (args.input_rate > 0 && !args.terminal_input)
        .then(|| Duration::from_secs_f64(1.0 / args.input_rate as f64));
    // Typed keys, read by a thread (standard input blocks).
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<u8>(1024);
    if args.terminal_input {
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                use std::io::Read;
                for b in std::io::stdin().lock().bytes() {
                    let Ok(b) = b else { break };
                    if keys_tx.blocking_send(b).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("stdin thread: {e}"))?;
    } else {
        drop(keys_tx);
    }
    let mut keys_open = args.terminal_input;
    let mut ticker = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = Progress::new("client", None);
    let (mut bytes, mut first_us, mut last_us) = (0u64, 0u64, 0u64);
    let (mut lost, mut target_kbps, mut input_sent, mut decoder_behind) = (0u64, 0u32, 0u64, 0u64);
    let (mut win_frames, mut win_bytes, mut win_start) = (0u64, 0u64, Instant::now());
    let mut gap = false;
    // One Ctrl-C listener for the whole run: a new one per iteration would
    // miss a signal that arrives between them.
    let mut sigint = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            ev = frames.next_frame() => match ev {
                Ok(Some(ClientEvent::Frame(f))) => {
                    let now = now_us();
                    if first_us == 0 {
                        first_us = now;
                    }
                    last_us = now;
                    let index = f.index;
                    let data = f.into_vec();
                    bytes += data.len() as u64;
                    win_bytes += data.len() as u64;
                    win_frames += 1;
                    if let Ok((h, _)) = VideoHeader::parse(&data) {
                        target_kbps = h.target_kbps;
                    }
                    let job = Job { data, index, reassembled_us: now, gap_before: gap };
                    if jobs.try_send(job).is_ok() {
                        gap = false;
                    } else {
                        // The decoder is behind: this frame is dropped, and
                        // the host is asked for a recovery point (the
                        // session reports it as the newest unusable frame).
                        decoder_behind += 1;
                        gap = true;
                        frames.request_keyframe(index);
                    }
                }
                Ok(Some(ClientEvent::Lost { count, .. })) => {
                    lost += count as u64;
                    // The decoder is whole again at the host's next
                    // recovery point (the session's loss report asks).
                    gap = true;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{}: {e}", args.url)),
            },
            Some(index) = unusable.recv() => frames.request_keyframe(index),
            key = keys.recv(), if keys_open => match key {
                Some(b) => {
                    let Some(code) = hid_usage(b) else {
                        tracing::debug!("no key code for byte {b:#x}");
                        continue;
                    };
                    for down in [true, false] {
                        let ev = InputEvent::Key { code, down, mods: 0 };
                        match input.send_input(ev).await {
                            Ok(()) => input_sent += 1,
                            Err(e) => tracing::warn!("input: {e}"),
                        }
                    }
                }
                None => keys_open = false,
            },
            _ = ticker.tick(), if period.is_some() => {
                let ev = InputEvent::MouseMove { dx: (input_sent % 7) as i32 - 3, dy: 1 };
                match input.send_input(ev).await {
                    Ok(()) => input_sent += 1,
                    Err(e) => tracing::warn!("input: {e}"),
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = &mut sigint => break,
        }
        if win_start.elapsed() >= Duration::from_secs(1) {
            let secs = win_start.elapsed().as_secs_f64();
            let st = frames.stats();
            let line = format!(
                "{:.0} fps, {:.2} Mbit/s (target {:.2}), lost {}, FEC-recovered {}, latency {:.1} ms, decoded {}",
                win_frames as f64 / secs,
                win_bytes as f64 * 8.0 / secs / 1e6,
                target_kbps as f64 / 1000.0,
                st.frames_lost,
                st.frames_recovered,
                live.last_latency_us.load(Relaxed) as f64 / 1000.0,
                live.decoded.load(Relaxed),
            );
            progress.update(live.decoded.load(Relaxed), || line);
            (win_frames, win_bytes, win_start) = (0, 0, Instant::now());
        }
    }
    progress.finish();
    // Our end (or our answer to the host's): a Bye, then the link closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), input.close()).await;
    drop(jobs);
    let stats = frames.stats();
    let d = tokio::task::spawn_blocking(move || decoder.join())
        .await
        .map_err(|e| format!("decoder thread: {e}"))?
        .map_err(|_| "the decoder thread panicked".to_string())?;
    if let Some(e) = &d.out_error {
        return Err(e.clone());
    }
    let mut r = summarize(d, args, encrypted);
    r.seconds = started.elapsed().as_secs_f64();
    if r.seconds > 0.0 {
        r.fps_displayed = r.frames_decoded as f64 / r.seconds;
    }
    r.frames_received = stats.frames_delivered;
    r.frames_lost = lost.max(stats.frames_lost);
    r.frames_skipped += decoder_behind;
    r.fec_recovered = stats.frames_recovered;
    r.late_shards = stats.late_shards;
    r.input_sent = stats.input_sent;
    r.input_acked = stats.input_acked;
    r.input_rtt_ms = stats.input_rtt_us as f64 / 1000.0;
    r.target_mbps = target_kbps as f64 / 1000.0;
    if let Some((mbps, faults)) = &bottleneck {
        r.bottleneck_mbps = *mbps;
        r.bottleneck_queue_dropped = faults.snapshot().queue_dropped;
    }
    if let Some(udp) = &udp {
        let s = udp.snapshot();
        r.udp_kernel_drops = s.rx_kernel_drops;
        r.udp_send_dropped = s.tx_dropped;
    }
    let span = last_us.saturating_sub(first_us) as f64 / 1e6;
    if span > 0.0 {
        r.bitrate_mbps = bytes as f64 * 8.0 / span / 1e6;
    }
    r.clock_offset_estimate_ms -= r.input_rtt_ms / 2.0;
    if args.clock == "estimate" {
        let off = r.clock_offset_estimate_ms;
        let fix = |q: Quantiles| Quantiles {
            p50: q.p50 - off,
            p99: q.p99 - off,
        };
        r.stages_ms.sent_to_reassembled = fix(r.stages_ms.sent_to_reassembled);
        r.latency_ms = fix(r.latency_ms);
        r.settled.latency_ms = fix(r.settled.latency_ms);
        r.clock = format!(
            "estimate: host timestamps corrected by the estimated offset ({:.2} ms, from the input round trip)",
            off
        );
    }
    if args.json {
        println!("{}", facet_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        print_summary(&r);
    }
    Ok(())
}

// r[impl cli.client.settled]
/// The `settled` measures over `log` ((decoded at, latency) per picture,
/// in decode order): the pictures decoded `settle_s` seconds after the
/// first one or later.
fn settled(log: &[(u64, i64)], settle_s: f64) -> Settled {
    let mut out = Settled {
        after_s: settle_s,
        ..Settled::default()
    };
    let Some(&(first, _)) = log.first() else {
        return out;
    };
    let from = first.saturating_add((settle_s * 1e6) as u64);
    let mut lat = Vec::new();
    let mut longest = 0u64;
    for (i, &(t, l)) in log.iter().enumerate() {
        if t < from {
            continue;
        }
        lat.push(l);
        if i > 0 {
            longest = longest.max(t.saturating_sub(log[i - 1].0));
        }
    }
    let last = log.last().map_or(0, |l| l.0);
    out.frames_decoded = lat.len() as u64;
    if last > from {
        out.fps_displayed = lat.len() as f64 / ((last - from) as f64 / 1e6);
    }
    out.latency_ms = quantiles_signed(&mut lat);
    out.longest_gap_ms = longest as f64 / 1000.0;
    out
}

fn quantiles_signed(v: &mut [i64]) -> Quantiles {
    v.sort_unstable();
    let q = |p: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    Quantiles {
        p50: q(0.5),
        p99: q(0.99),
    }
}

fn summarize(mut d: DecodeStats, args: &ClientArgs, encrypted: bool) -> ClientReport {
    let psnr_frames = d.psnr.len() as u64;
    let mean = if d.psnr.is_empty() {
        0.0
    } else {
        d.psnr.iter().sum::<f64>() / d.psnr.len() as f64
    };
    let min = d.psnr.iter().copied().fold(f64::INFINITY, f64::min);
    let offset_min_us = d.sent_to_reassembled.iter().copied().min().unwrap_or(0);
    let (gap_start_us, resumed_at_us) = d.longest_gap.unwrap_or((0, 0));
    ClientReport {
        url: args.url.clone(),
        encrypted,
        width: d.width,
        height: d.height,
        frames_decoded: d.decoded,
        decode_errors: d.decode_errors,
        envelope_errors: d.envelope_errors,
        frames_skipped: d.skipped,
        index_checked: d.index_checked,
        index_mismatches: d.index_mismatches,
        index_unreadable: d.index_unreadable,
        psnr_frames,
        psnr_db_mean: mean,
        psnr_db_min: if min.is_finite() { min } else { 0.0 },
        latency_ms: quantiles_signed(&mut d.capture_to_decoded),
        settled: settled(&d.decoded_log, args.settle),
        stages_ms: Stages {
            capture_to_encoded: Quantiles::of(&mut d.capture_to_encoded),
            encoded_to_sent: Quantiles::of(&mut d.encoded_to_sent),
            sent_to_reassembled: quantiles_signed(&mut d.sent_to_reassembled),
            reassembled_to_decoded: Quantiles::of(&mut d.reassembled_to_decoded),
        },
        clock: "shared: host timestamps compared with this machine's clock as they are (same machine, or synchronised clocks); see clock_offset_estimate_ms".into(),
        clock_offset_estimate_ms: offset_min_us as f64 / 1000.0,
        longest_gap_ms: resumed_at_us.saturating_sub(gap_start_us) as f64 / 1000.0,
        gap_start_us,
        resumed_at_us,
        gaps: std::mem::take(&mut d.gaps),
        gaps_count: d.gaps_count,
        frames_broken: d.broken,
        keyframes: d.keyframes,
        recovery_frames: d.recovery_frames,
        layer: d.recent_layers.iter().map(|f| u64::from(f.1)).max().unwrap_or(0),
        frames_by_layer: d.by_layer.to_vec(),
        rendition: d.rendition.map_or(0, u64::from),
        rendition_changes: d.rendition_changes,
        frames_by_rendition: d.by_rendition.to_vec(),
        viewer_target_mbps: f64::from(d.viewer_target_10kbps) / 100.0,
        ..Default::default()
    }
}

/// Turns the rendered pattern `pic` into the pattern as an X client draws
/// it on a screen and the host captures it: through BGRX and back (the
/// pattern has colours RGB cannot show). `false` if the size is refused.
fn as_drawn(pic: &mut [u8], w: usize, h: usize, bgrx: &mut Vec<u8>) -> bool {
    bgrx.resize(w * h * 4, 0);
    link_video::convert::i420_to_bgrx(pic, w, h, bgrx).is_ok()
        && link_video::convert::bgrx_to_i420(bgrx, w, h, w * 4, pic).is_ok()
}

/// `pic` (a `w` x `h` I420 picture) halved `times` times, as the host
/// makes rendition `times`; `None` if the size cannot be halved.
fn halve_times(pic: &[u8], w: usize, h: usize, times: u32) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut cur = std::borrow::Cow::Borrowed(pic);
    let (mut w, mut h) = (w, h);
    for _ in 0..times {
        let mut out = vec![0u8; link_video::i420_len(w / 2, h / 2)];
        link_video::scale::half_i420(&cur, w, h, &mut out).ok()?;
        cur = std::borrow::Cow::Owned(out);
        (w, h) = (w / 2, h / 2);
    }
    Some(cur)
}

fn print_summary(r: &ClientReport) {
    println!(
        "{} {}x{} {:.1} s, {}",
        r.url,
        r.width,
        r.height,
        r.seconds,
        if r.encrypted {
            "AES-128-GCM"
        } else {
            "not encrypted"
        }
    );
    println!(
        "frames: received {}, lost {}, FEC-recovered {}, decoded {}, decode errors {}, skipped {}",
        r.frames_received,
        r.frames_lost,
        r.fec_recovered,
        r.frames_decoded,
        r.decode_errors,
        r.frames_skipped
    );
    println!(
        "layers: TL0..TL{} received over the last second, pictures per layer {:?}; rendition {} at the end ({} changes, pictures per rendition {:?}); {:.1} pictures/s; {} keyframes, {} recovery frames, {} frames broken by a loss; own target {:.2} Mbit/s, encoder {:.2}",
        r.layer,
        r.frames_by_layer,
        r.rendition,
        r.rendition_changes,
        r.frames_by_rendition,
        r.fps_displayed,
        r.keyframes,
        r.recovery_frames,
        r.frames_broken,
        r.viewer_target_mbps,
        r.target_mbps
    );
    println!(
        "check: index {} checked, {} mismatches, {} unreadable; PSNR mean {:.2} dB, min {:.2} dB ({} pictures)",
        r.index_checked,
        r.index_mismatches,
        r.index_unreadable,
        r.psnr_db_mean,
        r.psnr_db_min,
        r.psnr_frames
    );
    let s = &r.stages_ms;
    println!(
        "latency capture->decoded p50 {:.2} ms, p99 {:.2} ms; by stage p50/p99 ms: capture->encoded {:.2}/{:.2}, encoded->sent {:.2}/{:.2}, sent->reassembled {:.2}/{:.2}, reassembled->decoded {:.2}/{:.2}",
        r.latency_ms.p50,
        r.latency_ms.p99,
        s.capture_to_encoded.p50,
        s.capture_to_encoded.p99,
        s.encoded_to_sent.p50,
        s.encoded_to_sent.p99,
        s.sent_to_reassembled.p50,
        s.sent_to_reassembled.p99,
        s.reassembled_to_decoded.p50,
        s.reassembled_to_decoded.p99
    );
    let st = &r.settled;
    println!(
        "from {:.1} s after the first picture: {} pictures, {:.1} a second, latency p50 {:.2} ms, p99 {:.2} ms, longest gap {:.0} ms",
        st.after_s,
        st.frames_decoded,
        st.fps_displayed,
        st.latency_ms.p50,
        st.latency_ms.p99,
        st.longest_gap_ms
    );
    println!(
        "clock: {} (estimated offset {:.2} ms)",
        r.clock, r.clock_offset_estimate_ms
    );
    println!(
        "{:.2} Mbit/s (target {:.2}), input sent {} acked {} (RTT {:.2} ms)",
        r.bitrate_mbps, r.target_mbps, r.input_sent, r.input_acked, r.input_rtt_ms
    );
    if r.bottleneck_mbps > 0.0 {
        println!(
            "simulated bottleneck: {:.1} Mbit/s, {} datagrams dropped by its queue",
            r.bottleneck_mbps, r.bottleneck_queue_dropped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envelopes of pictures `from..to` of a `w`x`h` test pattern as
    /// rendition `r`, from a layered encoder of their own (one temporal
    /// layer), with an IDR forced at each of `idrs`.
    fn stream(w: usize, h: usize, r: u8, from: u64, to: u64, idrs: &[u64]) -> Vec<Vec<u8>> {
        use link_video::{Codec, Encoder as _, LayeredConfig, LayeredEncoder};
        let src = TestSrc::new(w, h, 30).unwrap();
        let mut enc = LayeredEncoder::new(LayeredConfig {
            temporal_layers: 1,
            ..LayeredConfig::new(w, h, 30, 500_000)
        })
        .unwrap();
        let mut pic = vec![0; src.frame_len()];
        let mut out = Vec::new();
        for i in from..to {
            if idrs.contains(&i) {
                enc.force_keyframe();
            }
            src.render(i, &mut pic).unwrap();
            let mut au = Vec::new();
            let info = enc.encode(&pic, &mut au).unwrap();
            let hdr = VideoHeader {
                live: false,
                codec: Codec::H264AnnexB,
                keyframe: info.keyframe,
                temporal_id: info.temporal_id,
                recovery: info.keyframe || info.recovery,
                rendition: r,
                viewer_target_10kbps: 0,
                width: w as u16,
                height: h as u16,
                target_kbps: 500,
                capture_index: i,
                capture_us: now_us(),
                encoded_us: now_us(),
                sent_us: 0,
            };
            let mut env = vec![0; link_video::HEADER_LEN + au.len()];
            hdr.encode_into(&mut env).unwrap();
            env[link_video::HEADER_LEN..].copy_from_slice(&au);
            out.push(env);
        }
        out
    }

    /// Runs the decoder thread over `frames` (session index, envelope),
    /// `gap_before` set on the first frame after a missing index.
    fn decode_all(frames: &[(u32, Vec<u8>)]) -> DecodeStats {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut last = None;
        for (index, data) in frames {
            tx.send(Job {
                data: data.clone(),
                index: *index,
                reassembled_us: now_us(),
                gap_before: last.is_some_and(|l: u32| *index != l + 1),
            })
            .unwrap();
            last = Some(*index);
        }
        drop(tx);
        let (unusable, _keep) = tokio::sync::mpsc::unbounded_channel();
        decode_thread(rx, unusable, None, 1, Arc::new(Live::default()))
    }

    // r[verify cli.client.check]
    #[test]
    fn a_keyframe_that_reports_the_damage_before_it_is_not_a_decode_error() {
        // The viewer receives rendition 0 (768x432), frames 0..10, and
        // moves to rendition 1 (384x216) at its keyframe 10, which is
        // lost. Its P frames 11 and 12 do not decode; the IDR at 13 then
        // reports the damaged picture OpenH264 completes in that call
        // (`video.layered.concealment`), and 14 and 15 decode whole.
        let big = stream(768, 432, 0, 0, 10, &[]);
        let small = stream(384, 216, 1, 10, 16, &[13]);
        let frames: Vec<(u32, Vec<u8>)> = big
            .into_iter()
            .chain(small)
            .enumerate()
            .filter(|(i, _)| *i != 10)
            .map(|(i, a)| (i as u32, a))
            .collect();
        let s = decode_all(&frames);
        assert_eq!(
            s.decode_errors, 0,
            "the loss's damage is not a decode error"
        );
        assert_eq!(s.broken, 3, "11, 12 and the IDR that reported their damage");
        assert_eq!(s.decoded, 12, "0-9, then 14 and 15 after the IDR");
        assert_eq!(s.by_rendition[..2], [10, 2]);
        // The same IDR with no loss before it decodes, and counts.
        let s = decode_all(&frames[..10]);
        assert_eq!((s.decode_errors, s.broken, s.decoded), (0, 0, 10));
    }

    // r[verify cli.client.settled]
    #[test]
    fn settled_counts_only_the_pictures_from_the_settle_time_on() {
        // 10 pictures a second for 5 s; latency 500 ms for the first 2 s,
        // 20 ms after; one 400 ms gap at 1 s (before the settle time) and a
        // 300 ms gap ending at 4.0 s.
        let mut log = Vec::new();
        let mut t = 1_000_000_000u64;
        for i in 0..50u64 {
            t += match i {
                10 => 400_000,
                40 => 300_000,
                _ => 100_000,
            };
            let l = if t < 1_000_000_000 + 2_000_000 {
                500_000
            } else {
                20_000
            };
            log.push((t, l));
        }
        let first = log[0].0;
        let st = settled(&log, 3.0);
        let after: Vec<_> = log.iter().filter(|p| p.0 >= first + 3_000_000).collect();
        assert_eq!(st.frames_decoded, after.len() as u64);
        assert_eq!(st.latency_ms.p99, 20.0, "the slow start is not counted");
        assert_eq!(
            st.longest_gap_ms, 300.0,
            "the gap at 1 s is before the settle time"
        );
        let span = (log.last().unwrap().0 - (first + 3_000_000)) as f64 / 1e6;
        assert!((st.fps_displayed - after.len() as f64 / span).abs() < 1e-9);
        // Everything counts from 0 s on.
        let all = settled(&log, 0.0);
        assert_eq!(all.frames_decoded, 50);
        assert_eq!(all.longest_gap_ms, 400.0);
        assert_eq!(all.latency_ms.p99, 500.0);
        // No pictures: zeros, no panic.
        assert_eq!(settled(&[], 3.0).frames_decoded, 0);
    }
}
