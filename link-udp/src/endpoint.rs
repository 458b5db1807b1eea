//! `UdpEndpoint`: many peers on one socket.
//!
//! A task owns the socket's receive ring, demultiplexes datagrams by source
//! address into per-peer queues, and announces new peers to `accept`. Each
//! peer's link sends through the shared socket from its own send ring.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use link_types::{Admission, AdmissionGate, Backing, LinkCaps, LinkError};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::config::EndpointConfig;
use crate::error::UdpError;
use crate::link::UdpLink;
use crate::peer::{Offered, PeerQueue, lock};
use crate::rx::{Receiver, ReceiverSetup, RxSource, Sources, UdpRx};
use crate::socket::{SocketInfo, open};
use crate::stats::{Counters, UdpStatsHandle};
use crate::tx::{SendWaiters, TxPeer, TxSetup, UdpTx};

/// Links of peers that appeared, waiting for `accept`.
struct Accepted {
    links: VecDeque<UdpLink>,
    /// False once the endpoint handle is gone: new peers are refused.
    open: bool,
}

/// The peers of an endpoint: validated ones (at most `max_peers`) and
/// unvalidated ones (at most `max_unvalidated`), in one map by address.
struct Peers {
    map: HashMap<SocketAddr, Arc<PeerQueue>>,
    /// Unvalidated peers in order of creation, `(seq, address)`; entries of
    /// peers since validated or gone are skipped (and compacted away).
    order: VecDeque<(u64, SocketAddr)>,
    validated: usize,
    unvalidated: usize,
    next_seq: u64,
    rate: RateLimiter,
}

impl Peers {
    fn remove(&mut self, addr: &SocketAddr) -> Option<Arc<PeerQueue>> {
        let q = self.map.remove(addr)?;
        if q.is_validated() {
            self.validated -= 1;
        } else {
            self.unvalidated -= 1;
        }
        Some(q)
    }

    /// The oldest unvalidated peer still in the table.
    fn oldest_unvalidated(&mut self) -> Option<SocketAddr> {
        while let Some(&(seq, addr)) = self.order.front() {
            self.order.pop_front();
            if let Some(q) = self.map.get(&addr)
                && q.seq == seq
                && !q.is_validated()
            {
                return Some(addr);
            }
        }
        None
    }

    /// Drop stale entries of `order` once it holds many.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.unvalidated + 64 {
            let map = &self.map;
            self.order.retain(|(seq, addr)| {
                map.get(addr)
                    .is_some_and(|q| q.seq == *seq && !q.is_validated())
            });
        }
    }
}

// r[impl udp.endpoint.rate]
/// Per-source token buckets (an IPv4 address, an IPv6 /64) on new peers,
/// tracking at most `cap` sources.
struct RateLimiter {
    /// Tokens per second (`None`: no limit).
    rate: Option<u32>,
    burst: u32,
    cap: usize,
    /// Tokens (in millitokens) and when they were last refilled.
    buckets: HashMap<IpAddr, (u64, Instant)>,
    last_purge: Option<Instant>,
}

impl RateLimiter {
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        }
    }

    fn refill(rate: u32, burst: u32, b: &mut (u64, Instant), now: Instant) {
        let add = now.duration_since(b.1).as_micros() as u64 * rate as u64 / 1000;
        b.0 = (b.0 + add).min(burst as u64 * 1000);
        b.1 = now;
    }

    /// May `ip` open one more peer now? Takes a token if so.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(rate) = self.rate else { return true };
        let burst = self.burst;
        let key = Self::key(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            Self::refill(rate, burst, b, now);
            if b.0 < 1000 {
                return false;
            }
            b.0 -= 1000;
            return true;
        }
        if self.buckets.len() >= self.cap {
            // Forget sources whose bucket is full again (they are not
            // limited), at most every 100 ms so that a flood of new
            // addresses costs no scan per datagram.
            let due = self
                .last_purge
                .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100));
            if !due {
                return false;
            }
            self.last_purge = Some(now);
            self.buckets.retain(|_, b| {
                Self::refill(rate, burst, b, now);
                b.0 < burst as u64 * 1000
            });
            if self.buckets.len() >= self.cap {
                return false;
            }
        }
        self.buckets
            .insert(key, ((burst as u64).saturating_sub(1) * 1000, now));
        true
    }
}

