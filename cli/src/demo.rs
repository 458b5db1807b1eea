//! `linkstream demo`: synthetic frames from a host to a client over each
//! link in turn — UDP on loopback with injected loss and encryption, shared
//! memory across two processes, WebSocket on loopback — as a table or JSON.

use std::time::Duration;

use facet::Facet;
use link_session::{
    Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent, InputEvent,
};
use link_types::{Bottleneck, FaultSpec, Link, fault_pair};

use crate::progress::Progress;
use crate::report::{LinkResult, print_table};
use crate::util::{non_negative, now_us, number};
use crate::workload::{fill_frame, frame_ok, frame_size};

/// Options of `linkstream demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stream length per link, in seconds.
    #[arg(long, value_name = "N", default_value_t = 5.0, value_parser = non_negative)]
    pub seconds: f64,
    /// Frames per second (1..=1000).
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fps: u32,
    /// Average video bitrate in Mbit/s.
    #[arg(long = "bitrate", value_name = "MBPS", default_value_t = 20.0, value_parser = positive)]
    pub bitrate_mbps: f64,
    /// A keyframe (8x a P-frame) every N frames.
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub gop: u32,
    /// Random loss injected each way on UDP, in percent.
    #[arg(long = "loss", value_name = "PCT", default_value_t = 5.0, value_parser = percent)]
    pub loss_pct: f64,
    /// A simulated bottleneck on UDP's host-to-client path, in Mbit/s
    /// (default 2.5x --bitrate; 0 turns it off). The synthetic encoder then
    /// follows the session's target bitrate, up to --bitrate.
    #[arg(long = "bottleneck", value_name = "MBPS", value_parser = non_negative)]
    pub bottleneck_mbps: Option<f64>,
    /// The bottleneck's queue, in milliseconds at its rate.
    #[arg(long = "queue-ms", value_name = "MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub queue_ms: u64,
    /// FEC parity on UDP, in percent.
    #[arg(long = "parity", value_name = "PCT", default_value_t = 20,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub parity_pct: u8,
    /// Comma-separated: udp,shm,ws (synthetic frames) and video (the real
    /// pipeline: capture -> shared memory -> H.264 -> UDP and WebSocket viewers).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "udp,shm,ws,video",
          value_parser = link_name)]
    pub links: Vec<String>,
    /// The video pipeline's source: testsrc, testsrc:WxH@FPS or y4m:FILE.
    #[arg(long, value_name = "SPEC", default_value = "testsrc:1280x720@30")]
    pub video_source: String,
    /// The video pipeline's encoder bitrate in bit/s.
    #[arg(long, value_name = "BPS", default_value_t = 4_000_000,
          value_parser = clap::value_parser!(u64).range(10_000..=1_000_000_000))]
    pub video_bitrate: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn positive(v: &str) -> Result<f64, String> {
    number(v).and_then(|x| {
        if x > 0.0 {
            Ok(x)
        } else {
            Err("must be above 0".into())
        }
    })
}

fn percent(v: &str) -> Result<f64, String> {
    non_negative(v).and_then(|x| {
        if x <= 100.0 {
            Ok(x)
        } else {
            Err("must be 0..=100".into())
        }
    })
}

fn link_name(v: &str) -> Result<String, String> {
    let l = v.trim();
    if ["udp", "shm", "ws", "video"].contains(&l) {
        Ok(l.to_string())
    } else {
        Err(format!("unknown link {l:?} (udp, shm, ws, video)"))
    }
}

impl DemoArgs {
    fn frame_size(&self, i: u32) -> usize {
        frame_size(self.bitrate_mbps, self.fps, self.gop, i)
    }

    /// The UDP bottleneck's rate in Mbit/s, if any.
    fn bottleneck(&self) -> Option<f64> {
        let m = self.bottleneck_mbps.unwrap_or(2.5 * self.bitrate_mbps);
        (m > 0.0).then_some(m)
    }

