//! `UdpEndpoint`: many peers on one socket.
//!
//! A task owns the socket's receive ring, demultiplexes datagrams by source
//! address into per-peer queues, and announces new peers to `accept`. Each
//! peer's link sends through the shared socket from its own send ring.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use link_types::{Backing, LinkCaps, LinkError};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::config::EndpointConfig;
use crate::error::UdpError;
use crate::link::UdpLink;
use crate::peer::{Offered, PeerQueue, lock};
use crate::rx::{Receiver, ReceiverSetup, RxSource, Sources, UdpRx};
use crate::socket::{SocketInfo, open};
use crate::stats::{Counters, UdpStatsHandle};
use crate::tx::{TxSetup, UdpTx};

/// Links of peers that appeared, waiting for `accept`.
struct Accepted {
    links: VecDeque<UdpLink>,
    /// False once the endpoint handle is gone: new peers are refused.
    open: bool,
}

struct Shared {
    socket: Arc<UdpSocket>,
    config: EndpointConfig,
    info: SocketInfo,
    caps: LinkCaps,
    stats: Arc<Counters>,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerQueue>>>,
    accepted: Mutex<Accepted>,
    accept_waker: AtomicWaker,
    shutdown: Notify,
}

// r[impl udp.endpoint.lifetime]
/// Stops the endpoint's task when the last handle (the endpoint or any of
/// its links' halves) is dropped.
struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.shutdown.notify_one();
    }
}

// r[impl udp.endpoint.demux]
/// A UDP socket serving many peers, each with its own [`UdpLink`].
pub struct UdpEndpoint {
    shared: Arc<Shared>,
    guard: Arc<TaskGuard>,
}

impl UdpEndpoint {
    /// Bind `local` and start serving. Must be called inside a tokio runtime.
    pub fn bind(local: SocketAddr, config: EndpointConfig) -> Result<UdpEndpoint, UdpError> {
        if config.max_peers == 0 || config.peer_queue == 0 || config.accept_queue == 0 {
            return Err(UdpError::InvalidConfig(
                "max_peers, peer_queue and accept_queue must be at least 1".into(),
            ));
        }
        let (socket, info) = open(local, None, &config.link)?;
        let socket = Arc::new(socket);
        let stats = Arc::new(Counters::default());
        let receiver = Receiver::new(ReceiverSetup {
            socket: socket.clone(),
            max_payload: info.max_payload,
            gro: info.gro,
            batch: config.link.recv_batch,
            sources: Sources::Read,
            stats: stats.clone(),
        });
        let shared = Arc::new(Shared {
            socket,
            caps: LinkCaps::datagram(info.max_payload),
            config,
            info,
            stats,
            peers: Mutex::new(HashMap::new()),
            accepted: Mutex::new(Accepted {
                links: VecDeque::new(),
                open: true,
            }),
            accept_waker: AtomicWaker::new(),
            shutdown: Notify::new(),
        });
        let guard = Arc::new(TaskGuard(shared.clone()));
        tokio::spawn(run(shared.clone(), Arc::downgrade(&guard), receiver));
        Ok(UdpEndpoint { shared, guard })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.info.local
    }

    /// What the socket was granted.
    pub fn socket_info(&self) -> SocketInfo {
        self.shared.info
    }

    /// The endpoint's counters (shared by all its links).
    pub fn stats(&self) -> UdpStatsHandle {
        UdpStatsHandle::of(self.shared.stats.clone())
    }

