//! The stream-link rate controller over the real native WebSocket link:
//! the host's target follows what a rate-limited TCP path delivers, and
//! finds the headroom again once the limit is lifted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use link_session::{BweConfig, Client, ClientConfig, FrameFlags, Host, HostConfig, HostEvent};
use link_ws::{WsConfig, WsLink, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;

/// A TCP relay between the viewer and the host whose host-to-viewer
/// direction is a token bucket of `rate` bit/s (0: unlimited), with a
/// small receive buffer towards the host (so that the backlog stays on
/// the host's side, as at a real bottleneck, instead of in a large
/// autotuned buffer here).
async fn relay(listener: TcpListener, host: SocketAddr, rate: Arc<AtomicU64>) {
    let (down, _) = listener.accept().await.unwrap();
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    let up = sock.connect(host).await.unwrap();
    up.set_nodelay(true).unwrap();
    down.set_nodelay(true).unwrap();
    let (mut up_r, mut up_w) = up.into_split();
    let (mut down_r, mut down_w) = down.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
    });
    let mut buf = vec![0u8; 4096];
    let mut next = Instant::now();
    loop {
        let n = match up_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down_w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let bps = rate.load(Relaxed);
        let now = Instant::now();
        if bps == 0 {
            next = now;
            continue;
        }
        next = next.max(now) + Duration::from_nanos(n as u64 * 8 * 1_000_000_000 / bps);
        tokio::time::sleep_until(next).await;
    }
}

/// Frames at 30 a second, each sized from the host's current target
/// (the way an encoder follows it), for `secs` seconds.
async fn send_for(host: &mut Host<link_ws::WsTx>, secs: u64, index: &mut u64) {
    let start = Instant::now();
    let tick = Duration::from_secs(1) / 30;
    let mut next = start;
    while start.elapsed() < Duration::from_secs(secs) {
        let len = (host.target_bitrate() / 8 / 30).max(100) as usize;
        let flags = if (*index).is_multiple_of(60) {
            FrameFlags::KEYFRAME
        } else {
            FrameFlags::NONE
        };
        host.send_frame(&vec![0x5a; len], *index, flags)
            .await
            .unwrap();
        *index += 1;
        next += tick;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}

// r[verify session.bwe.stream.path]
/// Asked for 20 Mbit/s through a 4 Mbit/s TCP path, the host's target
/// comes down to the path (reported by `TargetBitrate` events and the
/// `path_*` counters); once the path is unlimited it grows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_target_follows_a_rate_limited_path() {
    let ws_cfg = WsConfig {
        queue: 4,
        write_buffer: 32 << 10,
        max_unsent: Some(32 << 10),
        ..WsConfig::default()
    };
    let mut server = WsServer::bind("127.0.0.1:0".parse().unwrap(), ws_cfg)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/s", listener.local_addr().unwrap());
    let rate = Arc::new(AtomicU64::new(4_000_000));
    tokio::spawn(relay(listener, server.local_addr(), rate.clone()));
    let (a, b) = futures::join!(async { server.accept().await.unwrap().link }, async {
        WsLink::connect(&url, &WsConfig::default()).await.unwrap()
    });
    let cfg = HostConfig {
        bwe: BweConfig {
            start_bps: 20_000_000,
            min_bps: 300_000,
            ..BweConfig::default()
        },
        ..HostConfig::default()
    };
    let client = tokio::spawn(async move {
        let (mut frames, _input) = Client::connect(b, ClientConfig::default()).await.unwrap();
        let mut n = 0u64;
        while frames.next_frame().await.unwrap().is_some() {
            n += 1;
        }
        n
    });
    let (mut host, mut events) = Host::accept(a, cfg).await.unwrap();
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = targets.clone();
    let events = tokio::spawn(async move {
        while let Ok(Some(ev)) = events.next_event().await {
            if let HostEvent::TargetBitrate { bps } = ev {
                seen.lock().unwrap().push(bps);
            }
        }
    });
    let mut index = 0;
    send_for(&mut host, 5, &mut index).await;
    let narrow = host.target_bitrate();
    let st = host.stats();
    eprintln!(
        "through 4 Mbit/s: target {narrow}, delivered {} bit/s, standing queue {} µs, {} decreases",
        st.path_delivered_bps, st.path_standing_queue_us, st.path_decreases
    );
    assert!(st.path_decreases >= 1, "{st:?}");
    assert!(
        (300_000..=4_400_000).contains(&narrow),
        "through a 4 Mbit/s path the target is {narrow}"
    );
    assert!(
        st.path_delivered_bps <= 4_800_000,
        "more delivered than the path carries: {st:?}"
    );
    assert!(
        targets.lock().unwrap().iter().any(|&t| t <= 4_400_000),
        "no TargetBitrate event at the path's rate: {:?}",
        targets.lock().unwrap()
    );
    // The limit is lifted: the target finds the headroom again.
    rate.store(0, Relaxed);
    send_for(&mut host, 6, &mut index).await;
    let wide = host.target_bitrate();
    eprintln!("unlimited: target {wide}");
    assert!(
        wide >= 2 * narrow,
        "6 s after the limit was lifted the target went from {narrow} to {wide}"
    );
    host.close().await.unwrap();
    let got = client.await.unwrap();
    assert_eq!(got, index, "every frame arrives on a stream link");
    drop(host);
    let _ = events.await;
}
