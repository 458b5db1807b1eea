//! `linkstream host`: the encoder process and the fan-out to viewers.
//!
//! - The capture process (spawned, or connected over `--capture PATH`)
//!   writes raw I420 frames into shared-memory slots; the host leases each
//!   slot, encodes the picture in place (H.264, one encoder for all
//!   viewers) and gives the slot back.
//! - Each access unit is wrapped in the video envelope and queued to every
//!   viewer: one link-session `Host` per viewer (its own keys, FEC),
//!   accepted on one `UdpEndpoint` and one `WsServer` (path `/stream`).
//! - A viewer's queue is bounded. When it is full the viewer skips frames
//!   until the next keyframe (counted); the others are never held back.
//! - Keyframes: a new viewer gets one at once; a viewer's requests (lost
//!   frames, skips) are granted at most once a second per viewer.
//! - The encoder's bitrate is the lowest viewer target, never below
//!   `--min-bitrate`; the target is `--bitrate` until the session reports
//!   its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use facet::Facet;
use link_session::{BweConfig, FrameFlags, Host, HostConfig, HostEvent, SessionError};
use link_shm::{ShmLink, ShmListener};
use link_types::{Link, LinkRx};
use tokio::sync::{Notify, mpsc};

use crate::capture::{self, FrameHeader};
use crate::report::Quantiles;
use crate::util::{now_us, read_psk};
use crate::video::{self, Codec, VideoHeader};

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
    /// Where frames come from: testsrc[:WxH@FPS] or y4m:FILE.
    #[arg(long, value_name = "SPEC", default_value = "testsrc")]
    pub source: String,
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
    /// Log every input event from the viewers.
    #[arg(long)]
    pub print_input: bool,
    /// Stop after N seconds (default: until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = crate::demo::non_negative)]
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
    /// Over UDP, end a viewer's session when nothing arrived from it for N
    /// seconds (counted in `viewers_timed_out`). A viewer whose path comes
    /// back sooner resumes in the same session, without a new handshake.
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = crate::util::idle_timeout)]
    pub idle_timeout: f64,
}

/// One encoded frame, shared by every viewer's queue.
struct Encoded {
    header: VideoHeader,
    au: Vec<u8>,
}

/// What the host knows about one viewer, shared with its task.
struct ViewerInfo {
    id: u64,
    frames_queued: AtomicU64,
    frames_skipped: AtomicU64,
    skip_events: AtomicU64,
    key_wanted: AtomicBool,
    keyframe_requests: AtomicU64,
    keyframe_requests_coalesced: AtomicU64,
    keyframes_granted: AtomicU64,
    input_events: AtomicU64,
    target_bps: AtomicU64,
}

/// The encoder's view of one viewer.
struct Viewer {
    info: Arc<ViewerInfo>,
    queue: mpsc::Sender<Arc<Encoded>>,
    waiting_key: bool,
    last_grant: Option<Instant>,
}

/// One viewer's line in the summary.
#[derive(Debug, Clone, Default, Facet)]
pub struct ViewerReport {
    pub id: u64,
    pub transport: String,
    pub peer: String,
    pub frames_sent: u64,
    pub frames_skipped: u64,
    pub skip_events: u64,
    pub keyframe_requests: u64,
    pub keyframe_requests_coalesced: u64,
    pub keyframes_granted: u64,
    pub input_events: u64,
    pub reported_frames_lost: u64,
    pub reported_loss_ppm: u64,
    pub auth_failures: u64,
    pub seconds: f64,
    pub end: String,
}

/// The host's summary.
#[derive(Debug, Clone, Default, Facet)]
pub struct HostReport {
    pub source: String,
    pub width: u64,
    pub height: u64,
    pub fps: f64,
    pub encrypted: bool,
    pub frames_captured: u64,
    pub capture_dropped: u64,
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub encode_errors: u64,
    pub frames_too_large: u64,
    pub encode_ms: Quantiles,
    pub encoded_mbps: f64,
    pub bitrate_bps: u64,
    pub handshake_failures: u64,
    pub ws_refused_paths: u64,
    /// Sessions established (handshakes completed), over both transports.
    pub viewers_joined: u64,
    /// Sessions ended because nothing arrived from the viewer for
    /// `--idle-timeout` (a viewer killed or cut off for good).
    pub viewers_timed_out: u64,
    pub viewers: Vec<ViewerReport>,
}

