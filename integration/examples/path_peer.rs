//! Both ends of the real-path pacing test (`scripts/netns-pacing.sh`): a
//! session over `link-udp` between two network namespaces with a `tbf`
//! bottleneck on the host's side.
//!
//! ```text
//! path_peer host   <bind> <peer> <seconds> (fixed:<bps> | follow | follow-idr) [nopace] [start:<bps>] [gain:<f>] [noprobe] [ceiling:<bps>] [ws]
//! path_peer client <bind> <peer> [ws]
//! ```
//!
//! With `ws` both ends use a WebSocket link (`link-ws`) instead of UDP: the
//! host listens on `<bind>`, the client connects to `ws://<peer>/stream`
//! (the clean-path UDP/WebSocket comparison, case (g)).
//!
//! The host sends a synthetic 60 fps stream, a keyframe 8× a P-frame every
//! 60 frames, at a fixed bitrate or following the session's target
//! bitrate (`follow-idr`: following the target with a keyframe only at
//! the start and on the client's request, at most once a second, as game
//! streaming encoders run), and prints its stats and the target over time as JSON. Each
//! frame carries its send time (wall clock, µs: host and client run on one
//! machine, so one clock). The client prints a JSON summary: frames
//! delivered and lost, keyframes lost, frame latency percentiles, and per
//! 250 ms window the frames, losses and the 99th percentile latency.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use link_session::{
    Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent, PacingConfig,
};
use link_types::{Link, LinkRx, LinkTx};
use link_udp::{UdpConfig, UdpLink};
use link_ws::{WsConfig, WsLink, WsServer};

const FPS: u64 = 60;
const GOP: u32 = 60;

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Estimator settings: the start rate (`start:<bps>`), and for
/// experiments the pacing gain (`gain:<f>`) and probing off (`noprobe`).
#[derive(Default)]
struct Tuning {
    start: Option<u64>,
    gain: Option<f64>,
    noprobe: bool,
    ceiling: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn host<L, T, R>(
    link: L,
    seconds: u64,
    fixed: Option<u64>,
    idr_on_request: bool,
    paced: bool,
    tuning: Tuning,
) -> Result<(), String>
where
    L: Link<Tx = T, Rx = R>,
    T: LinkTx,
    R: LinkRx,
{
    let mut cfg = HostConfig {
        pacing: PacingConfig {
            enabled: paced,
            ..PacingConfig::default()
        },
        ..HostConfig::default()
    };
    if let Some(s) = tuning.start {
        cfg.bwe.start_bps = s;
    }
    if let Some(g) = tuning.gain {
        cfg.bwe.pacing_gain = g;
    }
    cfg.bwe.probing = !tuning.noprobe;
    if let Some(c) = tuning.ceiling {
        cfg.pacing.ceiling_bps = c;
    }
    let (mut host, mut events) = Host::accept(link, cfg).await.map_err(|e| e.to_string())?;
    let t0 = wall_us();
    let begin = tokio::time::Instant::now();
    let frames = (seconds * FPS) as u32;
    let mut targets: Vec<(u64, u64)> = vec![(t0, host.target_bitrate())];
    let mut overruns = 0u64;
    let mut keyframe_requests = 0u64;
    let mut buf = Vec::new();
    let (mut key_wanted, mut last_key) = (false, None::<tokio::time::Instant>);
    for i in 0..frames {
        let rate = fixed.unwrap_or_else(|| host.target_bitrate());
        let p = (rate / 8 * GOP as u64 / (GOP as u64 + 7) / FPS).max(64) as usize;
        let key = if idr_on_request {
            let granted =
                key_wanted && last_key.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            i == 0 || granted
        } else {
            i % GOP == 0
        };
        if key {
            key_wanted = false;
            last_key = Some(tokio::time::Instant::now());
        }
        let len = if key { 8 * p } else { p };
        buf.clear();
        buf.resize(len, (i % 251) as u8);
        buf[..8].copy_from_slice(&wall_us().to_le_bytes());
        buf[8..12].copy_from_slice(&i.to_le_bytes());
        let flags = if key {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::default()
        };
        host.send_frame(&buf, i as u64, flags)
            .await
            .map_err(|e| e.to_string())?;
        let due = begin + Duration::from_micros(1_000_000 * (i as u64 + 1) / FPS);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                ev = events.next_event() => match ev.map_err(|e| e.to_string())? {
                    Some(HostEvent::TargetBitrate { bps }) => targets.push((wall_us(), bps)),
                    Some(HostEvent::PacingOverrun { .. }) => overruns += 1,
                    Some(HostEvent::KeyframeRequest { .. }) => {
                        keyframe_requests += 1;
                        key_wanted = true;
                    }
                    Some(_) => {}
                    None => return Err("client left early".into()),
                },
            }
        }
    }
    host.close().await.map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.next_event().await {}
    })
    .await;
    let t: Vec<String> = targets
        .iter()
        .map(|(at, b)| format!("[{at},{b}]"))
        .collect();
    println!(
        "{{\"role\":\"host\",\"start_us\":{t0},\"paced\":{paced},\"overruns\":{overruns},\"keyframe_requests\":{keyframe_requests},\"targets\":[{}],\"stats\":{}}}",
        t.join(","),
        host.stats().to_json()
    );
    Ok(())
}

