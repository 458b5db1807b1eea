//! Load and soak of the host side (issue 16, part 3; run by `scripts/soak.sh`).
//!
//! ```text
//! soak host  --udp ADDR --ws ADDR --status FILE --frames N [--fps F]
//! soak swarm --udp ADDR --ws ADDR --status FILE --frames N [--fps F]
//!            [--udp-viewers 200] [--ws-viewers 50] [--cycles 10000]
//!            [--concurrency 32] [--warmup S] [--sample S] [--seed S]
//!            [--rss-margin-mib M] [--cycle-rss-margin-mib M]
//! soak rebind --udp ADDR --ws ADDR --status FILE --frames N
//! ```
//!
//! `host` is one process with one `UdpEndpoint` (with the session's
//! `RetryGate`, as `linkstream host` binds it) and one `WsServer`, and a
//! link-session `Host` per viewer with the default `HostConfig`. Every
//! session gets the same synthetic stream: `N` frames at `F` frames per
//! second, each frame's bytes derived from its index (a keyframe of 8000
//! bytes every 60 frames, 1000..1600 bytes between: about 0.34 Mbit/s), then
//! the session's `Bye`. The host rewrites `FILE` every 500 ms with its
//! counters, resident memory, open file descriptors, live tokio tasks and
//! CPU time (`key=value` words).
//!
//! `swarm` runs in another process:
//! 1. the soak: `--udp-viewers` UDP viewers, each through the fault
//!    injector (`link_types::fault`: loss, duplication, reordering drawn
//!    per viewer from `--seed`), and `--ws-viewers` WebSocket viewers, all
//!    at once. Every viewer checks each frame's bytes and that every index
//!    is either delivered or reported lost (`ClientEvent::Lost`), in order;
//!    it sends one input event a second. The host's memory and CPU are
//!    sampled every `--sample` seconds. Asserted: no corrupted frame, every
//!    frame accounted for (delivered + lost == N per viewer, and the sum
//!    equals the host's count of frames sent), at least 90% delivered per
//!    viewer (every frame on WebSocket), resident memory after the warm-up
//!    grows by at most `--rss-margin-mib` besides the receive slabs the
//!    UDP endpoint added (counted by the endpoint, printed apart: a known
//!    ratchet, see BENCHMARKS.md, Soak).
//! 2. the connect cycles: `--cycles` sessions (one in five over WebSocket),
//!    `--concurrency` at a time, each receiving a few frames and then
//!    closing (nine in ten) or vanishing without a word (one in ten, the
//!    host frees it after its idle timeout), in two halves. When the host
//!    is quiet again its file descriptors and tokio tasks must be what they
//!    were before the cycles, and its resident memory after the second
//!    half within `--cycle-rss-margin-mib` of after the first (the first
//!    sets the allocator's high-water mark; receive slabs apart, as above).
//!
//! `rebind` replays a bug the cycles found (BENCHMARKS.md, Soak; it
//! prints, it checks nothing; the session tests check the fix): a UDP
//! client that vanishes, then two new clients from the same address and
//! port against a running `host`. Each new client's Hello reaches the old
//! session; it used to drop them, so neither connected. Now the old
//! session ends as a restart once the vanished client was silent for the
//! host's `restart_grace`, and the new client gets a session of its own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use link_session::{
    Client, ClientConfig, ClientEvent, ClientStats, FrameFlags, Host, HostConfig, HostEvent,
    InputEvent, RetryGate,
};
use link_types::Link;
use link_types::fault::{self, FaultSpec, FaultStats};
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink};
use link_ws::{WsConfig, WsLink, WsServer};
use tokio::sync::Notify;

/// A keyframe every this many frames.
const KEY_EVERY: u32 = 60;
/// Bytes of a keyframe.
const KEY_LEN: usize = 8000;
/// Frame header: index and frame count, little-endian u32 each.
const HEAD: usize = 8;
/// Least share of frames every UDP viewer must get (see BENCHMARKS.md, Soak).
const MIN_DELIVERY: f64 = 0.90;

// ---------------------------------------------------------------- frames

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn frame_len(i: u32) -> usize {
    if i.is_multiple_of(KEY_EVERY) {
        KEY_LEN
    } else {
        1000 + (mix(u64::from(i) ^ 0xA5A5_0000) % 600) as usize
    }
}

fn flags(i: u32) -> FrameFlags {
    if i.is_multiple_of(KEY_EVERY) {
        FrameFlags::KEYFRAME
    } else {
        FrameFlags::NONE
    }
}