struct Shared {
    socket: Arc<UdpSocket>,
    /// The links' sending halves waiting for `socket` to become writable.
    send_waiters: Arc<SendWaiters>,
    config: EndpointConfig,
    info: SocketInfo,
    caps: LinkCaps,
    stats: Arc<Counters>,
    peers: Mutex<Peers>,
    accepted: Mutex<Accepted>,
    accept_waker: AtomicWaker,
    shutdown: Notify,
    gate: Option<Arc<dyn AdmissionGate>>,
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
        Self::bind_inner(local, config, None)
    }

    // r[impl udp.endpoint.retry]
    /// Bind `local` and start serving, asking `gate` about the first
    /// datagram of every new source: under load (`retry_above`) the gate
    /// answers it statelessly until the source proves its address. Must be
    /// called inside a tokio runtime.
    pub fn bind_with_gate(
        local: SocketAddr,
        config: EndpointConfig,
        gate: Arc<dyn AdmissionGate>,
    ) -> Result<UdpEndpoint, UdpError> {
        Self::bind_inner(local, config, Some(gate))
    }

    fn bind_inner(
        local: SocketAddr,
        config: EndpointConfig,
        gate: Option<Arc<dyn AdmissionGate>>,
    ) -> Result<UdpEndpoint, UdpError> {
        if config.max_peers == 0
            || config.peer_queue == 0
            || config.accept_queue == 0
            || config.max_unvalidated == 0
            || config.rate_table == 0
            || config.unvalidated_queue == 0
        {
            return Err(UdpError::InvalidConfig(
                "max_peers, max_unvalidated, peer_queue, unvalidated_queue, accept_queue and rate_table must be at least 1"
                    .into(),
            ));
        }
        if config.handshake_rate == Some(0) || config.handshake_burst == 0 {
            return Err(UdpError::InvalidConfig(
                "handshake_rate and handshake_burst must be at least 1".into(),
            ));
        }
        let rate = RateLimiter {
            rate: config.handshake_rate,
            burst: config.handshake_burst,
            cap: config.rate_table,
            buckets: HashMap::new(),
            last_purge: None,
        };
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
            send_waiters: Default::default(),
            caps: LinkCaps::datagram(info.max_payload),
            config,
            info,
            stats,
            peers: Mutex::new(Peers {
                map: HashMap::new(),
                order: VecDeque::new(),
                validated: 0,
                unvalidated: 0,
                next_seq: 0,
                rate,
            }),
            gate,
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

    /// Number of peers currently known (validated or not).
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.peers).map.len()
    }

    /// Number of peers whose address is not validated yet.
    pub fn unvalidated_count(&self) -> usize {
        lock(&self.shared.peers).unvalidated
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
        if peers.map.contains_key(&peer) {
            return Err(UdpError::PeerExists(peer));
        }
        if peers.validated >= self.shared.config.max_peers {
            return Err(UdpError::PeerLimit(self.shared.config.max_peers));
        }
        // We chose this address: it is validated by construction.
        let seq = peers.next_seq;
        peers.next_seq += 1;
        let c = &self.shared.config;
        let q = PeerQueue::new(c.peer_queue, c.unvalidated_queue, true, seq);
        peers.map.insert(peer, q.clone());
        peers.validated += 1;
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
        waiters: shared.send_waiters.clone(),
        dest: Some(peer.into()),
        ring: cfg.send_ring,
        gso: cfg.gso,
        caps: shared.caps,
        stats: shared.stats.clone(),
        guard: Some(guard_tx),
        peer: Some(TxPeer {
            q: q.clone(),
            factor: shared.config.amplification_limit.map(u64::from),
            promote: {
                let weak = Arc::downgrade(shared);
                let wq = Arc::downgrade(&q);
                Box::new(move || {
                    if let (Some(sh), Some(q)) = (weak.upgrade(), wq.upgrade()) {
                        promote(&sh, peer, &q);
                    }
                })
            },
        }),
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

// r[impl udp.endpoint.validation]
/// The protocol above validated `peer`'s address: move it to the validated
/// table if it is still ours and there is room.
fn promote(shared: &Shared, peer: SocketAddr, q: &Arc<PeerQueue>) {
    let mut peers = lock(&shared.peers);
    let ours = peers.map.get(&peer).is_some_and(|p| Arc::ptr_eq(p, q));
    if !ours || q.is_validated() {
        return;
    }
    if peers.validated >= shared.config.max_peers {
        shared.stats.validation_refused.add(1);
        return;
    }
    q.set_validated();
    peers.validated += 1;
    peers.unvalidated -= 1;
    shared.stats.peers_validated.add(1);
}

/// Evict the oldest unvalidated peer: it leaves the table (and the accept
/// queue, if it waits there) and its link ends with `PeerGone`.
fn evict_oldest(shared: &Shared, peers: &mut Peers, accepted: &mut Accepted) -> bool {
    let Some(addr) = peers.oldest_unvalidated() else {
        return false;
    };
    shared.stats.unvalidated_evicted.add(1);
    let q = peers.remove(&addr);
    // Read before its link is dropped (which discards the queue).
    let queued = q.as_ref().map_or(0, |q| q.queued());
    let waiting = accepted.links.len();
    accepted.links.retain(|l| l.peer_addr() != addr);
    if accepted.links.len() < waiting {
        // Its link was never accepted: nobody will read what it queued.
        shared.stats.rx_evicted.add(queued as u64);
    }
    if let Some(q) = q {
        q.end(LinkError::PeerGone);
    }
    true
}

// r[impl udp.endpoint.limit]
// r[impl udp.endpoint.validation]
/// Hand one datagram to its peer's queue, making the peer if it is new
/// (`reply` is scratch space for the admission gate's answer).
fn dispatch(
    shared: &Arc<Shared>,
    guard: &Arc<TaskGuard>,
    msg: Backing,
    source: SocketAddr,
    reply: &mut Vec<u8>,
) {
    let stats = &shared.stats;
    let cfg = &shared.config;
    let q = {
        let mut peers = lock(&shared.peers);
        match peers.map.get(&source) {
            Some(q) => {
                if !q.is_validated() {
                    stats.unvalidated_rx_bytes.add(msg.len() as u64);
                }
                q.clone()
            }
            None => {
                stats.unvalidated_rx_bytes.add(msg.len() as u64);
                if !peers.rate.allow(source.ip(), Instant::now()) {
                    stats.rx_rate_limited.add(1);
                    return;
                }
                let mut validated = false;
                if let Some(gate) = &shared.gate {
                    let demand = cfg.retry_above.is_some_and(|n| peers.unvalidated >= n);
                    reply.clear();
                    match gate.admit(source, &msg, demand, reply) {
                        Admission::Admit => {}
                        Admission::AdmitValidated => validated = true,
                        Admission::Reply => {
                            let within = cfg.amplification_limit.is_none_or(|f| {
                                reply.len() as u64 <= msg.len() as u64 * u64::from(f)
                            });
                            if within && shared.socket.try_send_to(reply, source).is_ok() {
                                stats.retries_sent.add(1);
                                stats.unvalidated_tx_bytes.add(reply.len() as u64);
                                stats.tx_datagrams.add(1);
                                stats.tx_bytes.add(reply.len() as u64);
                            } else {
                                stats.rx_gate_dropped.add(1);
                            }
                            return;
                        }
                        Admission::Drop => {
                            stats.rx_gate_dropped.add(1);
                            return;
                        }
                    }
                }
                let mut accepted = lock(&shared.accepted);
                if !accepted.open {
                    stats.rx_peer_refused.add(1);
                    return;
                }
                // Unvalidated sources never take the slots of validated
                // peers; the oldest unvalidated one makes room for a new one.
                let room = if validated {
                    peers.validated < cfg.max_peers
                } else {
                    peers.unvalidated < cfg.max_unvalidated
                        || evict_oldest(shared, &mut peers, &mut accepted)
                };
                if room && accepted.links.len() >= cfg.accept_queue {
                    // A full accept queue: make room by evicting the
                    // oldest unvalidated peer if one waits there.
                    let front_unvalidated = accepted.links.front().is_some_and(|l| {
                        peers
                            .map
                            .get(&l.peer_addr())
                            .is_some_and(|q| !q.is_validated())
                    });
                    if front_unvalidated && let Some(l) = accepted.links.pop_front() {
                        stats.unvalidated_evicted.add(1);
                        if let Some(q) = peers.remove(&l.peer_addr()) {
                            stats.rx_evicted.add(q.queued() as u64);
                            q.end(LinkError::PeerGone);
                        }
                    }
                }
                if !room || accepted.links.len() >= cfg.accept_queue {
                    stats.rx_peer_refused.add(1);
                    return;
                }
                let seq = peers.next_seq;
                peers.next_seq += 1;
                let q = PeerQueue::new(cfg.peer_queue, cfg.unvalidated_queue, validated, seq);
                peers.map.insert(source, q.clone());
                if validated {
                    peers.validated += 1;
                    stats.peers_admitted_validated.add(1);
                } else {
                    peers.unvalidated += 1;
                    peers.order.push_back((seq, source));
                    peers.compact();
                }
                // Queue (and count) the first datagram before the link can
                // be accepted, so that its bytes are in the budget.
                count_offer(stats, q.offer(msg));
                accepted
                    .links
                    .push_back(make_link(shared, guard, source, q));
                drop(accepted);
                shared.accept_waker.wake();
                return;
            }
        }
    };
    count_offer(stats, q.offer(msg));
}

fn count_offer(stats: &Counters, o: Offered) {
    match o {
        Offered::Queued => {}
        Offered::ReceiverGone => stats.rx_peer_gone.add(1),
        Offered::QueueFull => stats.rx_peer_queue_full.add(1),
    }
}

// r[impl udp.endpoint.idle]
// r[impl udp.endpoint.closed]
/// Forget peers that sent nothing for the idle timeout (counted), and
/// peers whose link's receiving half was dropped: their slot is free and a
/// new datagram from their address makes a new link.
fn sweep(shared: &Shared, idle: Option<Duration>) {
    let now = Instant::now();
    let mut peers = lock(&shared.peers);
    let done: Vec<(SocketAddr, bool)> = peers
        .map
        .iter()
        .filter_map(|(a, q)| {
            if q.receiver_gone() {
                Some((*a, false))
            } else if idle.is_some_and(|d| q.idle_for(d, now)) {
                Some((*a, true))
            } else {
                None
            }
        })
        .collect();
    for (a, expired) in done {
        if let Some(q) = peers.remove(&a)
            && expired
        {
            shared.stats.peers_expired.add(1);
            q.end(LinkError::PeerGone);
        }
    }
    peers.compact();
}

/// The endpoint's task: receive, demultiplex, expire idle peers; stop when
/// the last handle is gone.
async fn run(shared: Arc<Shared>, guard: Weak<TaskGuard>, mut receiver: Receiver) {
    let idle = shared.config.idle_timeout;
    // The sweep also frees the slots of closed links: it runs at least
    // once a second, idle timeout or not.
    let tick = idle.map_or(Duration::from_secs(1), |d| {
        (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    });
    let mut reply = Vec::new();
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
                    dispatch(&shared, &guard, msg, source, &mut reply);
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
            _ = interval.tick() => sweep(&shared, idle),
        }
    };
    for (_, q) in lock(&shared.peers).map.drain() {
        q.end(end.clone());
    }
    let pending = std::mem::take(&mut lock(&shared.accepted).links);
    drop(pending);
}