/// State shared by the encoder, the accept loops and the viewer tasks.
struct Hub {
    viewers: Mutex<Vec<Viewer>>,
    finished: Mutex<Vec<ViewerReport>>,
    force_idr: AtomicBool,
    next_id: AtomicU64,
    handshake_failures: AtomicU64,
    ws_refused_paths: AtomicU64,
    viewers_joined: AtomicU64,
    viewers_timed_out: AtomicU64,
    stop: Notify,
    stopping: AtomicBool,
    queue: usize,
    print_input: bool,
    bitrate: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Smallest interval between two keyframes granted to one viewer.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

impl Hub {
    fn new(queue: usize, print_input: bool, bitrate: u64) -> Hub {
        Hub {
            viewers: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            force_idr: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            handshake_failures: AtomicU64::new(0),
            ws_refused_paths: AtomicU64::new(0),
            viewers_joined: AtomicU64::new(0),
            viewers_timed_out: AtomicU64::new(0),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            queue,
            print_input,
            bitrate,
        }
    }

    // r[impl cli.host.keyframes]
    fn register(&self) -> (Arc<ViewerInfo>, mpsc::Receiver<Arc<Encoded>>) {
        let (tx, rx) = mpsc::channel(self.queue);
        let info = Arc::new(ViewerInfo {
            id: self.next_id.fetch_add(1, Relaxed),
            frames_queued: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            skip_events: AtomicU64::new(0),
            key_wanted: AtomicBool::new(false),
            keyframe_requests: AtomicU64::new(0),
            keyframe_requests_coalesced: AtomicU64::new(0),
            keyframes_granted: AtomicU64::new(1),
            input_events: AtomicU64::new(0),
            target_bps: AtomicU64::new(self.bitrate),
        });
        lock(&self.viewers).push(Viewer {
            info: info.clone(),
            queue: tx,
            waiting_key: true,
            last_grant: Some(Instant::now()),
        });
        // A new viewer starts with a keyframe.
        self.force_idr.store(true, Relaxed);
        (info, rx)
    }

    fn remove(&self, id: u64) {
        lock(&self.viewers).retain(|v| v.info.id != id);
    }

    // r[impl cli.host.bitrate]
    /// The encoder's bitrate: the lowest viewer target, at most
    /// `--bitrate`, at least `floor`.
    fn target(&self, floor: u64) -> u64 {
        let v = lock(&self.viewers);
        v.iter()
            .map(|v| v.info.target_bps.load(Relaxed))
            .min()
            .unwrap_or(self.bitrate)
            .min(self.bitrate)
            .max(floor)
    }

    /// Whether the next frame must be a keyframe: a new viewer, or a
    /// viewer's request whose one-second window is open (granted here).
    fn take_keyframe(&self, now: Instant) -> bool {
        let mut force = self.force_idr.swap(false, Relaxed);
        for v in lock(&self.viewers).iter_mut() {
            if v.info.key_wanted.load(Relaxed)
                && v.last_grant.is_none_or(|t| now - t >= KEYFRAME_INTERVAL)
            {
                v.info.key_wanted.store(false, Relaxed);
                v.info.keyframes_granted.fetch_add(1, Relaxed);
                v.last_grant = Some(now);
                force = true;
            }
        }
        force
    }

