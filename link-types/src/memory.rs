//! The bounded in-memory link pair: the reference implementation of every
//! `link.*` rule.
//!
//! Each direction is a bounded queue of at most `capacity` messages, counting
//! granted permits. Message buffers are pooled: a slot reuses a buffer that a
//! dropped [`Backing`] gave back, so the steady state allocates nothing per
//! message.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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
/// One direction: a FIFO of committed messages, so delivery is exactly once
/// and in commit order.
struct State {
    queue: VecDeque<Vec<u8>>,
    reserved: usize,
    sender: SenderState,
    receiver_alive: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
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

impl Pool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = lock(&self.free).pop().unwrap_or_default();
        // Reuse what the buffer holds; only bytes beyond its old length are
        // initialised afresh.
        buf.resize(len, 0);
        buf
    }
}

struct Channel {
    state: Mutex<State>,
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
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(config.capacity),
                reserved: 0,
                sender: SenderState::Open,
                receiver_alive: true,
                rx_waker: None,
                tx_waker: None,
            }),
            pool: Arc::new(Pool {
                free: Mutex::new(Vec::new()),
                keep: config.capacity + 8,
            }),
            capacity: config.capacity,
            caps: LinkCaps::reliable_ordered(config.max_payload),
        })
    }

    fn release_reservation(&self) {
        let mut st = lock(&self.state);
        st.reserved -= 1;
        let waker = st.tx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
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
    closed: bool,
}

impl MemoryTx {
    fn new(chan: Arc<Channel>) -> Self {
        MemoryTx {
            chan,
            closed: false,
        }
    }

    // r[impl link.reserve.backpressure]
    // r[impl link.reserve.cancel]
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if self.closed {
            return Poll::Ready(Err(LinkError::Closed));
        }
        let mut st = lock(&self.chan.state);
        if !st.receiver_alive {
            return Poll::Ready(Err(LinkError::PeerGone));
        }
        if st.queue.len() + st.reserved < self.chan.capacity {
            // The grant and the permit's creation happen in the same poll, so
            // a dropped future never holds capacity.
            st.reserved += 1;
            Poll::Ready(Ok(()))
        } else {
            match &mut st.tx_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
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
            let mut st = lock(&self.chan.state);
            if st.sender == SenderState::Open {
                st.sender = SenderState::Closed;
            }
            let waker = st.rx_waker.take();
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
        }
        Ok(())
    }
}

// r[impl link.drop.abrupt]
impl Drop for MemoryTx {
    fn drop(&mut self) {
        let mut st = lock(&self.chan.state);
        if st.sender == SenderState::Open {
            st.sender = SenderState::Dropped;
        }
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
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
        let chan = self.tx.chan.clone();
        let buf = chan.pool.take(len);
        Ok(MemorySlot {
            chan,
            buf: Some(buf),
            _tx: std::marker::PhantomData,
        })
    }
}

impl Drop for MemoryPermit<'_> {
    fn drop(&mut self) {
        if self.live {
            self.tx.chan.release_reservation();
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
        let mut st = lock(&self.chan.state);
        st.reserved -= 1;
        if !st.receiver_alive {
            drop(st);
            self.chan.pool.recycle(buf);
            return Err(LinkError::PeerGone);
        }
        st.queue.push_back(buf);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

// r[impl link.slot.discard]
impl Drop for MemorySlot<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.chan.pool.recycle(buf);
            self.chan.release_reservation();
        }
    }
}

/// The receiving half of an in-memory link.
pub struct MemoryRx {
    chan: Arc<Channel>,
    pool: Arc<dyn Recycle>,
    /// Set once the stream ended: `Ok(())` for a graceful close.
    end: Option<Result<(), LinkError>>,
}

impl MemoryRx {
    fn new(chan: Arc<Channel>) -> Self {
        let pool: Arc<dyn Recycle> = chan.pool.clone();
        MemoryRx {
            chan,
            pool,
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
        let mut st = lock(&self.chan.state);
        if let Some(buf) = st.queue.pop_front() {
            let waker = st.tx_waker.take();
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
            return Poll::Ready(Ok(Some(Backing::pooled(buf, self.pool.clone()))));
        }
        let end = match st.sender {
            SenderState::Open => {
                match &mut st.rx_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            SenderState::Closed => Ok(()),
            SenderState::Dropped => Err(LinkError::PeerGone),
        };
        drop(st);
        self.end = Some(end.clone());
        Poll::Ready(end.map(|()| None))
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
        let mut st = lock(&self.chan.state);
        st.receiver_alive = false;
        let dropped = std::mem::take(&mut st.queue);
        let waker = st.tx_waker.take();
        drop(st);
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
    }
}