    /// The largest synthetic frame (a keyframe), with room to spare.
    fn max_frame(&self) -> usize {
        (self.frame_size(0) * 2).next_power_of_two().max(1 << 20)
    }
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

/// The host: send the synthetic stream at the frame rate, count input.
async fn run_host<L: Link>(
    link: L,
    cfg: HostConfig,
    s: &DemoArgs,
    name: &str,
    follow_target: bool,
) -> Result<HostSide, String>
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
        let mut progress = Progress::new(name, Some(frames as u64));
        let start = tokio::time::Instant::now();
        let mut target = (u64::MAX, 0u64);
        for i in 0..frames {
            tokio::time::sleep_until(start + period * i).await;
            let len = if follow_target {
                // A synthetic encoder that follows the target, up to --bitrate.
                let t = host.target_bitrate();
                target = (target.0.min(t), target.1.max(t));
                let mbps = (t as f64 / 1e6).min(s.bitrate_mbps);
                frame_size(mbps.max(0.1), s.fps, s.gop, i)
            } else {
                s.frame_size(i)
            };
            let flags = if i.is_multiple_of(s.gop) {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            };
            host.send_frame_with(len, now_us(), flags, |b| fill_frame(b, i))
                .await
                .map_err(|e| format!("{name}: send: {e}"))?;
            progress.update(i as u64 + 1, || {
                format!("  {name}: {}/{frames} frames sent", i + 1)
            });
        }
        progress.finish();
        host.close()
            .await
            .map_err(|e| format!("{name}: close: {e}"))?;
        Ok::<_, String>((frames as u64, target))
    };
    let (sent, (received, in_order)) = futures::join!(send, input);
    let (sent, target) = sent?;
    Ok(HostSide {
        sent,
        received,
        in_order,
        target_bps: (follow_target && target.1 > 0).then_some(target),
    })
}

/// What the host side of a run counted.
struct HostSide {
    sent: u64,
    /// Input events received.
    received: u64,
    in_order: bool,
    /// The lowest and highest target bitrate seen while sending, if the
    /// synthetic encoder followed it.
    target_bps: Option<(u64, u64)>,
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

fn result(name: &str, h: HostSide, mut c: ClientReport, loss: f64, enc: bool) -> LinkResult {
    let HostSide {
        sent,
        received,
        in_order,
        target_bps,
    } = h;
    c.latencies_us.sort_unstable();
    let secs = (c.last_us.saturating_sub(c.first_us)) as f64 / 1e6;
    let pct = |p| crate::report::percentile_ms(&c.latencies_us, p);
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
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        latency_max_ms: c.latencies_us.last().map_or(0.0, |v| *v as f64 / 1000.0),
        input_sent: c.input_sent,
        input_received: received,
        input_in_order: in_order,
        input_rtt_ms: c.input_rtt_us as f64 / 1000.0,
        injected_loss_pct: loss,
        encrypted: enc,
        target_mbps_min: target_bps.map_or(0.0, |t| t.0 as f64 / 1e6),
        target_mbps_max: target_bps.map_or(0.0, |t| t.1 as f64 / 1e6),
        ..Default::default()
    }
}

const PSK: &[u8] = b"linkstream demo pre-shared key!!";

// r[impl cli.demo.bottleneck]
async fn demo_udp(s: &DemoArgs) -> Result<LinkResult, String> {
    use link_udp::{UdpConfig, UdpLink};
    let cfg = UdpConfig::default();
    let lo: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let a = std::net::UdpSocket::bind(lo).map_err(|e| format!("udp bind: {e}"))?;
    let b = std::net::UdpSocket::bind(lo).map_err(|e| format!("udp bind: {e}"))?;
    let (pa, pb) = (
        a.local_addr().map_err(|e| format!("udp: {e}"))?,
        b.local_addr().map_err(|e| format!("udp: {e}"))?,
    );
    let a = UdpLink::from_std(a, pb, &cfg).map_err(|e| format!("udp: {e}"))?;
    let b = UdpLink::from_std(b, pa, &cfg).map_err(|e| format!("udp: {e}"))?;
    let spec = FaultSpec::loss(s.loss_pct / 100.0);
    let down = FaultSpec {
        bottleneck: s.bottleneck().map(|m| {
            Bottleneck::new(
                (m * 1e6) as u64,
                Duration::from_millis(s.queue_ms),
                Duration::from_millis(5),
            )
        }),
        ..spec
    };
    let (a, b) = fault_pair(a, b, down, spec, 0x11CE).map_err(|e| format!("fault: {e}"))?;
    let faults = b.stats();
    let mf = s.max_frame();
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
    let (h, c) = futures::join!(
        run_host(a, host_cfg, s, "udp", true),
        run_client(b, client_cfg)
    );
    let mut r = result("udp", h?, c?, s.loss_pct, true);
    let f = faults.snapshot();
    r.bottleneck_mbps = s.bottleneck().unwrap_or(0.0);
    r.queue_dropped = f.queue_dropped;
    r.injected_dropped = f.dropped;
    Ok(r)
}

