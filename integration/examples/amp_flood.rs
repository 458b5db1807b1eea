//! Address validation under a flood (`scripts/netns-flood.sh`) and the
//! issue's replay experiment, with the session's host on one `UdpEndpoint`
//! as the README suggests (default configs, `Host::accept` per new peer).
//!
//! ```text
//! amp_flood host   <bind> <seconds> <frames> [retry]   serve; stream <frames> to every session; print JSON
//! amp_flood client <bind> <host> <frames>              connect, receive every frame; print JSON
//! amp_flood spoof  <host> <count> <sources> <first source ip> <pps>
//!                                                      raw IPv4 Hellos from <sources> forged addresses
//! amp_flood replay <host> <ports> <seconds>            one Hello from <ports> loopback ports; bytes in/out as JSON
//! ```
//!
//! `host` prints, when its time is up: the endpoint's counters, the bytes
//! its sessions' handshakes received and sent, sessions established, and
//! its resident memory (start, peak, end; sampled every 100 ms). `client`
//! exits non-zero unless it connected and received every frame intact, in
//! order. `spoof` needs `CAP_NET_RAW` (the flood test runs it as root in
//! its own namespace); every source address sends from port 4433.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use link_session::handshake::Hello;
use link_session::wire::{self, Kind, OUTER_LEN, VERSION};
use link_session::{Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, RetryGate};
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink};

const FRAME_LEN: usize = 6000;
const FPS: u64 = 60;

fn frame(i: u32) -> Vec<u8> {
    (0..FRAME_LEN)
        .map(|k| (i as usize * 31 + k * 7) as u8)
        .collect()
}

fn hello_datagram() -> Vec<u8> {
    let h = Hello {
        min_version: VERSION,
        max_version: VERSION,
        random: [0x42; 32],
        encryption: false,
        max_frame: 16 << 20,
        max_message: 1472,
    };
    let mut m = vec![0; OUTER_LEN];
    wire::write_outer(&mut m, Kind::Hello, 0);
    m.extend_from_slice(&h.to_bytes());
    m
}

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Totals {
    sessions: AtomicU64,
    handshakes_failed: AtomicU64,
    hs_received: AtomicU64,
    hs_sent: AtomicU64,
    held: AtomicU64,
    validated: AtomicU64,
    frames_sent: AtomicU64,
}

