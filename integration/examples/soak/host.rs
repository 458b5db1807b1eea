//! `soak host`: one `UdpEndpoint` (with the session's `RetryGate`) and one
//! `WsServer`, a link-session `Host` per viewer sending the synthetic
//! stream, and the status file the swarm reads every 500 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use link_session::{Host, HostConfig, HostEvent, RetryGate};
use link_types::Link;
use link_udp::{EndpointConfig, UdpEndpoint};
use link_ws::{WsConfig, WsServer};
use tokio::sync::Notify;

use crate::Args;
use crate::frames::{fill_frame, flags, frame_len};
use crate::procfs::{cpu_ticks, open_fds, status_kib};

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

pub(crate) async fn host(a: &Args) -> Result<bool, String> {
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