    /// Number of peers currently known.
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.peers).len()
    }

    /// The next peer that appeared by sending to this endpoint.
    pub async fn accept(&self) -> UdpLink {
        poll_fn(|cx| {
            if let Some(l) = lock(&self.shared.accepted).links.pop_front() {
                return Poll::Ready(l);
            }
            self.shared.accept_waker.register(cx.waker());
            match lock(&self.shared.accepted).links.pop_front() {
                Some(l) => Poll::Ready(l),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// A link to `peer`, made without waiting for it to send first.
    pub fn connect(&self, peer: SocketAddr) -> Result<UdpLink, UdpError> {
        if peer.is_ipv4() != self.shared.info.local.is_ipv4() {
            return Err(UdpError::InvalidConfig(format!(
                "cannot reach {peer} from an endpoint bound to {}",
                self.shared.info.local
            )));
        }
        let mut peers = lock(&self.shared.peers);
        if peers.contains_key(&peer) {
            return Err(UdpError::PeerExists(peer));
        }
        if peers.len() >= self.shared.config.max_peers {
            return Err(UdpError::PeerLimit(self.shared.config.max_peers));
        }
        let q = PeerQueue::new(self.shared.config.peer_queue);
        peers.insert(peer, q.clone());
        Ok(make_link(&self.shared, &self.guard, peer, q))
    }
}

impl Drop for UdpEndpoint {
    fn drop(&mut self) {
        // Links nobody accepted hold guards; drop them, and take no new
        // ones (nobody can accept them any more), so that only links the
        // application owns keep the task running. Flag and queue share the
        // lock, so a datagram dispatched concurrently cannot slip one in.
        let mut accepted = lock(&self.shared.accepted);
        accepted.open = false;
        let pending = std::mem::take(&mut accepted.links);
        drop(accepted);
        drop(pending);
    }
}

fn make_link(
    shared: &Arc<Shared>,
    guard: &Arc<TaskGuard>,
    peer: SocketAddr,
    q: Arc<PeerQueue>,
) -> UdpLink {
    let cfg = &shared.config.link;
    let guard_tx: Arc<dyn Send + Sync> = guard.clone();
    let guard_rx: Arc<dyn Send + Sync> = guard.clone();
    let tx = UdpTx::new(TxSetup {
        socket: shared.socket.clone(),
        dest: Some(peer.into()),
        ring: cfg.send_ring,
        gso: cfg.gso,
        caps: shared.caps,
        stats: shared.stats.clone(),
        guard: Some(guard_tx),
    });
    let rx = UdpRx::new(RxSource::Peer(q), shared.caps, Some(guard_rx));
    UdpLink::new(
        tx,
        rx,
        shared.info,
        peer,
        UdpStatsHandle::of(shared.stats.clone()),
    )
}

// r[impl udp.endpoint.limit]
/// Hand one datagram to its peer's queue, making the peer if it is new.
fn dispatch(shared: &Arc<Shared>, guard: &Arc<TaskGuard>, msg: Backing, source: SocketAddr) {
    let stats = &shared.stats;
    let q = {
        let mut peers = lock(&shared.peers);
        match peers.get(&source) {
            Some(q) => q.clone(),
            None => {
                let mut accepted = lock(&shared.accepted);
                let refuse = !accepted.open
                    || peers.len() >= shared.config.max_peers
                    || accepted.links.len() >= shared.config.accept_queue;
                if refuse {
                    stats.rx_peer_refused.add(1);
                    return;
                }
                let q = PeerQueue::new(shared.config.peer_queue);
                peers.insert(source, q.clone());
                accepted
                    .links
                    .push_back(make_link(shared, guard, source, q.clone()));
                drop(accepted);
                shared.accept_waker.wake();
                q
            }
        }
    };
    match q.offer(msg) {
        Offered::Queued => {}
        Offered::ReceiverGone => stats.rx_peer_gone.add(1),
        Offered::QueueFull => stats.rx_peer_queue_full.add(1),
    }
}

// r[impl udp.endpoint.idle]
/// Forget peers that sent nothing for the idle timeout.
fn sweep(shared: &Shared, idle: Duration) {
    let now = Instant::now();
    let mut peers = lock(&shared.peers);
    peers.retain(|_, q| {
        let expired = q.idle_for(idle, now);
        if expired {
            shared.stats.peers_expired.add(1);
            q.end(LinkError::PeerGone);
        }
        !expired
    });
}

/// The endpoint's task: receive, demultiplex, expire idle peers; stop when
/// the last handle is gone.
async fn run(shared: Arc<Shared>, guard: Weak<TaskGuard>, mut receiver: Receiver) {
    let idle = shared.config.idle_timeout;
    let tick = idle.map_or(Duration::from_secs(3600), |d| {
        (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    });
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = shared.shutdown.notified() => break LinkError::Closed,
            r = receiver.next() => match r {
                Ok((msg, Some(source))) => {
                    // New links need a guard; if none can be had, every
                    // handle is gone and the shutdown is about to be seen.
                    let Some(guard) = guard.upgrade() else { break LinkError::Closed };
                    dispatch(&shared, &guard, msg, source);
                }
                Ok((_, None)) => {
                    // A source address the kernel gave in a form we cannot
                    // read: no peer to give it to. Counted, never silent.
                    shared.stats.rx_peer_refused.add(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "UDP endpoint receive failed; ending all peer links");
                    break e;
                }
            },
            _ = interval.tick(), if idle.is_some() => {
                if let Some(d) = idle {
                    sweep(&shared, d);
                }
            }
        }
    };
    for (_, q) in lock(&shared.peers).drain() {
        q.end(end.clone());
    }
    let pending = std::mem::take(&mut lock(&shared.accepted).links);
    drop(pending);
}
