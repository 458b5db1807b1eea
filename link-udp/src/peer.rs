//! `PeerQueue`: the datagrams an endpoint's task has demultiplexed for one
//! peer, waiting for that peer's link to `recv` them.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use link_types::{Backing, LinkError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct PeerState {
    msgs: VecDeque<Backing>,
    /// Why the peer ended (idle timeout, endpoint shut down), once it did.
    gone: Option<LinkError>,
    receiver_alive: bool,
    last_seen: Instant,
}

/// What became of a datagram offered to a peer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued for the peer's link.
    Queued,
    /// Dropped: the queue already held its capacity.
    QueueFull,
    /// Dropped: the peer's receiving half is gone.
    ReceiverGone,
}

/// The datagrams waiting for one peer's link.
pub(crate) struct PeerQueue {
    state: Mutex<PeerState>,
    waker: AtomicWaker,
    capacity: usize,
    /// The queue's bound while the peer is not validated.
    unvalidated_capacity: usize,
    /// Whether the peer's address is validated (`udp.endpoint.validation`).
    validated: AtomicBool,
    /// Payload bytes received from the peer while it was not validated.
    bytes_in: AtomicU64,
    /// Payload bytes sent to the peer while it was not validated.
    bytes_out: AtomicU64,
    /// Order of creation among the endpoint's peers (eviction picks the
    /// oldest unvalidated one).
    pub(crate) seq: u64,
}

impl PeerQueue {
    /// An empty queue holding at most `capacity` datagrams, last seen now.
    pub(crate) fn new(
        capacity: usize,
        unvalidated_capacity: usize,
        validated: bool,
        seq: u64,
    ) -> Arc<Self> {
        Arc::new(PeerQueue {
            state: Mutex::new(PeerState {
                msgs: VecDeque::new(),
                gone: None,
                receiver_alive: true,
                last_seen: Instant::now(),
            }),
            waker: AtomicWaker::new(),
            capacity,
            unvalidated_capacity,
            validated: AtomicBool::new(validated),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            seq,
        })
    }

    /// Whether the peer's address is validated.
    pub(crate) fn is_validated(&self) -> bool {
        self.validated.load(Relaxed)
    }

    /// Mark the address validated; false if it already was.
    pub(crate) fn set_validated(&self) -> bool {
        !self.validated.swap(true, Relaxed)
    }

    // r[impl udp.endpoint.amplification]
    /// May `len` more bytes go to this peer under an amplification limit
    /// of `factor` (bytes out at most `factor` × bytes in until the address
    /// is validated)? Counts them out if so.
    pub(crate) fn may_send(&self, len: usize, factor: u64) -> bool {
        if self.is_validated() {
            return true;
        }
        let budget = self.bytes_in.load(Relaxed).saturating_mul(factor);
        let out = self.bytes_out.load(Relaxed);
        if out + len as u64 > budget {
            return false;
        }
        self.bytes_out.fetch_add(len as u64, Relaxed);
        true
    }

    /// The next datagram, or why the peer ended once the queue is empty.
    pub(crate) async fn recv(&self) -> Result<Backing, LinkError> {
        poll_fn(|cx| {
            let mut st = lock(&self.state);
            if let Some(m) = st.msgs.pop_front() {
                return Poll::Ready(Ok(m));
            }
            if let Some(e) = &st.gone {
                return Poll::Ready(Err(e.clone()));
            }
            self.waker.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// A datagram arrived from the peer: note the time and queue it, or say
    /// why it was dropped (the caller counts it).
    pub(crate) fn offer(&self, msg: Backing) -> Offered {
        if !self.is_validated() {
            self.bytes_in.fetch_add(msg.len() as u64, Relaxed);
        }
        let mut st = lock(&self.state);
        st.last_seen = Instant::now();
        if !st.receiver_alive {
            Offered::ReceiverGone
        } else if st.msgs.len()
            >= if self.is_validated() {
                self.capacity
            } else {
                self.unvalidated_capacity
            }
        {
            Offered::QueueFull
        } else {
            st.msgs.push_back(msg);
            drop(st);
            self.waker.wake();
            Offered::Queued
        }
    }

    /// Whether the peer sent nothing for `idle` as of `now`.
    pub(crate) fn idle_for(&self, idle: Duration, now: Instant) -> bool {
        now.duration_since(lock(&self.state).last_seen) >= idle
    }

    /// Whether the peer's receiving half was dropped.
    pub(crate) fn receiver_gone(&self) -> bool {
        !lock(&self.state).receiver_alive
    }

    /// Datagrams waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        lock(&self.state).msgs.len()
    }

    /// The peer ended: `recv` returns `why` once the queue is drained.
    pub(crate) fn end(&self, why: LinkError) {
        lock(&self.state).gone.get_or_insert(why);
        self.waker.wake();
    }

    /// The peer's receiving half was dropped: discard what is queued and
    /// take nothing more.
    pub(crate) fn receiver_dropped(&self) {
        let mut st = lock(&self.state);
        st.receiver_alive = false;
        st.msgs.clear();
    }
}