/// Frame `i` of a stream of `total`: header, then bytes drawn from `i`.
fn fill_frame(i: u32, total: u32, out: &mut [u8]) {
    out[..4].copy_from_slice(&i.to_le_bytes());
    out[4..HEAD].copy_from_slice(&total.to_le_bytes());
    let mut s = (u64::from(i) << 32) | 0x5EED;
    for chunk in out[HEAD..].chunks_mut(8) {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let w = mix(s).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

// ---------------------------------------------------------------- /proc

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// User plus system CPU time of `pid` ("self" works), in clock ticks
/// (USER_HZ, 100 a second on Linux).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let n = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

const TICKS: f64 = 100.0;

// ---------------------------------------------------------------- host

#[derive(Default)]
struct HostTotals {
    handshaking: AtomicU64,
    live: AtomicU64,
    accepted_udp: AtomicU64,
    accepted_ws: AtomicU64,
    handshake_failures: AtomicU64,
    done_udp: AtomicU64,
    done_ws: AtomicU64,
    completed: AtomicU64,
    frames_sent_udp: AtomicU64,
    frames_sent_ws: AtomicU64,
    reported_lost: AtomicU64,
    keyframe_requests: AtomicU64,
    feedback: AtomicU64,
    inputs: AtomicU64,
    send_errors: AtomicU64,
    end_bye: AtomicU64,
    end_error: AtomicU64,
    end_no_answer: AtomicU64,
    pacing_delay_max_us: AtomicU64,
    spread_max_us: AtomicU64,
    pacing_overruns: AtomicU64,
}

/// How a viewer's event side ended.
enum End {
    Bye,
    Error,
    NoAnswer,
}

async fn serve<L>(t: Arc<HostTotals>, link: L, ws: bool, frames: u32, fps: u32)
where
    L: Link + Send + 'static,
    L::Tx: Send + Sync + 'static,
    L::Rx: Send + 'static,
{
    t.handshaking.fetch_add(1, Relaxed);
    let r = Host::accept(link, HostConfig::default()).await;
    t.handshaking.fetch_sub(1, Relaxed);
    let (mut host, mut events) = match r {
        Ok(x) => x,
        Err(_) => {
            t.handshake_failures.fetch_add(1, Relaxed);
            return;
        }
    };
    t.live.fetch_add(1, Relaxed);
    let gone = Notify::new();
    let stopped = Notify::new();
    let send = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
        // A stalled host (the machine is shared) sends the frames it missed
        // at the frame rate, not in one burst, as an encoder fed by a
        // capture process would.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scratch_err = false;
        let mut sent_all = frames == 0;
        for i in 0..frames {
            tokio::select! {
                _ = tick.tick() => {}
                _ = gone.notified() => break,
            }
            let pts = u64::from(i) * 1_000_000 / u64::from(fps);
            let r = host
                .send_frame_with(frame_len(i), pts, flags(i), |b| fill_frame(i, frames, b))
                .await;
            if r.is_err() {
                scratch_err = true;
                break;
            }
            let st = host.stats();
            t.pacing_delay_max_us
                .fetch_max(st.pacing_queue_delay_us, Relaxed);
            t.spread_max_us.fetch_max(st.frame_send_spread_us, Relaxed);
            sent_all = i + 1 == frames;
        }
        let _ = host.close().await;
        stopped.notify_one();
        (host.stats(), sent_all, scratch_err)
    };
    let recv = async {
        let mut inputs = 0u64;
        let end = loop {
            match events.next_event().await {
                Ok(Some(HostEvent::Input(_))) => inputs += 1,
                Ok(Some(_)) => {}
                Ok(None) => break End::Bye,
                Err(_) => break End::Error,
            }
        };
        gone.notify_one();
        (end, inputs)
    };
    let recv = async {
        tokio::pin!(recv);
        tokio::select! {
            r = &mut recv => r,
            // Once the host said Bye, the viewer has 3 s to end its side
            // (its last report, its own Bye), as `linkstream host` allows.
            _ = async {
                stopped.notified().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            } => (End::NoAnswer, 0),
        }
    };
    let ((stats, sent_all, send_err), (end, _)) = futures::join!(send, recv);
    t.inputs.fetch_add(stats.input_events, Relaxed);
    t.pacing_overruns.fetch_add(stats.pacing_overruns, Relaxed);
    let ev_stats = events.stats();
    drop(events);
    let (done, sent) = if ws {
        (&t.done_ws, &t.frames_sent_ws)
    } else {
        (&t.done_udp, &t.frames_sent_udp)
    };
    sent.fetch_add(stats.frames_sent, Relaxed);
    t.reported_lost
        .fetch_add(ev_stats.reported_frames_lost, Relaxed);
    t.keyframe_requests
        .fetch_add(ev_stats.keyframe_requests, Relaxed);
    t.feedback.fetch_add(ev_stats.feedback_received, Relaxed);
    if sent_all {
        t.completed.fetch_add(1, Relaxed);
    }
    if send_err {
        t.send_errors.fetch_add(1, Relaxed);
    }
    match end {
        End::Bye => &t.end_bye,
        End::Error => &t.end_error,
        End::NoAnswer => &t.end_no_answer,
    }
    .fetch_add(1, Relaxed);
    done.fetch_add(1, Relaxed);
    t.live.fetch_sub(1, Relaxed);
}

async fn host(a: &Args) -> Result<bool, String> {
    let start = Instant::now();
    let gate = Arc::new(RetryGate::new().map_err(|e| format!("retry gate: {e}"))?);
    // One change to the endpoint's defaults for this load: `max_peers`
    // (default 64) has room for the 250 viewers, and for the connect
    // cycles: 32 at a time, plus the one in ten that vanish, whose
    // sessions live until their 10 s idle timeout (~150 at ~190 cycles/s).
    let ep_cfg = EndpointConfig {
        max_peers: 1024,
        ..Default::default()
    };
    let ep_link_cfg = ep_cfg.link.clone();
    let ep = Arc::new(
        UdpEndpoint::bind_with_gate(a.udp, ep_cfg, gate)
            .map_err(|e| format!("UDP {}: {e}", a.udp))?,
    );
    let mut server = WsServer::bind(a.ws, WsConfig::default())
        .await
        .map_err(|e| format!("WebSocket {}: {e}", a.ws))?;
    let t = Arc::new(HostTotals::default());
    let (frames, fps) = (a.frames, a.fps);
    {
        let (ep, t) = (ep.clone(), t.clone());
        tokio::spawn(async move {
            loop {
                let link = ep.accept().await;
                t.accepted_udp.fetch_add(1, Relaxed);
                tokio::spawn(serve(t.clone(), link, false, frames, fps));
            }
        });
    }
    let ws_stats = Arc::new(std::sync::Mutex::new(link_ws::ServerCounts::default()));
    {
        let (t, ws_stats) = (t.clone(), ws_stats.clone());
        tokio::spawn(async move {
            loop {
                match server.accept().await {
                    Ok(acc) => {
                        t.accepted_ws.fetch_add(1, Relaxed);
                        tokio::spawn(serve(t.clone(), acc.link, true, frames, fps));
                    }
                    Err(e) => {
                        eprintln!("soak host: WebSocket accept: {e}");
                        break;
                    }
                }
                *ws_stats.lock().unwrap_or_else(|p| p.into_inner()) = server.counts();
            }
        });
    }
    eprintln!(
        "soak host: pid {} udp {} ws {} ({} frames per session at {} fps)",
        std::process::id(),
        ep.local_addr(),
        a.ws,
        frames,
        fps
    );
    let handle = tokio::runtime::Handle::current();
    let mut late_max_ms = 0u64;
    // The endpoint's receive slab: with GRO (the default) 8 buffers of
    // 64 KiB (link-udp/src/rx.rs, `GRO_BATCH` and the slot size), without
    // it `recv_batch` buffers of the payload rounded up to 64 bytes.
    let link = &ep_link_cfg;
    let slab_kib = if link.gro {
        8 * 64
    } else {
        (link.recv_batch.min(64) * 1536).div_ceil(1024) as u64
    };
    loop {
        let st = ep.stats().snapshot();
        let ws = *ws_stats.lock().unwrap_or_else(|p| p.into_inner());
        let l = |c: &AtomicU64| c.load(Relaxed);
        let line = format!(
            "pid={} t_ms={} rss_kib={} hwm_kib={} fds={} tasks={} cpu_ticks={} handshaking={} live={} accepted_udp={} accepted_ws={} handshake_failures={} done_udp={} done_ws={} completed={} frames_sent_udp={} frames_sent_ws={} reported_lost={} keyframe_requests={} feedback={} inputs={} send_errors={} end_bye={} end_error={} end_no_answer={} udp_peers={} udp_unvalidated={} udp_retries_sent={} udp_rx_kernel_drops={} udp_rate_limited={} udp_evicted={} udp_tx_datagrams={} udp_validation_refused={} udp_peers_expired={} udp_peer_gone={} udp_tx_amplification_held={} udp_rx_peer_refused={} udp_gate_dropped={} ws_accepted={} ws_handshakes_failed={} udp_rx_buffer_growth={} pacing_delay_max_us={} spread_max_us={} pacing_overruns={} late_max_ms={} udp_slab_kib={}\n",
            std::process::id(),
            start.elapsed().as_millis(),
            status_kib("VmRSS:"),
            status_kib("VmHWM:"),
            open_fds(),
            handle.metrics().num_alive_tasks(),
            cpu_ticks("self"),
            l(&t.handshaking),
            l(&t.live),
            l(&t.accepted_udp),
            l(&t.accepted_ws),
            l(&t.handshake_failures),
            l(&t.done_udp),
            l(&t.done_ws),
            l(&t.completed),
            l(&t.frames_sent_udp),
            l(&t.frames_sent_ws),
            l(&t.reported_lost),
            l(&t.keyframe_requests),
            l(&t.feedback),
            l(&t.inputs),
            l(&t.send_errors),
            l(&t.end_bye),
            l(&t.end_error),
            l(&t.end_no_answer),
            ep.peer_count(),
            ep.unvalidated_count(),
            st.retries_sent,
            st.rx_kernel_drops,
            st.rx_rate_limited,
            st.unvalidated_evicted,
            st.tx_datagrams,
            st.validation_refused,
            st.peers_expired,
            st.rx_peer_gone,
            st.tx_amplification_held,
            st.rx_peer_refused,
            st.rx_gate_dropped,
            ws.accepted,
            ws.handshakes_failed,
            st.rx_buffer_growth,
            l(&t.pacing_delay_max_us),
            l(&t.spread_max_us),
            l(&t.pacing_overruns),
            late_max_ms,
            slab_kib,
        );
        let tmp = a.status.with_extension("tmp");
        std::fs::write(&tmp, line).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &a.status).map_err(|e| format!("{}: {e}", a.status.display()))?;
        let slept = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // How late this task woke: the host's worst scheduling stall.
        let late = slept.elapsed().saturating_sub(Duration::from_millis(500));
        late_max_ms = late_max_ms.max(late.as_millis() as u64);
    }
}

