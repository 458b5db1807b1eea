//! `linkstream`: the command line of linkstream.
//!
//! `linkstream demo` streams synthetic video frames from a host to a client
//! over each link in turn — UDP on loopback with injected loss and
//! encryption, shared memory across two processes, WebSocket on loopback —
//! and prints a table (or JSON with `--json`).

#[allow(dead_code, unused_imports)] // used by the capture, host and client subcommands (cli branch)
mod video;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use facet::Facet;
use link_session::{
    Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent, InputEvent,
};
use link_types::{FaultSpec, Link, fault_pair};

const USAGE: &str = "\
linkstream — streaming transport demo

USAGE:
    linkstream demo [OPTIONS]

OPTIONS:
    --seconds N      stream length per link (default 5)
    --fps N          frames per second (default 60)
    --bitrate MBPS   average video bitrate in Mbit/s (default 20)
    --gop N          a keyframe (8x a P-frame) every N frames (default 60)
    --loss PCT       random loss injected each way on UDP (default 5)
    --parity PCT     FEC parity on UDP (default 20)
    --links LIST     comma-separated: udp,shm,ws (default all three)
    --json           print the results as JSON instead of a table
    -h, --help       this text
";

/// Demo settings.
#[derive(Debug, Clone, Facet)]
struct Settings {
    seconds: f64,
    fps: u32,
    bitrate_mbps: f64,
    gop: u32,
    loss_pct: f64,
    parity_pct: u8,
    links: Vec<String>,
    json: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seconds: 5.0,
            fps: 60,
            bitrate_mbps: 20.0,
            gop: 60,
            loss_pct: 5.0,
            parity_pct: 20,
            links: vec!["udp".into(), "shm".into(), "ws".into()],
            json: false,
        }
    }
}

fn parse(args: &[String]) -> Result<Settings, String> {
    let mut s = Settings::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--seconds" => s.seconds = num(a, val(a)?)?,
            "--fps" => s.fps = num(a, val(a)?)? as u32,
            "--bitrate" => s.bitrate_mbps = num(a, val(a)?)?,
            "--gop" => s.gop = num(a, val(a)?)? as u32,
            "--loss" => s.loss_pct = num(a, val(a)?)?,
            "--parity" => s.parity_pct = num(a, val(a)?)?.min(100.0) as u8,
            "--links" => {
                s.links = val(a)?.split(',').map(|l| l.trim().to_string()).collect();
                if let Some(bad) = s
                    .links
                    .iter()
                    .find(|l| !["udp", "shm", "ws"].contains(&l.as_str()))
                {
                    return Err(format!("unknown link {bad:?} (udp, shm, ws)"));
                }
            }
            "--json" => s.json = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if s.fps == 0 || s.fps > 1000 {
        return Err("--fps must be 1..=1000".into());
    }
    if s.gop == 0 {
        return Err("--gop must be at least 1".into());
    }
    if s.loss_pct > 100.0 {
        return Err("--loss must be 0..=100".into());
    }
    if s.bitrate_mbps <= 0.0 {
        return Err("--bitrate must be above 0".into());
    }
    Ok(s)
}

/// What one link's run measured.
#[derive(Debug, Clone, Default, Facet)]
struct LinkResult {
    link: String,
    frames_sent: u64,
    frames_delivered: u64,
    frames_lost: u64,
    fec_recovered: u64,
    corrupt: u64,
    zero_copy: u64,
    goodput_mbps: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    input_sent: u64,
    input_received: u64,
    input_in_order: bool,
    input_rtt_ms: f64,
    injected_loss_pct: f64,
    encrypted: bool,
}