fn shm_config(max_frame: usize) -> link_shm::ShmConfig {
    link_shm::ShmConfig {
        large_size: max_frame + 64,
        large_count: 4,
        ..Default::default()
    }
}

async fn demo_shm(s: &DemoArgs) -> Result<LinkResult, String> {
    use link_shm::ShmLink;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__shm-client")
        .arg(s.max_frame().to_string())
        .stdout(std::process::Stdio::piped());
    let (link, child) = ShmLink::spawn(&mut cmd, &shm_config(s.max_frame()))
        .await
        .map_err(|e| format!("shm spawn: {e}"))?;
    let host_cfg = HostConfig {
        max_frame: s.max_frame(),
        ..Default::default()
    };
    let child_out = tokio::task::spawn_blocking(move || child.wait_with_output());
    let h = run_host(link, host_cfg, s, "shm", false).await?;
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
    Ok(result("shm", h, report, 0.0, false))
}

/// The shared-memory child of the demo: a client that prints its report as
/// JSON.
pub async fn shm_child(max_frame: usize) -> Result<(), String> {
    let link = link_shm::ShmLink::from_parent(&shm_config(max_frame))
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

async fn demo_ws(s: &DemoArgs) -> Result<LinkResult, String> {
    use link_ws::{WsConfig, WsLink, WsServer};
    let mut server = WsServer::bind("127.0.0.1:0".parse().expect("address"), WsConfig::default())
        .await
        .map_err(|e| format!("ws bind: {e}"))?;
    let url = format!("ws://{}/demo", server.local_addr());
    let mf = s.max_frame();
    let host = async {
        let accepted = server
            .accept()
            .await
            .map_err(|e| format!("ws accept: {e}"))?;
        let cfg = HostConfig {
            max_frame: mf,
            ..Default::default()
        };
        run_host(accepted.link, cfg, s, "ws", false).await
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
    Ok(result("ws", h?, c?, 0.0, false))
}

/// The video pipeline's results: the host's summary and each viewer's.
#[derive(Debug, Clone, Default, Facet)]
struct VideoResult {
    link: String,
    host: crate::report::HostReport,
    viewers: Vec<crate::client::ClientReport>,
}

/// The real pipeline on this machine, as separate processes of this
/// program: `linkstream host` (which spawns `linkstream capture`: testsrc
/// into shared memory; H.264) and two `linkstream client`s, one over UDP
/// and one over WebSocket, each decoding and checking every picture.
async fn demo_video(s: &DemoArgs) -> Result<VideoResult, String> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if let Some(line) = link_video::build::slow_encoder_warning() {
        eprintln!("linkstream demo: {line}");
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let key = std::env::temp_dir().join(format!("linkstream-demo-{}.key", std::process::id()));
    std::fs::write(&key, "6c696e6b73747265616d2064656d6f21\n")
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let remove_key = KeyFile(key.clone());
    let seconds = format!("{:.1}", s.seconds.max(1.0) + 1.0);
    let bitrate = s.video_bitrate.to_string();
    let key_arg = key.to_string_lossy().to_string();
    let mut host = Command::new(&exe)
        .args([
            "host",
            "--udp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--psk-file",
        ])
        .arg(&key_arg)
        .args([
            "--source",
            &s.video_source,
            "--bitrate",
            &bitrate,
            "--seconds",
            &seconds,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the host: {e}"))?;
    let stderr = host.stderr.take().ok_or("host stderr")?;
    // The host's join lines name the ports it bound.
    let (urls, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut urls = Vec::new();
        let mut seen = Vec::new();
        while urls.len() < 2 {
            let Some(Ok(line)) = lines.next() else { break };
            match line.split("linkstream client ").nth(1) {
                Some(rest) => urls.extend(rest.split_whitespace().next().map(String::from)),
                None => seen.push(line),
            }
        }
        // Keep draining so the host never blocks on a full pipe.
        let rest = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .filter(|l| l.starts_with("linkstream:"))
                .collect::<Vec<_>>()
        });
        (urls, (seen, rest))
    })
    .await
    .map_err(|e| format!("host output: {e}"))?;
    if urls.len() < 2 {
        let _ = host.kill();
        let _ = host.wait();
        return Err(format!("the host did not start: {}", rest.0.join("; ")));
    }
    let mut viewers = Vec::new();
    // The UDP viewer receives through a simulated bottleneck of 3x the
    // encoder's bitrate, so that pacing and the target have a path.
    let bottleneck = format!("{}", 3.0 * s.video_bitrate as f64 / 1e6);
    for url in &urls {
        let mut c = Command::new(&exe);
        c.args([
            "client",
            url,
            "--psk-file",
            &key_arg,
            "--json",
            "--timeout",
            "5",
        ]);
        if url.starts_with("udp://") {
            c.args(["--simulate-bottleneck", &bottleneck]);
        }
        let c = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting a viewer: {e}"))?;
        viewers.push(c);
    }
    let outputs = tokio::task::spawn_blocking(move || {
        let clients: Vec<_> = viewers.into_iter().map(|c| c.wait_with_output()).collect();
        (clients, host.wait_with_output())
    })
    .await
    .map_err(|e| format!("video demo: {e}"))?;
    drop(remove_key);
    let mut result = VideoResult {
        link: "video".into(),
        ..Default::default()
    };
    for (out, url) in outputs.0.into_iter().zip(&urls) {
        let out = out.map_err(|e| format!("viewer {url}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "viewer {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        result.viewers.push(
            facet_json::from_str(text.trim()).map_err(|e| format!("viewer {url} report: {e}"))?,
        );
    }
    let out = outputs.1.map_err(|e| format!("host: {e}"))?;
    let errors = rest.1.join().unwrap_or_default();
    if !out.status.success() {
        return Err(format!("the host failed: {}", errors.join("; ")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    result.host = facet_json::from_str(text.trim()).map_err(|e| format!("host report: {e}"))?;
    Ok(result)
}

/// Removes the demo's key file when dropped.
struct KeyFile(std::path::PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn print_video(v: &VideoResult) {
    let h = &v.host;
    println!();
    println!(
        "video: {} {}x{} -> shared memory ({} captured, {} dropped) -> H.264 at {:.1} Mbit/s (encode p50/p99 {:.1}/{:.1} ms) -> {} viewers, {}",
        h.source,
        h.width,
        h.height,
        h.frames_captured,
        h.capture_dropped,
        h.bitrate_bps as f64 / 1e6,
        h.encode_ms.p50,
        h.encode_ms.p99,
        v.viewers.len(),
        if h.encrypted {
            "AES-128-GCM"
        } else {
            "not encrypted"
        }
    );
    println!(
        "{:<5} {:>7} {:>5} {:>10} {:>15} {:>17} {:>44}",
        "via",
        "decoded",
        "lost",
        "mismatch",
        "PSNR mean/min",
        "latency p50/p99",
        "p50 ms: capture>encoded>sent>reassembled>decoded"
    );
    for c in &v.viewers {
        let st = &c.stages_ms;
        println!(
            "{:<5} {:>7} {:>5} {:>10} {:>15} {:>17} {:>44}",
            c.url.split(':').next().unwrap_or(""),
            c.frames_decoded,
            c.frames_lost,
            c.index_mismatches,
            format!("{:.1}/{:.1} dB", c.psnr_db_mean, c.psnr_db_min),
            format!("{:.1}/{:.1} ms", c.latency_ms.p50, c.latency_ms.p99),
            format!(
                "{:.2} > {:.2} > {:.2} > {:.2}",
                st.capture_to_encoded.p50,
                st.encoded_to_sent.p50,
                st.sent_to_reassembled.p50,
                st.reassembled_to_decoded.p50
            ),
        );
    }
    for c in &v.viewers {
        if c.bottleneck_mbps > 0.0 {
            println!(
                "  {}: through a simulated {:.0} Mbit/s bottleneck ({} datagrams dropped by its queue), encoder target {:.1} Mbit/s",
                c.url.split(':').next().unwrap_or(""),
                c.bottleneck_mbps,
                c.bottleneck_queue_dropped,
                c.target_mbps
            );
        }
    }
}

/// Run the demo over every chosen link and print the table or JSON.
pub async fn run(s: DemoArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut video = None;
    for link in &s.links {
        if link == "video" {
            eprintln!(
                "video: {} -> shared memory -> H.264 -> UDP and WebSocket viewers, {:.0} s ...",
                s.video_source,
                s.seconds.max(1.0)
            );
            video = Some(demo_video(&s).await?);
            continue;
        }
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
    if s.json {
        let mut items: Vec<String> = rows
            .iter()
            .map(|r| facet_json::to_string(r).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        if let Some(v) = &video {
            items.push(facet_json::to_string(v).map_err(|e| e.to_string())?);
        }
        println!("[{}]", items.join(","));
    } else {
        if !rows.is_empty() {
            print_table(&rows);
        }
        if let Some(v) = &video {
            print_video(v);
        }
    }
    Ok(())
}