    // r[impl cli.host.fanout]
    /// Queue a frame to every viewer. A viewer whose queue is full skips
    /// to the next keyframe (and asks for one).
    fn fan_out(&self, frame: Arc<Encoded>) {
        let key = frame.header.keyframe;
        let mut viewers = lock(&self.viewers);
        viewers.retain_mut(|v| {
            if v.waiting_key && !key {
                v.info.frames_skipped.fetch_add(1, Relaxed);
                return true;
            }
            match v.queue.try_send(frame.clone()) {
                Ok(()) => {
                    v.waiting_key = false;
                    v.info.frames_queued.fetch_add(1, Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    v.waiting_key = true;
                    v.info.frames_skipped.fetch_add(1, Relaxed);
                    v.info.skip_events.fetch_add(1, Relaxed);
                    request_key(&v.info);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

fn request_key(info: &ViewerInfo) {
    info.keyframe_requests.fetch_add(1, Relaxed);
    if info.key_wanted.swap(true, Relaxed) {
        info.keyframe_requests_coalesced.fetch_add(1, Relaxed);
    }
}

// r[impl cli.host.resume]
// r[impl cli.host.idle]
/// Serve one viewer: handshake, then frames out and events in until either
/// side ends. A viewer cut off for less than the idle timeout stays in
/// this session (its lost frames come back as a keyframe request); one
/// silent for the idle timeout is freed and counted.
async fn serve_viewer<L>(
    hub: Arc<Hub>,
    link: L,
    cfg: HostConfig,
    transport: &'static str,
    peer: String,
) where
    L: Link + Send + 'static,
    L::Tx: Send + Sync + 'static,
    L::Rx: Send + 'static,
{
    let started = Instant::now();
    let (mut host, mut events) = match Host::accept(link, cfg).await {
        Ok(x) => x,
        Err(e) => {
            hub.handshake_failures.fetch_add(1, Relaxed);
            eprintln!("linkstream host: {transport} viewer {peer}: handshake failed: {e}");
            return;
        }
    };
    if hub.stopping.load(Relaxed) {
        let _ = host.close().await;
        return;
    }
    hub.viewers_joined.fetch_add(1, Relaxed);
    let (info, mut queue) = hub.register();
    info.target_bps.store(host.target_bitrate(), Relaxed);
    eprintln!(
        "linkstream host: viewer {} joined over {transport} from {peer}",
        info.id
    );
    let stopped = Notify::new();
    let send = async {
        let mut end = String::from("host stopped");
        while let Some(f) = queue.recv().await {
            if hub.stopping.load(Relaxed) {
                // Stopping: the frames still queued are not sent; the Bye
                // goes out at once.
                break;
            }
            let flags = if f.header.keyframe {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            };
            let len = video::HEADER_LEN + f.au.len();
            let r = host
                .send_frame_with(len, f.header.capture_us, flags, |b| {
                    let mut h = f.header;
                    h.sent_us = now_us();
                    // The slot is exactly `len` bytes: header then access unit.
                    if h.encode_into(b).is_ok() {
                        b[video::HEADER_LEN..].copy_from_slice(&f.au);
                    }
                })
                .await;
            if let Err(e) = r {
                end = format!("send failed: {e}");
                break;
            }
        }
        // The viewer left or the host stops: no more frames for it.
        hub.remove(info.id);
        let _ = host.close().await;
        stopped.notify_one();
        (end, host.stats())
    };
    let recv = async {
        let end = loop {
            match events.next_event().await {
                Ok(Some(HostEvent::Input(ev))) => {
                    info.input_events.fetch_add(1, Relaxed);
                    if hub.print_input {
                        eprintln!("input from viewer {}: {ev:?}", info.id);
                    }
                }
                Ok(Some(HostEvent::KeyframeRequest { .. })) => request_key(&info),
                // The session's estimate of what this viewer's path carries.
                Ok(Some(HostEvent::TargetBitrate { bps })) => info.target_bps.store(bps, Relaxed),
                Ok(Some(_)) => {}
                Ok(None) => break "viewer closed".to_string(),
                Err(e @ SessionError::IdleTimeout(_)) => {
                    hub.viewers_timed_out.fetch_add(1, Relaxed);
                    break format!("viewer timed out: {e}");
                }
                Err(e) => break format!("viewer gone: {e}"),
            }
        };
        // Stop sending to a viewer that is gone.
        hub.remove(info.id);
        end
    };
    let recv = async {
        tokio::pin!(recv);
        tokio::select! {
            end = &mut recv => end,
            // Once the host stopped sending, the viewer has a few seconds
            // to answer the Bye (and have its last input acknowledged).
            _ = async {
                stopped.notified().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            } => "viewer did not answer the Bye".to_string(),
        }
    };
    let ((send_end, stats), recv_end) = futures::join!(send, recv);
    let end = if recv_end == "viewer closed" && send_end != "host stopped" {
        send_end
    } else {
        recv_end
    };
    eprintln!("linkstream host: viewer {} left ({end})", info.id);
    lock(&hub.finished).push(ViewerReport {
        id: info.id,
        transport: transport.into(),
        peer,
        frames_sent: stats.frames_sent,
        frames_skipped: info.frames_skipped.load(Relaxed),
        skip_events: info.skip_events.load(Relaxed),
        keyframe_requests: info.keyframe_requests.load(Relaxed),
        keyframe_requests_coalesced: info.keyframe_requests_coalesced.load(Relaxed),
        keyframes_granted: info.keyframes_granted.load(Relaxed),
        input_events: info.input_events.load(Relaxed),
        reported_frames_lost: stats.reported_frames_lost,
        reported_loss_ppm: stats.reported_loss_ppm,
        auth_failures: stats.auth_failures,
        seconds: started.elapsed().as_secs_f64(),
        end,
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
        let (link, child) = ShmLink::spawn(&mut cmd, &cfg)
            .await
            .map_err(|e| format!("starting the capture process: {e}"))?;
        Ok((link, Some(child)))
    } else {
        let path = PathBuf::from(&args.capture);
        let listener = ShmListener::bind(&path, &cfg)
            .map_err(|e| format!("capture listener {}: {e}", path.display()))?;
        eprintln!(
            "linkstream host: waiting for `linkstream capture --source {} --connect {}`",
            args.source,
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
    let psk = match &args.psk_file {
        Some(p) => Some(read_psk(p)?),
        None => {
            eprintln!(
                "linkstream host: WARNING: no --psk-file: sessions are NOT encrypted (anyone on the path can watch and inject input)"
            );
            None
        }
    };
    // Open the source here too: a bad file is refused before anything starts.
    let source = capture::open_source(&args.source)?;
    let (width, height, fps) = (source.width(), source.height(), source.fps() as f64);
    let frame_len = source.frame_len();
    drop(source);

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
            let (options, notes) = crate::web_assets::server_options(&tls_choice, addr)?;
            let tls = options.tls.is_some();
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

    let hub = Arc::new(Hub::new(
        args.viewer_queue as usize,
        args.print_input,
        args.bitrate,
    ));
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
    let key_hint = if psk.is_some() {
        " --psk-file FILE"
    } else {
        ""
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ep) = udp {
        let local = ep.local_addr();
        println_join(&format!("udp://{local}"), key_hint);
        let (hub, cfg) = (hub.clone(), host_cfg.clone());
        tasks.spawn(async move {
            let mut viewers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    link = ep.accept() => {
                        let peer = link.peer_addr().to_string();
                        viewers.spawn(serve_viewer(hub.clone(), link, cfg.clone(), "udp", peer));
                    }
                    _ = hub.stop.notified() => break,
                }
            }
            while viewers.join_next().await.is_some() {}
        });
    }
    if let Some((mut server, tls)) = ws {
        let local = server.local_addr();
        let scheme = if tls { "wss" } else { "ws" };
        println_join(&format!("{scheme}://{local}"), key_hint);
        let (hub, cfg) = (hub.clone(), host_cfg.clone());
        tasks.spawn(async move {
            let mut viewers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    acc = server.accept() => match acc {
                        Ok(acc) if acc.path == "/stream" => {
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
                    _ = hub.stop.notified() => break,
                }
            }
            while viewers.join_next().await.is_some() {}
        });
    }

    let (link, child) = start_capture(&args, frame_len).await?;
    let mut report = HostReport {
        source: args.source.clone(),
        width: width as u64,
        height: height as u64,
        fps,
        encrypted: psk.is_some(),
        ..Default::default()
    };
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let outcome = encode_loop(
        &hub,
        link,
        &args,
        (width, height, fps),
        deadline,
        &mut report,
    )
    .await;
    // Stop: no new viewers, every queue closes (each viewer's session
    // sends its Bye after the frames already queued).
    hub.stopping.store(true, Relaxed);
    hub.stop.notify_waiters();
    lock(&hub.viewers).clear();
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
    report.handshake_failures = hub.handshake_failures.load(Relaxed);
    report.ws_refused_paths = hub.ws_refused_paths.load(Relaxed);
    report.viewers_joined = hub.viewers_joined.load(Relaxed);
    report.viewers_timed_out = hub.viewers_timed_out.load(Relaxed);
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

fn println_join(url: &str, key_hint: &str) {
    eprintln!("linkstream host: join with: linkstream client {url}{key_hint}");
}

/// Lease each captured frame, encode it, fan it out. Ends when the capture
/// process ends.
async fn encode_loop(
    hub: &Hub,
    link: ShmLink,
    args: &HostArgs,
    (width, height, fps): (usize, usize, f64),
    deadline: Option<tokio::time::Instant>,
    report: &mut HostReport,
) -> Result<(), String> {
    let (_tx, mut rx) = link.split();
    let mut bitrate = hub.target(args.min_bitrate);
    let fps_int = (fps.round() as u32).clamp(1, 240);
    let mut encoder = video::Encoder::new(width, height, fps_int, bitrate)
        .map_err(|e| format!("encoder: {e}"))?;
    let mut au = Vec::new();
    let mut encode_us = Vec::new();
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
        let (hdr, picture) = FrameHeader::parse(msg.as_slice())?;
        if hdr.width as usize != width || hdr.height as usize != height {
            return Err(format!(
                "capture sent a {}x{} frame, expected {width}x{height}",
                hdr.width, hdr.height
            ));
        }
        report.frames_captured += 1;
        report.capture_dropped = hdr.dropped as u64;
        let now = Instant::now();
        let key = hub.take_keyframe(now);
        let target = hub.target(args.min_bitrate);
        if target != bitrate {
            bitrate = target;
            if let Err(e) = encoder.set_bitrate(bitrate) {
                tracing::warn!("encoder bitrate {bitrate}: {e}");
            }
        }
        if key {
            encoder.force_keyframe();
        }
        let t0 = Instant::now();
        // The picture is read in place from the shared-memory slot.
        au.clear();
        let out = tokio::task::block_in_place(|| encoder.encode(picture, &mut au));
        drop(msg); // the slot goes back to the capture process
        let encoded_us = now_us();
        let keyframe = match out {
            Ok(k) => k,
            Err(e) => {
                report.encode_errors += 1;
                tracing::warn!("encode: {e}");
                continue;
            }
        };
        encode_us.push(t0.elapsed().as_micros() as u64);
        report.frames_encoded += 1;
        report.keyframes += keyframe as u64;
        bytes += au.len() as u64;
        if video::HEADER_LEN + au.len() > 4 << 20 {
            report.frames_too_large += 1;
            continue;
        }
        let header = VideoHeader {
            codec: Codec::H264AnnexB,
            keyframe,
            width: width as u16,
            height: height as u16,
            target_kbps: (bitrate / 1000).min(u32::MAX as u64) as u32,
            capture_index: hdr.index,
            capture_us: hdr.capture_us,
            encoded_us,
            sent_us: 0,
        };
        hub.fan_out(Arc::new(Encoded {
            header,
            au: au.clone(),
        }));
        let viewers = lock(&hub.viewers).len();
        progress.update(report.frames_encoded, || {
            format!(
                "linkstream host: {} frames encoded, {} viewers ({} joined, {} timed out), {:.2} Mbit/s target",
                report.frames_encoded,
                viewers,
                hub.viewers_joined.load(Relaxed),
                hub.viewers_timed_out.load(Relaxed),
                bitrate as f64 / 1e6
            )
        });
    }
    progress.finish();
    report.encode_ms = Quantiles::of(&mut encode_us);
    report.bitrate_bps = bitrate;
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        report.encoded_mbps = bytes as f64 * 8.0 / secs / 1e6;
    }
    Ok(())
}

fn print_summary(r: &HostReport) {
    println!(
        "source {} {}x{} @ {} fps, {}",
        r.source,
        r.width,
        r.height,
        r.fps,
        if r.encrypted {
            "AES-128-GCM"
        } else {
            "NOT encrypted"
        }
    );
    println!(
        "captured {} (dropped {}), encoded {} ({} keyframes, {} errors), encode p50/p99 {:.2}/{:.2} ms, {:.2} Mbit/s",
        r.frames_captured,
        r.capture_dropped,
        r.frames_encoded,
        r.keyframes,
        r.encode_errors,
        r.encode_ms.p50,
        r.encode_ms.p99,
        r.encoded_mbps
    );
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u64, keyframe: bool) -> Arc<Encoded> {
        Arc::new(Encoded {
            header: VideoHeader {
                codec: Codec::H264AnnexB,
                keyframe,
                width: 640,
                height: 360,
                target_kbps: 4000,
                capture_index: index,
                capture_us: 1,
                encoded_us: 2,
                sent_us: 0,
            },
            au: vec![index as u8; 10],
        })
    }

    fn drain(rx: &mut mpsc::Receiver<Arc<Encoded>>) -> Vec<u64> {
        let mut got = Vec::new();
        while let Ok(f) = rx.try_recv() {
            got.push(f.header.capture_index);
        }
        got
    }

    // r[verify cli.host.fanout]
    #[test]
    fn a_slow_viewer_skips_to_the_next_keyframe_and_holds_no_one_back() {
        let hub = Hub::new(2, false, 4_000_000);
        let (fast, mut fast_rx) = hub.register();
        let (slow, mut slow_rx) = hub.register();
        // Before a keyframe, a new viewer gets nothing.
        hub.fan_out(frame(0, false));
        assert!(drain(&mut fast_rx).is_empty());
        // Keyframe 1, then P-frames; the slow viewer never drains.
        let mut fast_got = Vec::new();
        for i in 1..=6 {
            hub.fan_out(frame(i, i == 1));
            fast_got.extend(drain(&mut fast_rx));
        }
        assert_eq!(
            fast_got,
            vec![1, 2, 3, 4, 5, 6],
            "the fast viewer gets every frame"
        );
        assert_eq!(fast.frames_skipped.load(Relaxed), 1); // frame 0, before its keyframe
        assert_eq!(fast.skip_events.load(Relaxed), 0);
        // The slow one queued 1 and 2, overflowed at 3 and skips until a keyframe.
        assert_eq!(slow.skip_events.load(Relaxed), 1);
        assert_eq!(slow.frames_skipped.load(Relaxed), 1 + 4);
        assert!(
            slow.key_wanted.load(Relaxed),
            "the skip asks for a keyframe"
        );
        assert_eq!(drain(&mut slow_rx), vec![1, 2]);
        // Having drained, it still gets no P-frame, only the next keyframe on.
        let mut fast_got = Vec::new();
        for (i, key) in [(7, false), (8, true), (9, false)] {
            hub.fan_out(frame(i, key));
            fast_got.extend(drain(&mut fast_rx));
        }
        assert_eq!(drain(&mut slow_rx), vec![8, 9]);
        assert_eq!(fast_got, vec![7, 8, 9]);
        assert_eq!(fast.skip_events.load(Relaxed), 0);
        // A viewer whose queue is gone is dropped from the fan-out.
        drop(slow_rx);
        hub.fan_out(frame(10, false));
        assert_eq!(lock(&hub.viewers).len(), 1);
    }

    // r[verify cli.host.keyframes]
    #[test]
    fn keyframes_for_new_viewers_at_once_and_requests_at_most_once_a_second() {
        let hub = Hub::new(4, false, 4_000_000);
        let t0 = Instant::now();
        assert!(!hub.take_keyframe(t0));
        let (v, _rx) = hub.register();
        assert!(hub.take_keyframe(t0), "a new viewer gets a keyframe");
        assert!(!hub.take_keyframe(t0));
        // A request within a second of the last grant waits ...
        request_key(&v);
        request_key(&v);
        assert_eq!(v.keyframe_requests_coalesced.load(Relaxed), 1);
        assert!(!hub.take_keyframe(t0 + Duration::from_millis(500)));
        // ... and is granted once the second has passed, once.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(hub.take_keyframe(t1));
        assert!(!hub.take_keyframe(t1));
        request_key(&v);
        assert!(!hub.take_keyframe(t1 + Duration::from_millis(900)));
        assert!(hub.take_keyframe(t1 + Duration::from_millis(1000)));
        assert_eq!(v.keyframes_granted.load(Relaxed), 3);
        assert_eq!(v.keyframe_requests.load(Relaxed), 3);
    }

    // r[verify cli.host.bitrate]
    #[test]
    fn the_encoder_follows_the_lowest_viewer_target_above_the_floor() {
        let hub = Hub::new(4, false, 4_000_000);
        assert_eq!(hub.target(300_000), 4_000_000, "no viewer: --bitrate");
        let (a, _ra) = hub.register();
        let (b, _rb) = hub.register();
        a.target_bps.store(3_000_000, Relaxed);
        b.target_bps.store(2_000_000, Relaxed);
        assert_eq!(hub.target(300_000), 2_000_000);
        a.target_bps.store(9_000_000, Relaxed);
        b.target_bps.store(8_000_000, Relaxed);
        assert_eq!(hub.target(300_000), 4_000_000, "never above --bitrate");
        b.target_bps.store(100_000, Relaxed);
        assert_eq!(hub.target(300_000), 300_000, "never below the floor");
    }
}