/// What the client side reports (also the shared-memory child's output).
#[derive(Debug, Clone, Default, Facet)]
struct ClientReport {
    delivered: u64,
    lost: u64,
    recovered: u64,
    corrupt: u64,
    zero_copy: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
    first_us: u64,
    last_us: u64,
    input_sent: u64,
    input_rtt_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Frame sizes of the synthetic stream: P-frames around the average, a
/// keyframe 8x larger every `gop` frames, averaging the bitrate.
fn frame_size(s: &Settings, i: u32) -> usize {
    let avg = s.bitrate_mbps * 1e6 / 8.0 / s.fps as f64;
    let gop = s.gop as f64;
    let p = avg * gop / (gop - 1.0 + 8.0);
    let size = if i.is_multiple_of(s.gop) {
        8.0 * p
    } else {
        // ±25% variation, deterministic.
        let wobble = ((i.wrapping_mul(2_654_435_761) >> 16) % 1000) as f64 / 1000.0 - 0.5;
        p * (1.0 + wobble / 2.0)
    };
    (size as usize).max(32)
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Fill a frame: index, pseudo-random body, FNV checksum of everything
/// before it in the last 8 bytes.
fn fill_frame(buf: &mut [u8], index: u32) {
    let n = buf.len();
    let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for chunk in buf[..n - 8].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    buf[..4].copy_from_slice(&index.to_le_bytes());
    let sum = fnv(&buf[..n - 8]);
    buf[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

fn frame_ok(data: &[u8], index: u32) -> bool {
    let n = data.len();
    n >= 32
        && data[..4] == index.to_le_bytes()
        && fnv(&data[..n - 8]).to_le_bytes() == data[n - 8..]
}

/// The host: send the synthetic stream at the frame rate, count input.
async fn run_host<L: Link>(
    link: L,
    cfg: HostConfig,
    s: &Settings,
    name: &str,
) -> Result<(u64, u64, bool), String>
where
    L::Tx: 'static,
    L::Rx: 'static,
{
    let (mut host, mut events) = Host::accept(link, cfg)
        .await
        .map_err(|e| format!("{name}: accept: {e}"))?;
    let frames = (s.seconds * s.fps as f64).round() as u32;
    let period = Duration::from_secs_f64(1.0 / s.fps as f64);
    let input = async move {
        let (mut n, mut in_order) = (0u64, true);
        while let Ok(Some(ev)) = events.next_event().await {
            if let HostEvent::Input(InputEvent::MouseMove { dx, .. }) = ev {
                in_order &= dx as u64 == n;
                n += 1;
            }
        }
        (n, in_order)
    };
    let send = async move {
        let start = tokio::time::Instant::now();
        let mut last_report = start;
        for i in 0..frames {
            tokio::time::sleep_until(start + period * i).await;
            let len = frame_size(s, i);
            let flags = if i.is_multiple_of(s.gop) {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            };
            host.send_frame_with(len, now_us(), flags, |b| fill_frame(b, i))
                .await
                .map_err(|e| format!("{name}: send: {e}"))?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = tokio::time::Instant::now();
                eprintln!("  {name}: {}/{frames} frames sent", i + 1);
            }
        }
        host.close()
            .await
            .map_err(|e| format!("{name}: close: {e}"))?;
        Ok::<_, String>(frames as u64)
    };
    let (sent, (received, in_order)) = futures::join!(send, input);
    Ok((sent?, received, in_order))
}

/// The client: receive and check every frame, send an input event per frame.
async fn run_client<L: Link>(link: L, cfg: ClientConfig) -> Result<ClientReport, String>
where
    L::Tx: 'static,
    L::Rx: 'static,
{
    let (mut frames, mut input) = Client::connect(link, cfg)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut r = ClientReport::default();
    loop {
        match frames.next_frame().await {
            Ok(Some(ClientEvent::Frame(f))) => {
                let now = now_us();
                if r.first_us == 0 {
                    r.first_us = now;
                }
                r.last_us = now;
                r.latencies_us.push(now.saturating_sub(f.pts));
                r.delivered += 1;
                r.bytes += f.data().len() as u64;
                r.recovered += f.recovered as u64;
                r.zero_copy += f.is_zero_copy() as u64;
                if !frame_ok(f.data(), f.index) {
                    r.corrupt += 1;
                }
                // One input event per frame; `next_frame` keeps running, so
                // lost ones are retransmitted (and it ends only once the
                // host acknowledged them all).
                let ev = InputEvent::MouseMove {
                    dx: r.input_sent as i32,
                    dy: 1,
                };
                if input.send_input(ev).await.is_ok() {
                    r.input_sent += 1;
                }
            }
            Ok(Some(ClientEvent::Lost { count, .. })) => r.lost += count as u64,
            Ok(None) => break,
            Err(e) => return Err(format!("next_frame: {e}")),
        }
    }
    r.input_rtt_us = frames.stats().input_rtt_us;
    let _ = input.close().await;
    Ok(r)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn result(
    name: &str,
    sent: u64,
    received: u64,
    in_order: bool,
    mut c: ClientReport,
    loss: f64,
    enc: bool,
) -> LinkResult {
    c.latencies_us.sort_unstable();
    let secs = (c.last_us.saturating_sub(c.first_us)) as f64 / 1e6;
    LinkResult {
        link: name.into(),
        frames_sent: sent,
        frames_delivered: c.delivered,
        frames_lost: c.lost,
        fec_recovered: c.recovered,
        corrupt: c.corrupt,
        zero_copy: c.zero_copy,
        goodput_mbps: if secs > 0.0 {
            c.bytes as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        },
        latency_p50_ms: percentile(&c.latencies_us, 0.5),
        latency_p99_ms: percentile(&c.latencies_us, 0.99),
        latency_max_ms: c.latencies_us.last().map_or(0.0, |v| *v as f64 / 1000.0),
        input_sent: c.input_sent,
        input_received: received,
        input_in_order: in_order,
        input_rtt_ms: c.input_rtt_us as f64 / 1000.0,
        injected_loss_pct: loss,
        encrypted: enc,
    }
}

const PSK: &[u8] = b"linkstream demo pre-shared key!!";

fn max_frame(s: &Settings) -> usize {
    // The largest synthetic frame (a keyframe), with room to spare.
    (frame_size(s, 0) * 2).next_power_of_two().max(1 << 20)
}

async fn demo_udp(s: &Settings) -> Result<LinkResult, String> {
    use link_udp::{UdpConfig, UdpLink};
    let cfg = UdpConfig::default();
    let lo: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let a = std::net::UdpSocket::bind(lo).map_err(|e| format!("udp bind: {e}"))?;
    let b = std::net::UdpSocket::bind(lo).map_err(|e| format!("udp bind: {e}"))?;
    let (pa, pb) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
    let a = UdpLink::from_std(a, pb, &cfg).map_err(|e| format!("udp: {e}"))?;
    let b = UdpLink::from_std(b, pa, &cfg).map_err(|e| format!("udp: {e}"))?;
    let spec = FaultSpec::loss(s.loss_pct / 100.0);
    let (a, b) = fault_pair(a, b, spec, spec, 0x11CE).map_err(|e| format!("fault: {e}"))?;
    let mf = max_frame(s);
    let host_cfg = HostConfig {
        psk: Some(PSK.to_vec()),
        parity_pct: s.parity_pct,
        max_frame: mf,
        ..Default::default()
    };
    let client_cfg = ClientConfig {
        psk: Some(PSK.to_vec()),
        max_frame: mf,
        max_pending_bytes: (mf * 4).max(64 << 20),
        ..Default::default()
    };
    let (h, c) = futures::join!(run_host(a, host_cfg, s, "udp"), run_client(b, client_cfg));
    let (sent, received, in_order) = h?;
    Ok(result(
        "udp", sent, received, in_order, c?, s.loss_pct, true,
    ))
}

fn shm_config(s: &Settings) -> link_shm::ShmConfig {
    link_shm::ShmConfig {
        large_size: max_frame(s) + 64,
        large_count: 4,
        ..Default::default()
    }
}

async fn demo_shm(s: &Settings) -> Result<LinkResult, String> {
    use link_shm::ShmLink;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__shm-client")
        .arg(max_frame(s).to_string())
        .stdout(std::process::Stdio::piped());
    let (link, child) = ShmLink::spawn(&mut cmd, &shm_config(s))
        .await
        .map_err(|e| format!("shm spawn: {e}"))?;
    let host_cfg = HostConfig {
        max_frame: max_frame(s),
        ..Default::default()
    };
    let child_out = tokio::task::spawn_blocking(move || child.wait_with_output());
    let (sent, received, in_order) = run_host(link, host_cfg, s, "shm").await?;
    let out = child_out
        .await
        .map_err(|e| format!("shm child: {e}"))?
        .map_err(|e| format!("shm child: {e}"))?;
    if !out.status.success() {
        return Err(format!("shm child exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let report: ClientReport =
        facet_json::from_str(text.trim()).map_err(|e| format!("shm child report: {e}"))?;
    Ok(result("shm", sent, received, in_order, report, 0.0, false))
}

/// The shared-memory child: a client that prints its report as JSON.
async fn shm_child(max_frame: usize) -> Result<(), String> {
    let s = Settings::default();
    let mut cfg = shm_config(&s);
    cfg.large_size = max_frame + 64;
    let link = link_shm::ShmLink::from_parent(&cfg)
        .await
        .map_err(|e| format!("shm join: {e}"))?;
    let client_cfg = ClientConfig {
        max_frame,
        max_pending_bytes: (max_frame * 4).max(64 << 20),
        ..Default::default()
    };
    let report = run_client(link, client_cfg).await?;
    println!(
        "{}",
        facet_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn demo_ws(s: &Settings) -> Result<LinkResult, String> {
    use link_ws::{WsConfig, WsLink, WsServer};
    let mut server = WsServer::bind("127.0.0.1:0".parse().expect("address"), WsConfig::default())
        .await
        .map_err(|e| format!("ws bind: {e}"))?;
    let url = format!("ws://{}/demo", server.local_addr());
    let mf = max_frame(s);
    let host = async {
        let accepted = server
            .accept()
            .await
            .map_err(|e| format!("ws accept: {e}"))?;
        let cfg = HostConfig {
            max_frame: mf,
            ..Default::default()
        };
        run_host(accepted.link, cfg, s, "ws").await
    };
    let client = async {
        let link = WsLink::connect(&url, &WsConfig::default())
            .await
            .map_err(|e| format!("ws connect: {e}"))?;
        run_client(
            link,
            ClientConfig {
                max_frame: mf,
                ..Default::default()
            },
        )
        .await
    };
    let (h, c) = futures::join!(host, client);
    let (sent, received, in_order) = h?;
    Ok(result("ws", sent, received, in_order, c?, 0.0, false))
}

fn print_table(rows: &[LinkResult]) {
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
        if r.injected_loss_pct > 0.0 {
            notes.push(format!("{}% loss injected each way", r.injected_loss_pct));
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

async fn demo(s: Settings) -> Result<Vec<LinkResult>, String> {
    let mut rows = Vec::new();
    for link in &s.links {
        eprintln!(
            "{link}: streaming {:.0} s at {} fps, {} Mbit/s ...",
            s.seconds, s.fps, s.bitrate_mbps
        );
        let r = match link.as_str() {
            "udp" => demo_udp(&s).await?,
            "shm" => demo_shm(&s).await?,
            _ => demo_ws(&s).await?,
        };
        rows.push(r);
    }
    Ok(rows)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linkstream: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match args.first().map(String::as_str) {
        Some("demo") => match parse(&args[1..]) {
            Ok(s) => {
                let json = s.json;
                rt.block_on(demo(s)).map(|rows| {
                    if json {
                        println!("{}", facet_json::to_string(&rows).unwrap_or_default());
                    } else {
                        print_table(&rows);
                    }
                })
            }
            Err(e) => Err(format!("{e}\n\n{USAGE}")),
        },
        Some("__shm-client") => match args.get(1).and_then(|v| v.parse().ok()) {
            Some(mf) => rt.block_on(shm_child(mf)),
            None => Err("__shm-client needs the maximum frame size".into()),
        },
        Some("-h") | Some("--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkstream: {e}");
            ExitCode::FAILURE
        }
    }
}
