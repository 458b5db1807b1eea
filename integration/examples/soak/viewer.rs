//! One viewer, over UDP (through the fault injector or not) or WebSocket:
//! connect, check every frame, send input, leave; what it saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use link_session::{Client, ClientConfig, ClientEvent, ClientStats, InputEvent};
use link_types::Link;
use link_types::fault::{self, FaultSpec, FaultStats};
use link_udp::{UdpConfig, UdpLink};
use link_ws::{WsConfig, WsLink};
use tokio::sync::Notify;

use crate::Args;
use crate::frames::{fill_frame, frame_len, mix};

#[derive(Debug, Default, Clone)]
pub(crate) struct ViewerResult {
    pub(crate) ws: bool,
    pub(crate) connect_ms: f64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) lost_events: u64,
    pub(crate) corrupt: u64,
    pub(crate) out_of_sequence: u64,
    pub(crate) error: Option<String>,
    pub(crate) inputs_sent: u64,
    pub(crate) fault: FaultStats,
    pub(crate) stats: ClientStats,
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
pub(crate) fn source(i: u64) -> SocketAddr {
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

pub(crate) async fn udp_viewer(
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

pub(crate) async fn ws_viewer(
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