async fn client<L, T, R>(link: L) -> Result<(), String>
where
    L: Link<Tx = T, Rx = R>,
    T: LinkTx,
    R: LinkRx,
{
    let (mut client, mut input) = Client::connect(link, ClientConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut lat: Vec<u64> = Vec::new();
    // Every delivered frame: (send time, latency), for checks over a period.
    let mut each: Vec<(u64, u64)> = Vec::new();
    // Per 250 ms window (by send time): latencies and losses.
    let mut windows: std::collections::BTreeMap<u64, (Vec<u64>, u32)> = Default::default();
    let (mut lost, mut keys_lost, mut keys) = (0u32, 0u32, 0u32);
    let mut last_stamp = 0u64;
    loop {
        let ev = match tokio::time::timeout(Duration::from_secs(15), client.next_frame()).await {
            Err(_) => return Err("no frame for 15 s".into()),
            Ok(r) => r.map_err(|e| e.to_string())?,
        };
        match ev {
            None => break,
            Some(ClientEvent::Frame(f)) => {
                let d = f.data();
                let sent = u64::from_le_bytes(d[..8].try_into().expect("8"));
                let l = wall_us().saturating_sub(sent);
                last_stamp = sent;
                lat.push(l);
                each.push((sent, l));
                windows.entry(sent / 250_000).or_default().0.push(l);
                if f.index % GOP == 0 {
                    keys += 1;
                }
            }
            Some(ClientEvent::Lost { first, count }) => {
                lost += count;
                let k = (first..first + count).filter(|i| i % GOP == 0).count() as u32;
                keys_lost += k;
                keys += k;
                // Attribute the loss to the window of the last frame seen.
                windows.entry(last_stamp / 250_000).or_default().1 += count;
            }
        }
    }
    if let Err(e) = input.close().await {
        eprintln!("path_peer: closing the input: {e}");
    }
    let delivered = lat.len();
    lat.sort_unstable();
    let w: Vec<String> = windows
        .iter_mut()
        .map(|(k, (v, l))| {
            v.sort_unstable();
            format!("[{},{},{},{}]", k * 250_000, v.len(), l, pct(v, 0.99))
        })
        .collect();
    println!(
        "{{\"role\":\"client\",\"frames\":{delivered},\"lost\":{lost},\"keyframes\":{keys},\"keyframes_lost\":{keys_lost},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"windows\":[{}],\"frames_at\":[{}],\"stats\":{}}}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        w.join(","),
        each.iter()
            .map(|(t, l)| format!("[{t},{l}]"))
            .collect::<Vec<_>>()
            .join(","),
        client.stats().to_json()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> Result<SocketAddr, String> {
        args.get(i)
            .ok_or("missing address")?
            .parse()
            .map_err(|e| format!("{e}"))
    };
    let ws = args.iter().any(|a| a == "ws");
    let r = match args.first().map(String::as_str) {
        Some("host") => {
            let run = async {
                let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).ok_or("seconds")?;
                let mode = args.get(4).map(String::as_str).unwrap_or("follow");
                let fixed = match mode.strip_prefix("fixed:") {
                    Some(b) => Some(b.parse().map_err(|_| "bitrate")?),
                    None if mode == "follow" || mode == "follow-idr" => None,
                    None => return Err(format!("unknown mode {mode}")),
                };
                let idr = mode == "follow-idr";
                let nopace = args.iter().any(|a| a == "nopace");
                let tuning = Tuning {
                    start: args
                        .iter()
                        .find_map(|a| a.strip_prefix("start:"))
                        .and_then(|s| s.parse().ok()),
                    gain: match args.iter().find_map(|a| a.strip_prefix("gain:")) {
                        Some(g) => Some(g.parse().map_err(|_| format!("gain:{g}"))?),
                        None => None,
                    },
                    noprobe: args.iter().any(|a| a == "noprobe"),
                    ceiling: match args.iter().find_map(|a| a.strip_prefix("ceiling:")) {
                        Some(c) => Some(c.parse().map_err(|_| format!("ceiling:{c}"))?),
                        None => None,
                    },
                };
                let (bind, peer) = (addr(1)?, addr(2)?);
                if ws {
                    let mut server = WsServer::bind(bind, WsConfig::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let link = server.accept().await.map_err(|e| e.to_string())?.link;
                    host(link, seconds, fixed, idr, !nopace, tuning).await
                } else {
                    let link = UdpLink::connect(bind, peer, &UdpConfig::default())
                        .map_err(|e| e.to_string())?;
                    host(link, seconds, fixed, idr, !nopace, tuning).await
                }
            };
            run.await
        }
        Some("client") => {
            let run = async {
                let (bind, peer) = (addr(1)?, addr(2)?);
                if ws {
                    let link =
                        WsLink::connect(&format!("ws://{peer}/stream"), &WsConfig::default())
                            .await
                            .map_err(|e| e.to_string())?;
                    client(link).await
                } else {
                    let link = UdpLink::connect(bind, peer, &UdpConfig::default())
                        .map_err(|e| e.to_string())?;
                    client(link).await
                }
            };
            run.await
        }
        _ => Err("usage: path_peer host|client <bind> <peer> ...".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("path_peer: {e}");
            ExitCode::FAILURE
        }
    }
}
