//! `linkstream host`: the encoder process and the fan-out to viewers.
//!
//! - The capture process (spawned, or connected over `--capture PATH`)
//!   writes raw I420 frames into shared-memory slots; the host leases each
//!   slot, encodes the picture in place (H.264, one encoder for all
//!   viewers) and gives the slot back.
//! - Each access unit is wrapped in the video envelope and queued to every
//!   viewer: one link-session `Host` per viewer (its own keys, FEC),
//!   accepted on one `UdpEndpoint` and one `WsServer` (path `/stream`).
//! - The encoder is `link_video::LayeredEncoder`: `--temporal-layers`
//!   dyadic temporal layers (default 2) and long-term references (LTR);
//!   with `--renditions N` (default 2) one per rendition, rendition `r`
//!   encoding the picture halved `r` times (simulcast), only while a
//!   viewer receives it.
//! - The fan-out is `link_video::hub::Hub`: each viewer gets the temporal
//!   layers its own target carries, and the encoder's bitrate is the
//!   fastest viewer's target, between `--min-bitrate` and `--bitrate`, so
//!   a slow viewer never lowers a fast one's quality; a viewer whose
//!   target cannot carry the full picture's base layer moves to a smaller
//!   rendition at its next keyframe. A viewer's queue is
//!   bounded (when it is full the viewer skips to the next recovery point,
//!   counted; the others are never held back), and a frame that waited
//!   longer than `--latency-budget-ms` is not sent (that viewer skips,
//!   counted). A viewer that lost or skipped a TL0 frame asks for a
//!   recovery: the hub coalesces the requests, the encoder answers with an
//!   LTR recovery frame (not an IDR), and the host confirms or rejects
//!   each LTR mark as the hub reports the viewers' verdicts. A new viewer
//!   gets a keyframe at once. This module wires it to the capture process,
//!   the encoder, the transports and the summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use link_session::{BweConfig, HostConfig};
use link_shm::{ShmLink, ShmListener};
use link_types::{Link, LinkRx};
use link_video::hub::{EncodedFrame, Hub, HubConfig, ViewerEvent};
use link_video::layered::{LtrId, Recovery};
use link_video::slot::{FrameHeader, PixelFormat};
use link_video::stream::STREAM_PATH;
use link_video::{Codec, Encoder as _, LayeredConfig, LayeredEncoder, VideoError, VideoHeader};

use crate::capture;
use crate::report::{HostReport, Quantiles, RenditionReport, ViewerReport};
use crate::util::{now_us, read_psk};