async fn host(bind: SocketAddr, seconds: u64, frames: u32, retry: bool) -> Result<(), String> {
    let rss_start = rss_kib();
    let cfg = EndpointConfig::default();
    let ep = if retry {
        let gate = Arc::new(RetryGate::new().map_err(|e| e.to_string())?);
        UdpEndpoint::bind_with_gate(bind, cfg, gate)
    } else {
        UdpEndpoint::bind(bind, cfg)
    }
    .map_err(|e| e.to_string())?;
    let ep = Arc::new(ep);
    let totals = Arc::new(Totals::default());
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let acceptor = {
        let ep = ep.clone();
        let totals = totals.clone();
        tokio::spawn(async move {
            loop {
                let link = ep.accept().await;
                let totals = totals.clone();
                tokio::spawn(async move {
                    match Host::accept(link, HostConfig::default()).await {
                        Ok((mut h, mut ev)) => {
                            let s = h.stats();
                            totals.sessions.fetch_add(1, Relaxed);
                            totals
                                .hs_received
                                .fetch_add(s.handshake_bytes_received, Relaxed);
                            totals.hs_sent.fetch_add(s.handshake_bytes_sent, Relaxed);
                            totals.held.fetch_add(s.amplification_held, Relaxed);
                            totals.validated.fetch_add(s.address_validated, Relaxed);
                            let events = tokio::spawn(async move {
                                while let Ok(Some(_)) = ev.next_event().await {}
                            });
                            let mut tick =
                                tokio::time::interval(Duration::from_micros(1_000_000 / FPS));
                            for i in 0..frames {
                                tick.tick().await;
                                let flags = if i == 0 {
                                    FrameFlags::KEYFRAME
                                } else {
                                    FrameFlags::NONE
                                };
                                if h.send_frame(&frame(i), i as u64, flags).await.is_err() {
                                    break;
                                }
                                totals.frames_sent.fetch_add(1, Relaxed);
                            }
                            let _ = h.close().await;
                            events.abort();
                        }
                        Err(_) => {
                            totals.handshakes_failed.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    acceptor.abort();
    sampler.abort();
    let st = ep.stats().snapshot();
    let t = &totals;
    println!(
        "{{\"unvalidated_rx_bytes\":{},\"unvalidated_tx_bytes\":{},\"rx_datagrams\":{},\"rx_bytes\":{},\"tx_datagrams\":{},\"tx_bytes\":{},\"rx_kernel_drops\":{},\"unvalidated_evicted\":{},\"rx_evicted\":{},\"rx_rate_limited\":{},\"retries_sent\":{},\"rx_gate_dropped\":{},\"rx_peer_refused\":{},\"tx_amplification_held\":{},\"peers_validated\":{},\"peers_admitted_validated\":{},\"peers_now\":{},\"unvalidated_now\":{},\"sessions\":{},\"handshakes_failed\":{},\"session_hs_received\":{},\"session_hs_sent\":{},\"session_amplification_held\":{},\"sessions_validated\":{},\"frames_sent\":{},\"rss_start_kib\":{},\"rss_peak_kib\":{},\"rss_end_kib\":{}}}",
        st.unvalidated_rx_bytes,
        st.unvalidated_tx_bytes,
        st.rx_datagrams,
        st.rx_bytes,
        st.tx_datagrams,
        st.tx_bytes,
        st.rx_kernel_drops,
        st.unvalidated_evicted,
        st.rx_evicted,
        st.rx_rate_limited,
        st.retries_sent,
        st.rx_gate_dropped,
        st.rx_peer_refused,
        st.tx_amplification_held,
        st.peers_validated,
        st.peers_admitted_validated,
        ep.peer_count(),
        ep.unvalidated_count(),
        t.sessions.load(Relaxed),
        t.handshakes_failed.load(Relaxed),
        t.hs_received.load(Relaxed),
        t.hs_sent.load(Relaxed),
        t.held.load(Relaxed),
        t.validated.load(Relaxed),
        t.frames_sent.load(Relaxed),
        rss_start,
        peak.load(Relaxed).max(rss_kib()),
        rss_kib(),
    );
    Ok(())
}

async fn client(bind: SocketAddr, to: SocketAddr, frames: u32) -> Result<bool, String> {
    let link = UdpLink::connect(bind, to, &UdpConfig::default()).map_err(|e| e.to_string())?;
    let link_stats = link.stats();
    let start = Instant::now();
    let (mut c, _input) = Client::connect(link, ClientConfig::default())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connect_us = start.elapsed().as_micros();
    let mut next = 0u32;
    let mut corrupt = 0u32;
    let mut out_of_order = 0u32;
    let mut gaps: Vec<String> = Vec::new();
    while let Some(ev) = c
        .next_frame()
        .await
        .map_err(|e| format!("next_frame: {e}"))?
    {
        if let ClientEvent::Frame(f) = ev {
            if f.index != next {
                out_of_order += 1;
                if gaps.len() < 16 {
                    gaps.push(format!("{next}..{}", f.index));
                }
            }
            if f.data() != &frame(f.index)[..] {
                corrupt += 1;
            }
            next = f.index + 1;
        }
    }
    let s = c.stats();
    println!(
        "{{\"connect_us\":{connect_us},\"delivered\":{},\"lost\":{},\"recovered\":{},\"corrupt\":{corrupt},\"out_of_order\":{out_of_order},\"retries_followed\":{},\"expected\":{frames},\"rx_kernel_drops\":{},\"rx_datagrams\":{},\"gaps\":\"{}\"}}",
        s.frames_delivered,
        s.frames_lost,
        s.frames_recovered,
        s.retries_followed,
        link_stats.snapshot().rx_kernel_drops,
        link_stats.snapshot().rx_datagrams,
        gaps.join(" "),
    );
    Ok(s.frames_delivered == frames as u64
        && s.frames_lost == 0
        && corrupt == 0
        && out_of_order == 0)
}

/// A raw IPv4/UDP packet from `src` to `dst` carrying `payload` (the
/// kernel fills in the IP checksum and length; UDP checksum 0 = none).
fn raw_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = vec![0u8; 20 + udp_len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn spoof(
    to: SocketAddrV4,
    count: u64,
    sources: u32,
    first: Ipv4Addr,
    pps: u64,
) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    s.set_header_included_v4(true).map_err(|e| e.to_string())?;
    let hello = hello_datagram();
    let base = u32::from(first);
    let dest = socket2::SockAddr::from(to);
    let start = Instant::now();
    let mut failed = 0u64;
    for i in 0..count {
        let src = SocketAddrV4::new(Ipv4Addr::from(base + (i % sources as u64) as u32), 4433);
        if s.send_to(&raw_packet(src, to, &hello), &dest).is_err() {
            failed += 1;
        }
        if (i + 1) % 100 == 0 {
            let due = Duration::from_secs_f64((i + 1) as f64 / pps as f64);
            if let Some(w) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(w);
            }
        }
    }
    println!(
        "{{\"sent\":{},\"failed\":{failed},\"payload_bytes\":{},\"seconds\":{:.3}}}",
        count - failed,
        (count - failed) * hello.len() as u64,
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        return Err(format!("{failed} spoofed packets could not be sent"));
    }
    Ok(())
}

fn replay(to: SocketAddr, ports: usize, seconds: u64) -> Result<(), String> {
    let hello = hello_datagram();
    let socks: Vec<UdpSocket> = (0..ports)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for s in &socks {
        s.send_to(&hello, to).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let (mut dgrams, mut bytes) = (0u64, 0u64);
    let mut kinds = [0u64; 16];
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        for s in &socks {
            while let Ok(n) = s.recv(&mut buf) {
                dgrams += 1;
                bytes += n as u64;
                if n > 1 {
                    kinds[(buf[1] & 15) as usize] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let bytes_in = (ports * hello.len()) as u64;
    println!(
        "{{\"ports\":{ports},\"bytes_to_host\":{bytes_in},\"datagrams_back\":{dgrams},\"bytes_back\":{bytes},\"welcomes\":{},\"retries\":{},\"factor\":{:.2}}}",
        kinds[Kind::Welcome as usize],
        kinds[Kind::Retry as usize],
        bytes as f64 / bytes_in as f64
    );
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Result<T, String> {
    args.get(i)
        .ok_or(format!("argument {i} missing"))?
        .parse()
        .map_err(|_| format!("argument {i} ({:?}) is not valid", args[i]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let r: Result<bool, String> = (|| match args.get(1).map(String::as_str) {
        Some("host") => rt
            .block_on(host(
                arg(&args, 2)?,
                arg(&args, 3)?,
                arg(&args, 4)?,
                args.get(5).is_some_and(|a| a == "retry"),
            ))
            .map(|()| true),
        Some("client") => rt.block_on(client(arg(&args, 2)?, arg(&args, 3)?, arg(&args, 4)?)),
        Some("spoof") => spoof(
            arg(&args, 2)?,
            arg(&args, 3)?,
            arg(&args, 4)?,
            arg(&args, 5)?,
            arg(&args, 6)?,
        )
        .map(|()| true),
        Some("replay") => {
            let _guard = rt.enter();
            replay(arg(&args, 2)?, arg(&args, 3)?, arg(&args, 4)?).map(|()| true)
        }
        _ => Err("usage: amp_flood host|client|spoof|replay ...".into()),
    })();
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("amp_flood: {e}");
            ExitCode::FAILURE
        }
    }
}