// ---------------------------------------------------------------- swarm

type Status = HashMap<String, u64>;

fn read_status(path: &Path) -> Option<Status> {
    let s = std::fs::read_to_string(path).ok()?;
    let m: Status = s
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    m.contains_key("pid").then_some(m)
}

fn get(s: &Status, k: &str) -> u64 {
    s.get(k).copied().unwrap_or(0)
}

/// The host's status once `ok` holds, or an error after `timeout`.
async fn wait_for(
    path: &Path,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Status) -> bool,
) -> Result<Status, String> {
    let end = Instant::now() + timeout;
    loop {
        let s = read_status(path);
        if let Some(s) = &s
            && ok(s)
        {
            return Ok(s.clone());
        }
        if Instant::now() >= end {
            return Err(format!(
                "host not {what} after {timeout:?}: {}",
                s.map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| "no status".into())
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The host has no session and no handshake running, and no UDP peer.
fn quiet(s: &Status) -> bool {
    get(s, "live") == 0
        && get(s, "handshaking") == 0
        && get(s, "udp_peers") == 0
        && get(s, "udp_unvalidated") == 0
}

#[derive(Debug, Default, Clone)]
struct ViewerResult {
    ws: bool,
    connect_ms: f64,
    delivered: u64,
    lost: u64,
    lost_events: u64,
    corrupt: u64,
    out_of_sequence: u64,
    error: Option<String>,
    inputs_sent: u64,
    fault: FaultStats,
    stats: ClientStats,
}

/// One viewer: connect, check every frame until the host's Bye (or until
/// `stop_after` frames), then close (or vanish if `abrupt`).
async fn view<L>(
    link: L,
    ws: bool,
    total: u32,
    stop_after: Option<u64>,
    abrupt: bool,
    input_every: Option<Duration>,
) -> ViewerResult
where
    L: Link,
{
    let mut r = ViewerResult {
        ws,
        ..Default::default()
    };
    let t0 = Instant::now();
    let (mut c, mut input) = match Client::connect(link, ClientConfig::default()).await {
        Ok(x) => x,
        Err(e) => {
            r.error = Some(format!("connect: {e}"));
            return r;
        }
    };
    r.connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    let done = Notify::new();
    let recv = async {
        let (mut next, mut buf) = (0u32, Vec::new());
        let mut v = ViewerResult::default();
        loop {
            if stop_after.is_some_and(|k| v.delivered >= k) {
                break;
            }
            match c.next_frame().await {
                Ok(Some(ClientEvent::Frame(f))) => {
                    if f.index != next {
                        v.out_of_sequence += 1;
                    }
                    buf.resize(frame_len(f.index), 0);
                    fill_frame(f.index, total, &mut buf);
                    if f.data() != &buf[..] {
                        v.corrupt += 1;
                    }
                    v.delivered += 1;
                    next = f.index.wrapping_add(1);
                }
                Ok(Some(ClientEvent::Lost { first, count })) => {
                    if first != next {
                        v.out_of_sequence += 1;
                    }
                    v.lost += u64::from(count);
                    v.lost_events += 1;
                    next = first.wrapping_add(count);
                }
                Ok(None) => break,
                Err(e) => {
                    v.error = Some(format!("next_frame: {e}"));
                    break;
                }
            }
        }
        done.notify_one();
        v
    };
    let send = async {
        let Some(every) = input_every else {
            return 0;
        };
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done.notified() => break,
            }
            let ev = InputEvent::MouseMove {
                dx: 1,
                dy: n as i32,
            };
            if input.send_input(ev).await.is_err() {
                break;
            }
            n += 1;
        }
        n
    };
    let (v, inputs_sent) = futures::join!(recv, send);
    r.delivered = v.delivered;
    r.lost = v.lost;
    r.lost_events = v.lost_events;
    r.corrupt = v.corrupt;
    r.out_of_sequence = v.out_of_sequence;
    r.error = v.error;
    r.inputs_sent = inputs_sent;
    r.stats = c.stats();
    if !abrupt {
        // A viewer that leaves says so (its Bye); after the host's Bye the
        // link may be gone already, which is no error.
        let _ = input.close().await;
    }
    r
}

/// The faults of UDP viewer `i`: loss 1-5%, duplication 0-2%, reordering
/// 0-5% (held back behind at most 4 later datagrams, at most 20 ms).
fn viewer_spec(seed: u64, i: u64) -> FaultSpec {
    let u = |k: u64| (mix(seed ^ (i << 8) ^ k) >> 11) as f64 / (1u64 << 53) as f64;
    FaultSpec {
        loss: 0.01 + 0.04 * u(1),
        duplicate: 0.02 * u(2),
        reorder: 0.05 * u(3),
        max_displacement: 4,
        max_hold: Duration::from_millis(20),
        ..FaultSpec::none()
    }
}

/// Viewer `i`'s own loopback source address (127.0.x.y), so that the
/// endpoint's per-address handshake limit sees many addresses.
fn source(i: u64) -> SocketAddr {
    let a = Ipv4Addr::new(127, 0, 1 + ((i / 250) % 250) as u8, 1 + (i % 250) as u8);
    SocketAddr::new(IpAddr::V4(a), 0)
}

fn client_udp_config() -> UdpConfig {
    // A viewer sends little (reports, input): a small send ring.
    UdpConfig {
        send_ring: 64,
        ..Default::default()
    }
}

async fn udp_viewer(
    a: Arc<Args>,
    i: u64,
    bind: SocketAddr,
    faults: bool,
    stop_after: Option<u64>,
    abrupt: bool,
    input: Option<Duration>,
) -> ViewerResult {
    let link = match UdpLink::connect(bind, a.udp, &client_udp_config()) {
        Ok(l) => l,
        Err(e) => {
            return ViewerResult {
                error: Some(format!("UDP socket: {e}")),
                ..Default::default()
            };
        }
    };
    if faults {
        let link = match fault::wrap(link, viewer_spec(a.seed, i), a.seed ^ i) {
            Ok(l) => l,
            Err(e) => {
                return ViewerResult {
                    error: Some(format!("fault spec: {e}")),
                    ..Default::default()
                };
            }
        };
        let fs = link.stats();
        let mut r = view(link, false, a.frames, stop_after, abrupt, input).await;
        r.fault = fs.snapshot();
        r
    } else {
        view(link, false, a.frames, stop_after, abrupt, input).await
    }
}

async fn ws_viewer(
    a: Arc<Args>,
    stop_after: Option<u64>,
    abrupt: bool,
    input: Option<Duration>,
) -> ViewerResult {
    let url = format!("ws://{}/stream", a.ws);
    match WsLink::connect(&url, &WsConfig::default()).await {
        Ok(link) => view(link, true, a.frames, stop_after, abrupt, input).await,
        Err(e) => ViewerResult {
            ws: true,
            error: Some(format!("WebSocket connect: {e}")),
            ..Default::default()
        },
    }
}

/// KiB of receive slabs the host's UDP endpoint added between two samples
/// (`rx_buffer_growth` times the slab size it reports).
fn slab_kib(later: &Status, earlier: &Status) -> u64 {
    (get(later, "udp_rx_buffer_growth") - get(earlier, "udp_rx_buffer_growth"))
        * get(later, "udp_slab_kib")
}

struct Sample {
    t: f64,
    s: Status,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Record a failed check.
fn check(failures: &mut Vec<String>, ok: bool, what: String) {
    if ok {
        println!("  ok: {what}");
    } else {
        println!("  FAILED: {what}");
        failures.push(what);
    }
}

async fn swarm(a: Arc<Args>) -> Result<bool, String> {
    let mut failures = Vec::new();
    let s0 = wait_for(&a.status, Duration::from_secs(30), "up", |_| true).await?;
    let pid = get(&s0, "pid").to_string();
    let viewers = a.udp_viewers + a.ws_viewers;
    let stream_s = f64::from(a.frames) / f64::from(a.fps);
    println!(
        "soak: host pid {pid}; {} UDP viewers (faults injected) + {} WebSocket viewers, {} frames at {} fps each ({stream_s:.0} s)",
        a.udp_viewers, a.ws_viewers, a.frames, a.fps
    );

    // --- phase 1: the soak
    let start = Instant::now();
    let swarm_cpu0 = cpu_ticks("self");
    let mut tasks = Vec::new();
    for i in 0..a.udp_viewers {
        let a = a.clone();
        tasks.push(tokio::spawn(udp_viewer(
            a,
            i,
            source(i),
            true,
            None,
            false,
            Some(Duration::from_secs(1)),
        )));
    }
    for _ in 0..a.ws_viewers {
        let a = a.clone();
        tasks.push(tokio::spawn(ws_viewer(
            a,
            None,
            false,
            Some(Duration::from_secs(1)),
        )));
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, a) = (samples.clone(), stop.clone(), a.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                if let Some(s) = read_status(&a.status) {
                    let t = start.elapsed().as_secs_f64();
                    // Progress (the table at the end has the CPU column).
                    println!(
                        "  [{t:>6.1} s] host RSS {:.1} MiB, {} sessions live, {} fds, {} tasks; UDP receive slabs added {}, worst pacer queue {} ms, worst host stall {} ms",
                        mib(get(&s, "rss_kib")),
                        get(&s, "live"),
                        get(&s, "fds"),
                        get(&s, "tasks"),
                        get(&s, "udp_rx_buffer_growth"),
                        get(&s, "pacing_delay_max_us") / 1000,
                        get(&s, "late_max_ms"),
                    );
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Sample { t, s });
                }
                tokio::time::sleep(Duration::from_secs_f64(a.sample)).await;
            }
        })
    };
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| format!("viewer task: {e}"))?);
    }
    let soak_s = start.elapsed().as_secs_f64();
    let swarm_cpu = (cpu_ticks("self") - swarm_cpu0) as f64 / TICKS;
    stop.store(true, Relaxed);
    let _ = sampler.await;
    let after_soak = wait_for(&a.status, Duration::from_secs(30), "quiet", |s| {
        get(s, "live") == 0 && get(s, "handshaking") == 0
    })
    .await?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));

    println!(
        "\nhost resident memory and CPU, sampled every {} s:",
        a.sample
    );
    println!(
        "  {:>7} {:>9} {:>6} {:>6} {:>6} {:>8}",
        "t_s", "rss_MiB", "live", "fds", "tasks", "cpu_%"
    );
    let mut prev: Option<&Sample> = None;
    for x in &samples {
        let cpu = prev.map_or(0.0, |p| {
            (get(&x.s, "cpu_ticks") - get(&p.s, "cpu_ticks")) as f64 / TICKS / (x.t - p.t) * 100.0
        });
        println!(
            "  {:>7.1} {:>9.1} {:>6} {:>6} {:>6} {:>8.1}",
            x.t,
            mib(get(&x.s, "rss_kib")),
            get(&x.s, "live"),
            get(&x.s, "fds"),
            get(&x.s, "tasks"),
            cpu
        );
        prev = Some(x);
    }
    // The steady window: from the warm-up on, while every viewer is live.
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.t >= a.warmup && get(&x.s, "live") == viewers)
        .collect();
    println!("\nsoak results ({soak_s:.1} s):");
    if steady.len() >= 2 {
        let (f, l) = (steady[0], steady[steady.len() - 1]);
        let (rss_f, rss_l) = (get(&f.s, "rss_kib"), get(&l.s, "rss_kib"));
        let secs = l.t - f.t;
        let cpu = (get(&l.s, "cpu_ticks") - get(&f.s, "cpu_ticks")) as f64 / TICKS;
        let per_viewer = cpu / secs / viewers as f64;
        println!(
            "  host CPU over the steady window ({:.1}..{:.1} s): {:.1}% of a core for {viewers} viewers = {:.3}% of a core per viewer ({:.0} µs per viewer-frame)",
            f.t,
            l.t,
            cpu / secs * 100.0,
            per_viewer * 100.0,
            per_viewer * 1e6 / f64::from(a.fps)
        );
        println!(
            "  host RSS: {:.1} MiB at {:.1} s (first after warm-up), {:.1} MiB at {:.1} s (last with every viewer live), peak (VmHWM) {:.1} MiB",
            mib(rss_f),
            f.t,
            mib(rss_l),
            l.t,
            mib(get(&l.s, "hwm_kib"))
        );
        let slabs = slab_kib(&l.s, &f.s);
        let grown = rss_l as i64 - rss_f as i64;
        println!(
            "  of which the UDP endpoint's receive ring: {} slabs added ({:.1} MiB; a held datagram pins its slab and the ring never shrinks, see BENCHMARKS.md, Soak)",
            get(&l.s, "udp_rx_buffer_growth") - get(&f.s, "udp_rx_buffer_growth"),
            slabs as f64 / 1024.0
        );
        check(
            &mut failures,
            grown - slabs as i64 <= (a.rss_margin_mib * 1024) as i64,
            format!(
                "host RSS grew {:+.1} MiB after the warm-up, {:+.1} MiB besides the receive slabs (at most {} MiB)",
                grown as f64 / 1024.0,
                (grown - slabs as i64) as f64 / 1024.0,
                a.rss_margin_mib
            ),
        );
    } else {
        check(
            &mut failures,
            false,
            format!(
                "at least two samples after the {} s warm-up with all {viewers} viewers live (got {})",
                a.warmup,
                steady.len()
            ),
        );
    }
    println!(
        "  swarm CPU: {:.1}% of a core (all viewers, checking every byte)",
        swarm_cpu / soak_s * 100.0
    );
    let sum = |f: &dyn Fn(&ViewerResult) -> u64, ws: Option<bool>| -> u64 {
        results
            .iter()
            .filter(|r| ws.is_none_or(|w| r.ws == w))
            .map(f)
            .sum()
    };
    for (name, ws) in [("UDP", false), ("WebSocket", true)] {
        let n = results.iter().filter(|r| r.ws == ws).count();
        let min = results
            .iter()
            .filter(|r| r.ws == ws && r.error.is_none())
            .map(|r| r.delivered)
            .min()
            .unwrap_or(0);
        println!(
            "  {name}: {n} viewers, frames delivered {} lost {} (in {} Lost events) corrupted {} out of sequence {}; least delivered by one viewer {min} of {}; recovered by parity {}; duplicate shards dropped {}; late shards {}; inputs sent {}; connect ms max {:.0}",
            sum(&|r| r.delivered, Some(ws)),
            sum(&|r| r.lost, Some(ws)),
            sum(&|r| r.lost_events, Some(ws)),
            sum(&|r| r.corrupt, Some(ws)),
            sum(&|r| r.out_of_sequence, Some(ws)),
            a.frames,
            sum(&|r| r.stats.frames_recovered, Some(ws)),
            sum(&|r| r.stats.duplicate_shards, Some(ws)),
            sum(&|r| r.stats.late_shards, Some(ws)),
            sum(&|r| r.inputs_sent, Some(ws)),
            results
                .iter()
                .filter(|r| r.ws == ws)
                .map(|r| r.connect_ms)
                .fold(0.0, f64::max),
        );
    }
    println!(
        "  injected on UDP: {} datagrams received, {} dropped, {} duplicated, {} reordered",
        sum(&|r| r.fault.received, None),
        sum(&|r| r.fault.dropped, None),
        sum(&|r| r.fault.duplicated, None),
        sum(&|r| r.fault.reordered, None),
    );
    let h = |k: &str| get(&after_soak, k);
    println!(
        "  host: frames sent UDP {} WebSocket {}; sessions completed {}; losses the viewers reported {}; keyframe requests {}; loss reports {}; input events {}; retries sent {}; rate-limited {}; handshake failures {}; ends: bye {} error {} no answer {}",
        h("frames_sent_udp"),
        h("frames_sent_ws"),
        h("completed"),
        h("reported_lost"),
        h("keyframe_requests"),
        h("feedback"),
        h("inputs"),
        h("udp_retries_sent"),
        h("udp_rate_limited"),
        h("handshake_failures"),
        h("end_bye"),
        h("end_error"),
        h("end_no_answer"),
    );
    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    check(
        &mut failures,
        errors.is_empty(),
        format!(
            "every viewer connected and ended cleanly ({} errors{})",
            errors.len(),
            errors
                .first()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default()
        ),
    );
    check(
        &mut failures,
        sum(&|r| r.corrupt, None) == 0,
        "no frame corrupted".into(),
    );
    check(
        &mut failures,
        sum(&|r| r.out_of_sequence, None) == 0,
        "every viewer saw each index once, in order, as a frame or in a Lost report".into(),
    );
    let unaccounted = results
        .iter()
        .filter(|r| r.delivered + r.lost != u64::from(a.frames))
        .count();
    check(
        &mut failures,
        unaccounted == 0,
        format!(
            "every frame accounted for: delivered + reported lost == {} for every viewer ({unaccounted} viewers short)",
            a.frames
        ),
    );
    let host_sent = h("frames_sent_udp") + h("frames_sent_ws");
    let got = sum(&|r| r.delivered + r.lost, None);
    check(
        &mut failures,
        host_sent == got && host_sent == viewers * u64::from(a.frames),
        format!(
            "the host sent {host_sent} frames, the viewers accounted for {got} ({viewers} x {})",
            a.frames
        ),
    );
    let low_udp = results
        .iter()
        .filter(|r| !r.ws && (r.delivered as f64) < MIN_DELIVERY * f64::from(a.frames))
        .count();
    check(
        &mut failures,
        low_udp == 0,
        format!(
            "every UDP viewer got at least {:.0}% of its frames ({low_udp} below)",
            MIN_DELIVERY * 100.0
        ),
    );
    let short_ws = results
        .iter()
        .filter(|r| r.ws && r.delivered != u64::from(a.frames))
        .count();
    check(
        &mut failures,
        short_ws == 0,
        format!("every WebSocket viewer got every frame ({short_ws} short)"),
    );
    check(
        &mut failures,
        h("completed") == viewers,
        format!(
            "the host completed all {viewers} sessions ({})",
            h("completed")
        ),
    );

    // --- phase 2: connect cycles, in two halves: what the first half
    // leaves in the allocator is its high-water mark; what the second adds
    // on top of that is memory left behind.
    if a.cycles > 0 {
        println!(
            "\nconnect cycles: {} sessions in two halves, {} at a time",
            a.cycles, a.concurrency
        );
        let before = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        let half = a.cycles / 2;
        let mut cycles = run_cycles(&a, 0, half, &before).await?;
        let mid = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        cycles.extend(run_cycles(&a, half, a.cycles, &mid).await?);
        let after = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        let bad: Vec<&ViewerResult> = cycles
            .iter()
            .filter(|(r, k, _)| {
                r.error.is_some() || r.corrupt > 0 || r.out_of_sequence > 0 || r.delivered != *k
            })
            .map(|(r, _, _)| r)
            .collect();
        let ws = cycles.iter().filter(|c| c.0.ws).count();
        let d = |k: &str| get(&after, k) as i64 - get(&before, k) as i64;
        println!(
            "  host before -> after the first half -> after the second: fds {} -> {} -> {}, tokio tasks {} -> {} -> {}, RSS {:.1} -> {:.1} -> {:.1} MiB (peak {:.1}); sessions accepted +{} UDP +{} WebSocket, handshake failures +{}, ends: bye +{} error +{} no answer +{}; UDP peers expired +{}, validations refused +{}, datagrams held by the 3x limit +{}",
            get(&before, "fds"),
            get(&mid, "fds"),
            get(&after, "fds"),
            get(&before, "tasks"),
            get(&mid, "tasks"),
            get(&after, "tasks"),
            mib(get(&before, "rss_kib")),
            mib(get(&mid, "rss_kib")),
            mib(get(&after, "rss_kib")),
            mib(get(&after, "hwm_kib")),
            d("accepted_udp"),
            d("accepted_ws"),
            d("handshake_failures"),
            d("end_bye"),
            d("end_error"),
            d("end_no_answer"),
            d("udp_peers_expired"),
            d("udp_validation_refused"),
            d("udp_tx_amplification_held"),
        );
        check(
            &mut failures,
            bad.is_empty(),
            format!(
                "every cycle connected and got its frames intact ({} of {} failed{})",
                bad.len(),
                cycles.len(),
                bad.first()
                    .map(|r| format!(", first: {:?}", r.error))
                    .unwrap_or_default()
            ),
        );
        check(
            &mut failures,
            get(&after, "fds") == get(&before, "fds") && get(&mid, "fds") == get(&before, "fds"),
            "no file descriptor left behind".into(),
        );
        check(
            &mut failures,
            get(&after, "tasks") == get(&before, "tasks")
                && get(&mid, "tasks") == get(&before, "tasks"),
            "no tokio task left behind".into(),
        );
        let slabs = slab_kib(&after, &mid);
        let grown = get(&after, "rss_kib") as i64 - get(&mid, "rss_kib") as i64;
        check(
            &mut failures,
            grown - slabs as i64 <= (a.cycle_rss_margin_mib * 1024) as i64,
            format!(
                "host RSS after the second half within {} MiB of after the first besides receive slabs ({:+.1} MiB, receive slabs {:+.1} MiB)",
                a.cycle_rss_margin_mib,
                grown as f64 / 1024.0,
                slabs as f64 / 1024.0
            ),
        );
        check(
            &mut failures,
            d("accepted_ws") == ws as i64,
            format!(
                "the host accepted each WebSocket cycle once (+{})",
                d("accepted_ws")
            ),
        );
    }
    println!();
    if failures.is_empty() {
        println!("soak: all checks passed");
        Ok(true)
    } else {
        println!("soak: {} checks FAILED", failures.len());
        Ok(false)
    }
}