/// Options of `linkstream host`.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Serve native viewers over UDP on this address (e.g. 0.0.0.0:7000).
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<SocketAddr>,
    /// Serve viewers over WebSocket on this address (path /stream).
    #[arg(long, value_name = "ADDR")]
    pub ws: Option<SocketAddr>,
    /// Pre-shared key file (the key as text or hex, at least 16 bytes):
    /// sessions are encrypted with AES-GCM. Without it they are not.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Where frames come from: testsrc, testsrc:WxH@FPS, y4m:FILE, or an
    /// X11 screen: x11 or x11:DISPLAY, then optionally @OUTPUT or +X,Y,WxH.
    #[arg(long, value_name = "SPEC", default_value = "testsrc")]
    pub source: String,
    /// Frames per second (default: 60 for x11, the source's rate otherwise).
    #[arg(long, value_name = "N")]
    pub fps: Option<u32>,
    /// Encoder bitrate in bit/s: the start, and the most the encoder uses
    /// whatever the viewers' targets.
    #[arg(long, value_name = "BPS", default_value_t = 4_000_000,
          value_parser = clap::value_parser!(u64).range(10_000..=1_000_000_000))]
    pub bitrate: u64,
    /// The encoder's bitrate never goes below this, whatever the viewers'
    /// targets: a viewer whose path carries less skips to keyframes.
    #[arg(long, value_name = "BPS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(10_000..=1_000_000_000))]
    pub min_bitrate: u64,
    /// Temporal layers of the encoder (1-3). A viewer whose target is below
    /// the stream's rate receives the base layer (half the frame rate with
    /// 2 layers, a quarter with 3) instead of lowering everyone's bitrate.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(1..=3))]
    pub temporal_layers: u8,
    /// Renditions (simulcast, 1-3): with 2, a second encoding of the picture
    /// at half its width and height (at most --bitrate / 4); with 3, also
    /// one at a quarter (at most --bitrate / 16). A viewer whose target cannot carry the full
    /// picture's base layer receives a smaller rendition instead of
    /// freezing; a rendition no viewer receives is not encoded. The
    /// picture's width and height must be multiples of 2^N. Default: 2,
    /// or 1 (said at start) for a picture whose sizes are not multiples
    /// of 4.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=3))]
    pub renditions: Option<u8>,
    /// Log every input event from the viewers.
    #[arg(long)]
    pub print_input: bool,
    /// Stop after N seconds (default: until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = crate::util::non_negative)]
    pub seconds: Option<f64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// FEC parity on UDP, in percent of the data shards.
    #[arg(long, value_name = "PCT", default_value_t = 20,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub parity: u8,
    /// Frames queued per viewer before that viewer skips to the next keyframe.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub viewer_queue: u64,
    /// The most a frame may wait in the host's queues (plus the queue the
    /// viewer's session reports on its path) before it is sent; past it
    /// that viewer skips to the next keyframe (counted per viewer).
    #[arg(long, value_name = "MS", default_value_t = 150,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub latency_budget_ms: u64,
    /// Capture process: `spawn` (default) starts `linkstream capture` as a
    /// child; a path listens there for `linkstream capture --connect PATH`.
    #[arg(long, value_name = "spawn|PATH", default_value = "spawn")]
    pub capture: String,
    // --- browser page over TLS (web branch) ---
    /// Serve the page and the stream over https/wss with this PEM
    /// certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve https/wss with a certificate made at start; prints its
    /// SHA-256 fingerprints.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_signed: bool,
    /// Serve a desktop (--source x11) without a key: anyone who reaches
    /// the ports can watch. Without it and without --psk-file, a key is
    /// made at start and printed in the join commands.
    #[arg(long, conflicts_with = "psk_file")]
    pub no_auth: bool,
    /// Also accept browser connections from pages of this origin (scheme,
    /// host and port, as `https://example.com`), besides the host's own
    /// page. Repeatable. A desktop (--source x11) accepts only these and
    /// its own page.
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Over UDP, end a viewer's session when nothing arrived from it for N
    /// seconds (counted in `viewers_timed_out`). A viewer whose path comes
    /// back sooner resumes in the same session, without a new handshake.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = crate::util::idle_timeout)]
    pub idle_timeout: f64,
}

