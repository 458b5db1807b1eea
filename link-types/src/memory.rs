//! The bounded in-memory link pair: the reference implementation of every
//! `link.*` rule.
//!
//! Each direction is a bounded queue of at most `capacity` messages, counting
//! granted permits. Message buffers are pooled: a slot reuses a buffer that a
//! dropped [`Backing`] gave back, so the steady state allocates nothing per
//! message.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::{Backing, Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit, Recycle, WriteSlot};

/// Sizes of an in-memory link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// How many messages one direction holds: committed and not yet
    /// received, plus granted permits. At least 1.
    pub capacity: usize,
    /// The largest message `alloc` accepts.
    pub max_payload: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: 64,
            max_payload: 1 << 20,
        }
    }
}

/// Make a connected pair of in-memory links.
///
/// # Panics
/// If `config.capacity` is 0 (a link that can never send is a caller bug).
pub fn memory_pair(config: MemoryConfig) -> (MemoryLink, MemoryLink) {
    assert!(
        config.capacity > 0,
        "memory link capacity must be at least 1"
    );
    let ab = Channel::new(config);
    let ba = Channel::new(config);
    let a = MemoryLink {
        tx: MemoryTx::new(ab.clone()),
        rx: MemoryRx::new(ba.clone()),
    };
    let b = MemoryLink {
        tx: MemoryTx::new(ba),
        rx: MemoryRx::new(ab),
    };
    (a, b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderState {
    Open,
    Closed,
    Dropped,
}

// r[impl link.order.reliable]
/// The shared part of one direction: a FIFO of committed messages, so
/// delivery is exactly once and in commit order.
struct Queue {
    msgs: VecDeque<Vec<u8>>,
    sender: SenderState,
    receiver_alive: bool,
}

/// Buffers given back by dropped `Backing`s and discarded slots.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Recycle for Pool {
    fn recycle(&self, buf: Vec<u8>) {
        let mut free = lock(&self.free);
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// One direction of a pair.
///
/// Capacity is an atomic count of messages in flight: granted permits plus
/// committed messages the receiver has not handed out yet. The sender
/// increments it in `reserve`, the receiver decrements it per message handed
/// out, so neither takes a lock for capacity. The receiver moves the whole
/// queue out under one lock and hands messages out from its own batch.
struct Channel {
    queue: Mutex<Queue>,
    in_flight: AtomicUsize,
    receiver_gone: AtomicBool,
    rx_waker: AtomicWaker,
    tx_waker: AtomicWaker,
    pool: Arc<Pool>,
    capacity: usize,
    caps: LinkCaps,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state inconsistent
    // (every critical section is a few field updates), so poisoning is
    // ignored rather than turned into a second panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Channel {
    fn new(config: MemoryConfig) -> Arc<Channel> {
        Arc::new(Channel {
            queue: Mutex::new(Queue {
                msgs: VecDeque::with_capacity(config.capacity),
                sender: SenderState::Open,
                receiver_alive: true,
            }),
            in_flight: AtomicUsize::new(0),
            receiver_gone: AtomicBool::new(false),
            rx_waker: AtomicWaker::new(),
            tx_waker: AtomicWaker::new(),
            pool: Arc::new(Pool {
                free: Mutex::new(Vec::new()),
                keep: config.capacity + 8,
            }),
            capacity: config.capacity,
            caps: LinkCaps::reliable_ordered(config.max_payload),
        })
    }

    /// One message left flight (handed out, discarded, or a permit dropped).
    fn release_one(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if before == self.capacity {
            // The sender may be waiting for exactly this.
            self.tx_waker.wake();
        }
    }

    fn set_sender(&self, state: SenderState) {
        let mut q = lock(&self.queue);
        if q.sender == SenderState::Open {
            q.sender = state;
        }
        drop(q);
        self.rx_waker.wake();
    }
}

/// One end of an in-memory link pair (see [`memory_pair`]).
pub struct MemoryLink {
    tx: MemoryTx,
    rx: MemoryRx,
}

impl Link for MemoryLink {
    type Tx = MemoryTx;
    type Rx = MemoryRx;

    // r[impl link.caps]
    fn caps(&self) -> LinkCaps {
        self.tx.caps()
    }

    // r[impl link.split]
    fn split(self) -> (MemoryTx, MemoryRx) {
        (self.tx, self.rx)
    }
}

/// The sending half of an in-memory link.
pub struct MemoryTx {
    chan: Arc<Channel>,
    /// Buffers taken from the pool in one go, so the pool's lock is taken
    /// once per batch rather than once per message.
    spare: Vec<Vec<u8>>,
    closed: bool,
}

impl MemoryTx {
    fn new(chan: Arc<Channel>) -> Self {
        MemoryTx {
            chan,
            spare: Vec::new(),
            closed: false,
        }
    }

    // r[impl link.reserve.backpressure]
    // r[impl link.reserve.cancel]
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if self.closed {
            return Poll::Ready(Err(LinkError::Closed));
        }
        let chan = &*self.chan;
        let mut registered = false;
        loop {
            if chan.receiver_gone.load(Ordering::Acquire) {
                return Poll::Ready(Err(LinkError::PeerGone));
            }
            let cur = chan.in_flight.load(Ordering::Acquire);
            if cur < chan.capacity {
                // The grant and the permit's creation happen in the same
                // poll, so a dropped future never holds capacity.
                if chan
                    .in_flight
                    .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if registered {
                return Poll::Pending;
            }
            // Register, then look again: a release between the first look
            // and the registration is not missed.
            chan.tx_waker.register(cx.waker());
            registered = true;
        }
    }

    fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        if self.spare.is_empty() {
            std::mem::swap(&mut self.spare, &mut *lock(&self.chan.pool.free));
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        // Reuse what the buffer holds; only bytes beyond its old length are
        // initialised afresh.
        buf.resize(len, 0);
        buf
    }
}

impl LinkTx for MemoryTx {
    type Permit<'a> = MemoryPermit<'a>;

    fn caps(&self) -> LinkCaps {
        self.chan.caps
    }

    async fn reserve(&mut self) -> Result<MemoryPermit<'_>, LinkError> {
        poll_fn(|cx| self.poll_reserve(cx)).await?;
        Ok(MemoryPermit {
            tx: self,
            live: true,
        })
    }

    // r[impl link.flush]
    async fn flush(&mut self) -> Result<(), LinkError> {
        // Messages are visible to the receiver at commit: nothing queues here.
        Ok(())
    }

    // r[impl link.close.eof]
    // r[impl link.close.send-after]
    async fn close(&mut self) -> Result<(), LinkError> {
        if !self.closed {
            self.closed = true;
            self.chan.set_sender(SenderState::Closed);
        }
        Ok(())
    }
}

// r[impl link.drop.abrupt]
impl Drop for MemoryTx {
    fn drop(&mut self) {
        self.chan.set_sender(SenderState::Dropped);
    }
}

// r[impl link.reserve.permit-holds]
// r[impl link.reserve.drop-releases]
/// Capacity for one message on an in-memory link.
pub struct MemoryPermit<'a> {
    tx: &'a mut MemoryTx,
    live: bool,
}

impl<'a> LinkTxPermit for MemoryPermit<'a> {
    type Slot = MemorySlot<'a>;

    // r[impl link.alloc.limit]
    // r[impl link.slot.len]
    // r[impl link.message.empty]
    // r[impl link.message.max]
    fn alloc(mut self, len: usize) -> Result<MemorySlot<'a>, LinkError> {
        let max = self.tx.chan.caps.max_payload;
        if len > max {
            // `self` drops here and releases the capacity.
            return Err(LinkError::TooLarge { len, max });
        }
        self.live = false;
        let buf = self.tx.take_buffer(len);
        Ok(MemorySlot {
            chan: self.tx.chan.clone(),
            buf: Some(buf),
            _tx: std::marker::PhantomData,
        })
    }
}