/// Cycles `from..to`: connect, take a few frames, leave (one in ten
/// without a word); `concurrency` at a time.
async fn run_cycles(
    a: &Arc<Args>,
    from: u64,
    to: u64,
    before: &Status,
) -> Result<Vec<(ViewerResult, u64, bool)>, String> {
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(from));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (a, next) = (a.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= to {
                    break;
                }
                let m = mix(a.seed ^ 0xC1C1 ^ i);
                let frames = 1 + m % 8;
                let abrupt = (m >> 8).is_multiple_of(10);
                let r = if i.is_multiple_of(5) {
                    ws_viewer(a.clone(), Some(frames), abrupt, None).await
                } else {
                    // 64 source addresses: each sees a few handshakes a
                    // second, within the endpoint's per-address limit. Every
                    // cycle has its own port: a new client on the address
                    // and port of a session the host still holds (one that
                    // vanished, until its idle timeout) cannot connect, as
                    // the session drops its Hello (see BENCHMARKS.md, Soak).
                    let ip = source(100_000 + i % 64).ip();
                    let port = 20_000 + (i / 64) % 12_000;
                    udp_viewer(
                        a.clone(),
                        i,
                        SocketAddr::new(ip, port as u16),
                        false,
                        Some(frames),
                        abrupt,
                        None,
                    )
                    .await
                };
                out.push((r, frames, abrupt));
            }
            out
        }));
    }
    let mut cycles = Vec::new();
    for w in workers {
        cycles.extend(w.await.map_err(|e| format!("cycle task: {e}"))?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let ran = wait_for(&a.status, Duration::from_secs(5), "up", |_| true).await?;
    let cpu = (get(&ran, "cpu_ticks") - get(before, "cpu_ticks")) as f64 / TICKS;
    let ws = cycles.iter().filter(|c| c.0.ws).count();
    let abrupt = cycles.iter().filter(|c| c.2).count();
    println!(
        "  cycles {from}..{to}: {} ({} WebSocket, {} UDP; {abrupt} vanished without a Bye) in {secs:.1} s ({:.0}/s); host CPU {:.0} µs per cycle",
        cycles.len(),
        ws,
        cycles.len() - ws,
        cycles.len() as f64 / secs,
        cpu * 1e6 / cycles.len().max(1) as f64
    );
    Ok(cycles)
}

/// A client that vanished, then a new one on the same address and port.
async fn rebind(a: Arc<Args>) -> Result<bool, String> {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 29_999);
    let r = udp_viewer(a.clone(), 0, bind, false, Some(3), true, None).await;
    println!(
        "first client: {} frames, error {:?}; vanished",
        r.delivered, r.error
    );
    let t = Instant::now();
    let r = udp_viewer(a.clone(), 1, bind, false, Some(3), false, None).await;
    println!(
        "second client, same address and port: {} frames, error {:?}, after {:.1} s",
        r.delivered,
        r.error,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let r = udp_viewer(a.clone(), 2, bind, false, Some(3), false, None).await;
    println!(
        "third client, same address and port: {} frames, error {:?}, after {:.1} s",
        r.delivered,
        r.error,
        t.elapsed().as_secs_f64()
    );
    println!("host: {:?}", read_status(&a.status));
    Ok(true)
}

// ---------------------------------------------------------------- main

#[derive(Debug, Clone)]
struct Args {
    udp: SocketAddr,
    ws: SocketAddr,
    status: PathBuf,
    frames: u32,
    fps: u32,
    udp_viewers: u64,
    ws_viewers: u64,
    cycles: u64,
    concurrency: u64,
    warmup: f64,
    sample: f64,
    seed: u64,
    rss_margin_mib: u64,
    cycle_rss_margin_mib: u64,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut m: HashMap<&str, &str> = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        m.insert(k.trim_start_matches("--"), v);
    }
    fn val<T: std::str::FromStr>(
        m: &HashMap<&str, &str>,
        k: &str,
        d: Option<T>,
    ) -> Result<T, String> {
        match m.get(k) {
            Some(v) => v.parse().map_err(|_| format!("--{k} {v:?} is not valid")),
            None => d.ok_or(format!("--{k} is required")),
        }
    }
    let a = Args {
        udp: val(&m, "udp", None)?,
        ws: val(&m, "ws", None)?,
        status: val(&m, "status", None)?,
        frames: val(&m, "frames", None)?,
        fps: val(&m, "fps", Some(30))?,
        udp_viewers: val(&m, "udp-viewers", Some(200))?,
        ws_viewers: val(&m, "ws-viewers", Some(50))?,
        cycles: val(&m, "cycles", Some(10_000))?,
        concurrency: val(&m, "concurrency", Some(32))?,
        warmup: val(&m, "warmup", Some(60.0))?,
        sample: val(&m, "sample", Some(5.0))?,
        seed: val(&m, "seed", Some(16))?,
        rss_margin_mib: val(&m, "rss-margin-mib", Some(16))?,
        cycle_rss_margin_mib: val(&m, "cycle-rss-margin-mib", Some(16))?,
    };
    if a.fps == 0 || a.concurrency == 0 || a.sample <= 0.0 {
        return Err("--fps, --concurrency and --sample must be above 0".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match (
        args.get(1).map(String::as_str),
        parse(args.get(2..).unwrap_or(&[])),
    ) {
        (Some("host"), Ok(a)) => rt.block_on(host(&a)),
        (Some("swarm"), Ok(a)) => rt.block_on(swarm(Arc::new(a))),
        (Some("rebind"), Ok(a)) => rt.block_on(rebind(Arc::new(a))),
        (_, Err(e)) => Err(e),
        _ => Err("usage: soak host|swarm --udp ADDR --ws ADDR --status FILE --frames N ...".into()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