/// What the host keeps beside the hub: the summaries of the viewers that
/// left, and what the hub does not count.
struct Served {
    hub: Hub,
    finished: Mutex<Vec<ViewerReport>>,
    ws_refused_paths: AtomicU64,
    /// Browser connections refused for their origin (`--allow-origin`).
    ws_refused_origins: AtomicU64,
    print_input: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// r[impl cli.host.resume]
// r[impl cli.host.idle]
/// Serve one viewer: handshake, then frames out and events in until either
/// side ends. A viewer cut off for less than the idle timeout stays in
/// this session (its lost frames come back as a keyframe request); one
/// silent for the idle timeout is freed and counted.
async fn serve_viewer<L>(
    served: Arc<Served>,
    link: L,
    cfg: HostConfig,
    transport: &'static str,
    peer: String,
) where
    L: Link,
{
    let on_event = |e: ViewerEvent| match e {
        ViewerEvent::Joined(id) => {
            eprintln!("linkstream host: viewer {id} joined over {transport} from {peer}");
        }
        ViewerEvent::Input(id, ev) => {
            if served.print_input {
                eprintln!("input from viewer {id}: {ev:?}");
            }
        }
    };
    let s = match served.hub.serve(link, cfg, on_event).await {
        Ok(s) => s,
        Err(VideoError::HubStopped) => return,
        Err(e) => {
            eprintln!("linkstream host: {transport} viewer {peer}: {e}");
            return;
        }
    };
    eprintln!("linkstream host: viewer {} left ({})", s.id, s.end);
    let c = s.counters;
    lock(&served.finished).push(ViewerReport {
        id: s.id,
        transport: transport.into(),
        peer,
        frames_sent: s.session.frames_sent,
        frame_bytes_sent: s.session.frame_bytes_sent,
        padding_sent: s.session.padding_sent,
        frames_skipped: c.frames_skipped,
        skip_events: c.skip_events,
        frames_skipped_budget: c.frames_skipped_budget,
        budget_skip_events: c.budget_skip_events,
        keyframe_requests: c.keyframe_requests,
        keyframe_requests_coalesced: c.keyframe_requests_coalesced,
        keyframes_granted: c.keyframes_granted,
        layer: c.layer,
        layer_changes: c.layer_changes,
        rendition: c.rendition,
        rendition_changes: c.rendition_changes,
        target_bps: c.target_bps,
        frames_filtered: c.frames_filtered,
        recovery_requests: c.recovery_requests,
        recovery_requests_coalesced: c.recovery_requests_coalesced,
        recovery_frames_sent: c.recovery_frames_sent,
        keyframes_sent: c.keyframes_sent,
        input_events: c.input_events,
        reported_frames_lost: s.session.reported_frames_lost,
        reported_loss_ppm: s.session.reported_loss_ppm,
        auth_failures: s.session.auth_failures,
        seconds: s.duration.as_secs_f64(),
        end: s.end,
    });
}

/// The capture link: spawn `linkstream capture`, or wait for one at a path.
async fn start_capture(
    args: &HostArgs,
    frame_len: usize,
) -> Result<(ShmLink, Option<std::process::Child>), String> {
    let cfg = capture::shm_config(frame_len);
    if args.capture == "spawn" {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["capture", "--source", &args.source])
            .stderr(std::process::Stdio::piped());
        if let Some(rate) = args.fps {
            cmd.args(["--fps", &rate.to_string()]);
        }
        let (link, child) = ShmLink::spawn(&mut cmd, &cfg)
            .await
            .map_err(|e| format!("starting the capture process: {e}"))?;
        Ok((link, Some(child)))
    } else {
        let path = PathBuf::from(&args.capture);
        let listener = ShmListener::bind(&path, &cfg)
            .map_err(|e| format!("capture listener {}: {e}", path.display()))?;
        eprintln!(
            "linkstream host: waiting for `linkstream capture --source {}{} --connect {}`",
            args.source,
            args.fps.map(|r| format!(" --fps {r}")).unwrap_or_default(),
            path.display()
        );
        let link = listener
            .accept()
            .await
            .map_err(|e| format!("capture listener {}: {e}", path.display()))?;
        Ok((link, None))
    }
}