impl Drop for MemoryPermit<'_> {
    fn drop(&mut self) {
        if self.live {
            self.tx.chan.release_one();
        }
    }
}

/// A message being written on an in-memory link.
pub struct MemorySlot<'a> {
    chan: Arc<Channel>,
    buf: Option<Vec<u8>>,
    _tx: std::marker::PhantomData<&'a mut MemoryTx>,
}

impl WriteSlot for MemorySlot<'_> {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }

    // r[impl link.slot.commit]
    // r[impl link.message.boundaries]
    fn commit(mut self) -> Result<(), LinkError> {
        let buf = self.buf.take().unwrap_or_default();
        let mut q = lock(&self.chan.queue);
        if !q.receiver_alive {
            drop(q);
            self.chan.pool.recycle(buf);
            self.chan.release_one();
            return Err(LinkError::PeerGone);
        }
        q.msgs.push_back(buf);
        drop(q);
        self.chan.rx_waker.wake();
        Ok(())
    }
}

// r[impl link.slot.discard]
impl Drop for MemorySlot<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.chan.pool.recycle(buf);
            self.chan.release_one();
        }
    }
}

/// The receiving half of an in-memory link.
pub struct MemoryRx {
    chan: Arc<Channel>,
    pool: Arc<dyn Recycle>,
    /// Messages moved out of the shared queue, still counted in flight.
    batch: VecDeque<Vec<u8>>,
    /// Set once the stream ended: `Ok(())` for a graceful close.
    end: Option<Result<(), LinkError>>,
}

impl MemoryRx {
    fn new(chan: Arc<Channel>) -> Self {
        let pool: Arc<dyn Recycle> = chan.pool.clone();
        let batch = VecDeque::with_capacity(chan.capacity);
        MemoryRx {
            chan,
            pool,
            batch,
            end: None,
        }
    }

    // r[impl link.recv.cancel]
    // r[impl link.close.sticky]
    // r[impl link.error.sticky]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Backing>, LinkError>> {
        if let Some(end) = &self.end {
            return Poll::Ready(end.clone().map(|()| None));
        }
        if self.batch.is_empty() {
            let mut q = lock(&self.chan.queue);
            if q.msgs.is_empty() {
                let end = match q.sender {
                    SenderState::Open => {
                        // Registered under the lock: a commit after this
                        // sees the waker, one before it left a message.
                        self.chan.rx_waker.register(cx.waker());
                        return Poll::Pending;
                    }
                    SenderState::Closed => Ok(()),
                    SenderState::Dropped => Err(LinkError::PeerGone),
                };
                drop(q);
                self.end = Some(end.clone());
                return Poll::Ready(end.map(|()| None));
            }
            std::mem::swap(&mut self.batch, &mut q.msgs);
        }
        let buf = self.batch.pop_front().unwrap_or_default();
        self.chan.release_one();
        Poll::Ready(Ok(Some(Backing::pooled(buf, self.pool.clone()))))
    }
}

impl LinkRx for MemoryRx {
    fn caps(&self) -> LinkCaps {
        self.chan.caps
    }

    async fn recv(&mut self) -> Result<Option<Backing>, LinkError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

// r[impl link.rx.drop]
impl Drop for MemoryRx {
    fn drop(&mut self) {
        let mut q = lock(&self.chan.queue);
        q.receiver_alive = false;
        let dropped = std::mem::take(&mut q.msgs);
        drop(q);
        self.chan.receiver_gone.store(true, Ordering::Release);
        drop(dropped);
        self.chan.tx_waker.wake();
    }
}