// r[impl cli.errors.port]
// r[impl cli.errors.y4m]
// r[impl cli.errors.x11]
// r[impl cli.host.x11]
/// `linkstream host`.
pub async fn run(args: HostArgs) -> Result<(), String> {
    if args.udp.is_none() && args.ws.is_none() {
        return Err("give --udp ADDR, --ws ADDR or both".into());
    }
    if args.min_bitrate > args.bitrate {
        return Err(format!(
            "--min-bitrate {} is above --bitrate {}",
            args.min_bitrate, args.bitrate
        ));
    }
    if let Some(line) = link_video::build::slow_encoder_warning() {
        eprintln!("linkstream host: {line}");
    }
    // Open the source here too: a bad file is refused before anything starts.
    let source = capture::open_source(&args.source, args.fps)?;
    // r[impl cli.host.private]
    // A desktop is private by default: a key of this run's own when none
    // is given, unless --no-auth says otherwise.
    let mut made_key = None;
    let psk = match &args.psk_file {
        Some(p) => Some(read_psk(p)?),
        None if source.is_live() && !args.no_auth => {
            let key = RunKey::make()?;
            eprintln!(
                "linkstream host: a desktop is private: no --psk-file, so this run's key is in {} (the join commands below carry it; --no-auth serves without one)",
                key.path.display()
            );
            let bytes = key.bytes.clone();
            made_key = Some(key);
            Some(bytes)
        }
        None if source.is_live() => {
            eprintln!(
                "linkstream host: WARNING: --no-auth: serving a desktop WITHOUT a key; anyone who reaches the ports can watch it and send input"
            );
            None
        }
        None => {
            eprintln!(
                "linkstream host: WARNING: no --psk-file: sessions are NOT encrypted (anyone on the path can watch and inject input)"
            );
            None
        }
    };
    let same_origin = source.is_live() || !args.allow_origin.is_empty();
    let (width, height, fps) = (source.width(), source.height(), source.fps() as f64);
    let frame_len = source.frame_len();
    let kind = (source.pixel_format(), source.is_live());
    let capture_path = source.path();
    drop(source);
    // r[impl cli.host.renditions]
    let renditions = match args.renditions {
        Some(n) => n,
        None if link_video::scale::can_halve(width, height, 1) => 2,
        None => {
            eprintln!(
                "linkstream host: one rendition: the source's {width}x{height} cannot be halved evenly (--renditions 2 needs sizes that are multiples of 4)"
            );
            1
        }
    };

    // Bind both transports before starting anything else (a port in use
    // fails here, with its address).
    let udp = match args.udp {
        Some(addr) => Some(
            // Under a flood of handshakes from unvalidated addresses the
            // gate answers statelessly (a retry token) before any peer
            // state exists (rules udp.endpoint.retry, session.handshake.retry).
            link_udp::UdpEndpoint::bind_with_gate(
                addr,
                link_udp::EndpointConfig::default(),
                std::sync::Arc::new(
                    link_session::RetryGate::new()
                        .map_err(|e| format!("retry gate: no randomness: {e}"))?,
                ),
            )
            .map_err(|e| format!("UDP {addr}: {e}"))?,
        ),
        None => None,
    };
    // --- the browser page on the WebSocket port (web branch) ---
    let tls_choice = crate::web_assets::TlsChoice {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        self_signed: args.self_signed,
    };
    if args.ws.is_none() && (args.self_signed || args.tls_cert.is_some()) {
        return Err("--tls-cert/--tls-key and --self-signed need --ws ADDR".into());
    }
    let ws = match args.ws {
        Some(addr) => {
            let (mut options, notes) = crate::web_assets::server_options(&tls_choice, addr)?;
            let tls = options.tls.is_some();
            // r[impl cli.host.origin]
            if same_origin {
                options.http = options
                    .http
                    .map(|r| r.same_origin_only(args.allow_origin.clone()));
            }
            // Few frames may wait in a viewer's WebSocket write queue, and
            // little in the kernel (TCP_NOTSENT_LOWAT): a viewer that
            // drains slower than the stream then backs up into its own
            // bounded queue, where it skips to the next keyframe, instead of
            // buffering seconds of video in socket buffers.
            let config = link_ws::WsConfig {
                queue: 4,
                write_buffer: 32 << 10,
                max_unsent: Some(32 << 10),
                ..Default::default()
            };
            let server = link_ws::WsServer::bind_with(addr, config, options)
                .await
                .map_err(|e| format!("WebSocket {addr}: {e}"))?;
            for n in notes {
                eprintln!("linkstream host: {n}");
            }
            for url in crate::web_assets::join_urls(server.local_addr(), tls, psk.as_deref()) {
                eprintln!("linkstream host: open in a browser: {url}");
            }
            Some((server, tls))
        }
        None => None,
    };
    // --- end web branch ---

    let hub = Arc::new(Served {
        hub: Hub::new(HubConfig {
            queue: args.viewer_queue as usize,
            latency_budget: Duration::from_millis(args.latency_budget_ms),
            max_bitrate_bps: args.bitrate,
            min_bitrate_bps: args.min_bitrate,
            recovery: true,
            renditions,
            ..HubConfig::new(args.bitrate)
        }),
        finished: Mutex::new(Vec::new()),
        ws_refused_paths: AtomicU64::new(0),
        ws_refused_origins: AtomicU64::new(0),
        print_input: args.print_input,
    });
    let host_cfg = HostConfig {
        psk: psk.clone(),
        parity_pct: args.parity,
        adaptive_parity: true,
        max_frame: 4 << 20,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        bwe: BweConfig {
            start_bps: args.bitrate,
            min_bps: args.min_bitrate.min(500_000),
            ..Default::default()
        },
        ..Default::default()
    };
    let key_hint = match (&made_key, psk.is_some()) {
        (Some(k), _) => format!(" --psk-file {}", k.path.display()),
        (None, true) => " --psk-file FILE".into(),
        (None, false) => String::new(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ep) = udp {
        let local = ep.local_addr();
        println_join(&format!("udp://{local}"), &key_hint);
        let (hub, cfg) = (hub.clone(), host_cfg.clone());
        tasks.spawn(async move {
            let mut viewers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    link = ep.accept() => {
                        let peer = link.peer_addr().to_string();
                        viewers.spawn(serve_viewer(hub.clone(), link, cfg.clone(), "udp", peer));
                    }
                    _ = hub.hub.stopped() => break,
                }
            }
            while viewers.join_next().await.is_some() {}
        });
    }
    if let Some((mut server, tls)) = ws {
        let local = server.local_addr();
        let scheme = if tls { "wss" } else { "ws" };
        println_join(&format!("{scheme}://{local}"), &key_hint);
        let (hub, cfg) = (hub.clone(), host_cfg.clone());
        tasks.spawn(async move {
            let mut viewers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    acc = server.accept() => match acc {
                        Ok(acc) if acc.path == STREAM_PATH => {
                            let peer = acc.peer.to_string();
                            viewers.spawn(serve_viewer(hub.clone(), acc.link, cfg.clone(), "ws", peer));
                        }
                        Ok(acc) => {
                            hub.ws_refused_paths.fetch_add(1, Relaxed);
                            tracing::info!(path = %acc.path, "WebSocket on another path than /stream refused");
                        }
                        Err(e) => {
                            eprintln!("linkstream host: WebSocket accept: {e}");
                            break;
                        }
                    },
                    _ = hub.hub.stopped() => break,
                }
            }
            hub.ws_refused_origins
                .store(server.counts().origin_refused, Relaxed);
            while viewers.join_next().await.is_some() {}
        });
    }

    let (link, child) = start_capture(&args, frame_len).await?;
    let mut report = HostReport {
        source: args.source.clone(),
        capture_path,
        width: width as u64,
        height: height as u64,
        fps,
        encrypted: psk.is_some(),
        latency_budget_ms: args.latency_budget_ms,
        temporal_layers: u64::from(args.temporal_layers),
        ..Default::default()
    };
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let outcome = encode_loop(
        &hub.hub,
        link,
        (width, height, fps),
        kind,
        (args.temporal_layers, renditions),
        deadline,
        &mut report,
    )
    .await;
    // Stop: no new viewers, every queue closes (each viewer's session
    // sends its Bye after the frames already queued).
    hub.hub.stop();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        eprintln!("linkstream host: viewers still busy after 5 s; stopping anyway");
        tasks.abort_all();
    }
    if let Some(child) = child {
        let failed = tokio::task::spawn_blocking(move || finish_capture(child))
            .await
            .map_err(|e| format!("capture process: {e}"))?;
        if let Some(err) = failed {
            return Err(err);
        }
    }
    outcome?;
    let mut viewers = std::mem::take(&mut *lock(&hub.finished));
    viewers.sort_by_key(|v| v.id);
    report.viewers = viewers;
    let stats = hub.hub.stats();
    report.handshake_failures = stats.handshake_failures;
    report.ws_refused_paths = hub.ws_refused_paths.load(Relaxed);
    report.ws_refused_origins = hub.ws_refused_origins.load(Relaxed);
    report.viewers_joined = stats.viewers_joined;
    report.viewers_timed_out = stats.viewers_timed_out;
    if args.json {
        println!(
            "{}",
            facet_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// Wait for the capture process (it ends when the link closes; killed
/// after 2 s), pass on what it wrote to stderr, and turn a failure into an
/// error naming the capture's own message.
fn finish_capture(mut child: std::process::Child) -> Option<String> {
    use std::io::Read;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = &mut stderr {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().unwrap_or_default();
    match status {
        Some(s) if !s.success() => {
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            Some(format!(
                "capture process failed ({s}): {}",
                last.trim_start_matches("linkstream: ")
            ))
        }
        _ => {
            eprint!("{text}");
            None
        }
    }
}

/// A key made for one run of a host serving a desktop without
/// `--psk-file`: 32 random bytes, written as hex to a file only this user
/// can read (in `$XDG_RUNTIME_DIR`, else the temporary directory), removed
/// when the host ends.
struct RunKey {
    bytes: Vec<u8>,
    path: PathBuf,
}

impl RunKey {
    fn make() -> Result<RunKey, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // The key, then a name for its file (not derived from the key).
        let mut bytes = vec![0u8; 36];
        getrandom::fill(&mut bytes).map_err(|e| format!("making a key: no randomness: {e}"))?;
        let name: String = bytes
            .split_off(32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("linkstream-host-{}-{name}.key", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("key file {}: {e}", path.display()))?;
        f.write_all(hex.as_bytes())
            .map_err(|e| format!("key file {}: {e}", path.display()))?;
        Ok(RunKey { bytes, path })
    }
}

impl Drop for RunKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn println_join(url: &str, key_hint: &str) {
    eprintln!("linkstream host: join with: linkstream client {url}{key_hint}");
}

/// One rendition's encoder and what the loop keeps for it.
struct Rendition {
    r: u8,
    width: usize,
    height: usize,
    encoder: LayeredEncoder,
    bitrate: u64,
    /// The LTR marks sent and not yet decided, by capture index.
    marks: std::collections::VecDeque<(u64, LtrId)>,
    /// The halved picture (rendition 1 and up).
    picture: Vec<u8>,
    frames: u64,
    keyframes: u64,
    bytes: u64,
    encode_us: Vec<u64>,
}

/// Lease each captured frame, encode it (every rendition a viewer
/// receives), fan it out. Ends when the capture process ends.
async fn encode_loop(
    hub: &Hub,
    link: ShmLink,
    (width, height, fps): (usize, usize, f64),
    (format, live): (PixelFormat, bool),
    (temporal_layers, renditions): (u8, u8),
    deadline: Option<tokio::time::Instant>,
    report: &mut HostReport,
) -> Result<(), String> {
    let (_tx, mut rx) = link.split();
    let fps_int = (fps.round() as u32).clamp(1, 240);
    if !link_video::scale::can_halve(width, height, u32::from(renditions) - 1) {
        return Err(format!(
            "--renditions {renditions} needs a width and a height that are multiples of {}; the source is {width}x{height} (use --renditions 1)",
            2u32 << (renditions - 1)
        ));
    }
    let mut rends = Vec::new();
    for r in 0..renditions {
        let (w, h) = (width >> r, height >> r);
        let bitrate = hub.target_bitrate_of(r);
        let encoder = LayeredEncoder::new(LayeredConfig {
            temporal_layers,
            ..LayeredConfig::new(w, h, fps_int, bitrate)
        })
        .map_err(|e| format!("encoder of rendition {r} ({w}x{h}): {e}"))?;
        rends.push(Rendition {
            r,
            width: w,
            height: h,
            encoder,
            bitrate,
            marks: Default::default(),
            picture: if r == 0 {
                Vec::new()
            } else {
                vec![0; link_video::i420_len(w, h)]
            },
            frames: 0,
            keyframes: 0,
            bytes: 0,
            encode_us: Vec::new(),
        });
    }
    let mut au = Vec::new();
    let mut encode_us = Vec::new();
    let mut converted = match format {
        PixelFormat::I420 => Vec::new(),
        PixelFormat::Bgrx => vec![0u8; link_video::i420_len(width, height)],
    };
    let mut bytes = 0u64;
    let started = Instant::now();
    let mut progress = crate::progress::Progress::new("host", None);
    // One Ctrl-C listener for the whole run: a new one per iteration would
    // miss a signal that arrives while a frame is being encoded.
    let mut sigint = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let got = tokio::select! {
            r = rx.recv() => r,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = &mut sigint => break,
        };
        let msg = match got {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => return Err(format!("capture link: {e}")),
        };
        let (hdr, picture) = FrameHeader::parse(msg.as_slice()).map_err(|e| e.to_string())?;
        if hdr.width as usize != width || hdr.height as usize != height || hdr.format != format {
            return Err(format!(
                "capture sent a {}x{} {:?} frame, expected {width}x{height} {format:?}",
                hdr.width, hdr.height, hdr.format
            ));
        }
        // r[impl video.convert.bgrx]
        // A screen's BGRX becomes I420 here, once, in the encoder process.
        let picture: &[u8] = match hdr.format {
            PixelFormat::I420 => picture,
            PixelFormat::Bgrx => {
                link_video::convert::bgrx_to_i420(
                    picture,
                    width,
                    height,
                    hdr.stride as usize,
                    &mut converted,
                )
                .map_err(|e| format!("captured picture: {e}"))?;
                &converted
            }
        };
        report.frames_captured += 1;
        if hdr.flags & link_video::slot::FLAG_LENT != 0 {
            report.frames_zero_copy += 1;
        }
        report.capture_dropped = hdr.dropped as u64;
        let now = Instant::now();
        let frame_t0 = Instant::now();
        // The renditions to encode: those a viewer receives or moves to;
        // a smaller one is halved from the one above it.
        let active: Vec<bool> = (0..renditions).map(|r| hub.rendition_active(r)).collect();
        let deepest = active.iter().rposition(|&a| a).unwrap_or(0);
        let mut encoded_any = false;
        for i in 0..=deepest {
            let t0 = Instant::now();
            if i > 0 {
                let (above, rest) = rends.split_at_mut(i);
                let src: &[u8] = if i == 1 {
                    picture
                } else {
                    &above[i - 1].picture
                };
                let (w, h) = (above[i - 1].width, above[i - 1].height);
                let dst = &mut rest[0].picture;
                // r[impl video.scale.half]
                link_video::scale::half_i420(src, w, h, dst)
                    .map_err(|e| format!("rendition {i}: {e}"))?;
            }
            if !active[i] {
                continue;
            }
            let rend = &mut rends[i];
            let r = rend.r;
            let key = hub.take_keyframe_of(r, now);
            let target = hub.target_bitrate_of(r);
            if target != rend.bitrate {
                rend.bitrate = target;
                if let Err(e) = rend.encoder.set_bitrate(target) {
                    tracing::warn!("rendition {r} encoder bitrate {target}: {e}");
                }
            }
            if key {
                rend.encoder.force_keyframe();
            }
            // r[impl video.hub.ltr-confirm]
            for (index, ok) in hub.take_mark_outcomes_of(r) {
                let Some(pos) = rend.marks.iter().position(|m| m.0 == index) else {
                    continue;
                };
                let (_, id) = rend.marks.remove(pos).expect("position is in range");
                let res = if ok {
                    report.ltr_confirmed += 1;
                    rend.encoder.confirm_ltr(id)
                } else {
                    report.ltr_rejected += 1;
                    rend.encoder.reject_ltr(id)
                };
                // A mark from before the last IDR is stale: nothing to do.
                if let Err(e) = res {
                    tracing::debug!("rendition {r} LTR {id}: {e}");
                }
            }
            // r[impl video.hub.recovery]
            if hub.take_recovery_of(r) {
                report.recoveries_requested += 1;
                match rend.encoder.request_recovery() {
                    Ok(Recovery::Ltr(id)) => tracing::debug!("rendition {r}: recovery from {id}"),
                    Ok(Recovery::Idr) => tracing::debug!("rendition {r}: recovery by an IDR"),
                    Err(e) => tracing::warn!("rendition {r}: recovery request: {e}"),
                }
            }
            // Rendition 0 is read in place from the shared-memory slot.
            au.clear();
            let input: &[u8] = if r == 0 { picture } else { &rend.picture };
            let out = tokio::task::block_in_place(|| rend.encoder.encode(input, &mut au));
            let encoded_us = now_us();
            let info = match out {
                Ok(info) => info,
                Err(e) => {
                    report.encode_errors += 1;
                    tracing::warn!("rendition {r}: encode: {e}");
                    continue;
                }
            };
            encoded_any = true;
            rend.encode_us.push(t0.elapsed().as_micros() as u64);
            let keyframe = info.keyframe;
            rend.frames += 1;
            rend.keyframes += keyframe as u64;
            report.keyframes += keyframe as u64;
            if info.recovery {
                if keyframe {
                    report.idr_recoveries += 1;
                } else {
                    report.recovery_frames += 1;
                }
            }
            if let Some(id) = info.ltr_mark {
                if keyframe {
                    // An IDR makes every older mark stale.
                    rend.marks.clear();
                }
                rend.marks.push_back((hdr.index, id));
                while rend.marks.len() > 32 {
                    rend.marks.pop_front();
                }
            }
            rend.bytes += au.len() as u64;
            bytes += au.len() as u64;
            if link_video::HEADER_LEN + au.len() > 4 << 20 {
                report.frames_too_large += 1;
                continue;
            }
            let header = VideoHeader {
                codec: Codec::H264AnnexB,
                keyframe,
                temporal_id: info.temporal_id,
                recovery: info.recovery,
                rendition: r,
                viewer_target_10kbps: 0,
                width: rend.width as u16,
                height: rend.height as u16,
                target_kbps: (rend.bitrate / 1000).min(u32::MAX as u64) as u32,
                capture_index: hdr.index,
                live,
                capture_us: hdr.capture_us,
                encoded_us,
                sent_us: 0,
            };
            hub.publish(Arc::new(EncodedFrame {
                header,
                access_unit: au.clone(),
                ltr_mark: info.ltr_mark.is_some(),
            }));
        }
        drop(msg); // the slot goes back to the capture process
        if !encoded_any {
            continue;
        }
        encode_us.push(frame_t0.elapsed().as_micros() as u64);
        report.frames_encoded += 1;
        let stats = hub.stats();
        let bitrate = rends[0].bitrate;
        progress.update(report.frames_encoded, || {
            format!(
                "linkstream host: {} frames encoded, {} viewers ({} joined, {} timed out), {:.2} Mbit/s target",
                report.frames_encoded,
                stats.viewers,
                stats.viewers_joined,
                stats.viewers_timed_out,
                bitrate as f64 / 1e6
            )
        });
    }
    progress.finish();
    report.encode_ms = Quantiles::of(&mut encode_us);
    report.bitrate_bps = rends[0].bitrate;
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        report.encoded_mbps = bytes as f64 * 8.0 / secs / 1e6;
    }
    report.renditions = rends
        .iter_mut()
        .map(|r| RenditionReport {
            rendition: u64::from(r.r),
            width: r.width as u64,
            height: r.height as u64,
            frames_encoded: r.frames,
            keyframes: r.keyframes,
            bitrate_bps: r.bitrate,
            encoded_mbps: if secs > 0.0 {
                r.bytes as f64 * 8.0 / secs / 1e6
            } else {
                0.0
            },
            encode_ms: Quantiles::of(&mut r.encode_us),
        })
        .collect();
    Ok(())
}

fn print_summary(r: &HostReport) {
    println!(
        "source {} {}x{} @ {} fps ({}), {}",
        r.source,
        r.width,
        r.height,
        r.fps,
        r.capture_path,
        if r.encrypted {
            "AES-128-GCM"
        } else {
            "NOT encrypted"
        }
    );
    println!(
        "captured {} ({} written by the X server into the slot, dropped {}), encoded {} ({} keyframes, {} errors), encode p50/p99 {:.2}/{:.2} ms, {:.2} Mbit/s",
        r.frames_captured,
        r.frames_zero_copy,
        r.capture_dropped,
        r.frames_encoded,
        r.keyframes,
        r.encode_errors,
        r.encode_ms.p50,
        r.encode_ms.p99,
        r.encoded_mbps
    );
    println!(
        "{} temporal layers; recoveries: {} asked, {} LTR recovery frames, {} by IDR; LTR marks {} confirmed, {} rejected",
        r.temporal_layers,
        r.recoveries_requested,
        r.recovery_frames,
        r.idr_recoveries,
        r.ltr_confirmed,
        r.ltr_rejected
    );
    for rd in r.renditions.iter().filter(|rd| rd.frames_encoded > 0) {
        println!(
            "rendition {} {}x{}: {} frames encoded ({} keyframes), {:.2} Mbit/s, bitrate {:.2} Mbit/s at the end, encode p50/p99 {:.2}/{:.2} ms",
            rd.rendition,
            rd.width,
            rd.height,
            rd.frames_encoded,
            rd.keyframes,
            rd.encoded_mbps,
            rd.bitrate_bps as f64 / 1e6,
            rd.encode_ms.p50,
            rd.encode_ms.p99
        );
    }
    println!(
        "viewers: {} joined, {} timed out, {} handshakes failed",
        r.viewers_joined, r.viewers_timed_out, r.handshake_failures
    );
    println!(
        "{:>3} {:<4} {:<22} {:>7} {:>8} {:>6} {:>9} {:>6} {:>6}  end",
        "id", "via", "peer", "sent", "skipped", "skips", "key req", "keys", "input"
    );
    for v in &r.viewers {
        println!(
            "{:>3} {:<4} {:<22} {:>7} {:>8} {:>6} {:>9} {:>6} {:>6}  {}",
            v.id,
            v.transport,
            v.peer,
            v.frames_sent,
            v.frames_skipped,
            v.skip_events,
            v.keyframe_requests,
            v.keyframes_granted,
            v.input_events,
            v.end
        );
    }
    for v in &r.viewers {
        println!(
            "viewer {}: {} frames skipped over the latency budget of {} ms ({} skips)",
            v.id, v.frames_skipped_budget, r.latency_budget_ms, v.budget_skip_events
        );
        println!(
            "viewer {}: rendition {} ({} changes), layer TL0..TL{} ({} changes, {} frames of higher layers not sent), target {:.2} Mbit/s, {} recovery frames and {} keyframes sent, {} recoveries asked ({} coalesced)",
            v.id,
            v.rendition,
            v.rendition_changes,
            v.layer,
            v.layer_changes,
            v.frames_filtered,
            v.target_bps as f64 / 1e6,
            v.recovery_frames_sent,
            v.keyframes_sent,
            v.recovery_requests,
            v.recovery_requests_coalesced
        );
    }
}
