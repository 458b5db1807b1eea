//! The shared-memory link: a ring of descriptors per direction, slots in
//! two size classes, leases for zero-copy receive, eventfd wake-ups.

use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use link_types::{
    Backing, LeaseOwner, LeaseToken, Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit,
    MaybeSendFuture, WriteSlot,
};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

use crate::region::{
    Class, Geometry, INLINE, INLINE_MAX, Layout, READER_SLEEPING, READER_STATE, Region, TAIL,
    WRITER_SLEEPING, WRITER_STATE,
};
use crate::stats::{Counters, ShmStatsHandle};
use crate::sys::{self, Mapping};
use crate::{ShmConfig, ShmError};

/// Writer states (direction's `WRITER_STATE`).
const OPEN: u32 = 0;
const CLOSED: u32 = 1;
const GONE: u32 = 2;

/// What one end shares between its halves and its leases.
struct Shared {
    region: Arc<Region>,
    counters: Arc<Counters>,
    caps: LinkCaps,
    spin: Duration,
    /// Set when the peer process's socket closed (it exited or was killed).
    peer_dead: AtomicBool,
    /// The task watching the peer's socket; stopped with this end.
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.get_mut().ok().and_then(|w| w.take()) {
            w.abort();
        }
    }
}

/// A new segment for `config`, mapped and initialised, with its memory
/// file (to hand to a peer) and a fresh set of wake-up descriptors.
pub(crate) fn create_segment(config: &ShmConfig) -> Result<(Arc<Region>, OwnedFd, Fds), ShmError> {
    let layout = Layout::new(geometry(config)).map_err(ShmError::InvalidConfig)?;
    let (map, segment) =
        Mapping::create(layout.total).map_err(crate::error::io("create segment"))?;
    let mk = || {
        sys::eventfd()
            .map(Arc::new)
            .map_err(crate::error::io("eventfd"))
    };
    let fds = Fds {
        data: [mk()?, mk()?],
        space: [mk()?, mk()?],
    };
    Ok((Region::init(map, layout), segment, fds))
}

/// The four wake-up descriptors of a link, by direction.
pub(crate) struct Fds {
    pub data: [Arc<OwnedFd>; 2],
    pub space: [Arc<OwnedFd>; 2],
}

// r[impl shm.death]
/// Wait for the peer's end of the socket to close (its process exited,
/// crashed or was killed, or it dropped its whole link), then mark the peer
/// dead and wake this end's waiting halves.
async fn watch(stream: UnixStream, shared: Weak<Shared>, wake: [Arc<OwnedFd>; 2]) {
    let mut buf = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            // Nothing is sent after the handoff; ignore stray bytes.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
    }
    if let Some(s) = shared.upgrade() {
        s.peer_dead.store(true, Ordering::SeqCst);
        tracing::debug!("shared memory: peer process gone");
    }
    for fd in wake {
        sys::eventfd_signal(&fd);
    }
}

/// A shared-memory link end.
pub struct ShmLink {
    tx: ShmTx,
    rx: ShmRx,
}

impl std::fmt::Debug for ShmLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmLink")
            .field("caps", &self.tx.shared.caps)
            .finish_non_exhaustive()
    }
}

pub(crate) fn geometry(c: &ShmConfig) -> Geometry {
    Geometry {
        small_size: c.small_size,
        small_count: c.small_count,
        large_size: c.large_size,
        large_count: c.large_count,
    }
}

impl ShmLink {
    /// Two connected ends over one new segment, in this process (the
    /// in-process form; both ends use the same mapping).
    pub fn pair(config: &ShmConfig) -> Result<(ShmLink, ShmLink), ShmError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ShmError::NoRuntime);
        }
        let (region, _segment, fds) = create_segment(config)?;
        let a = Self::end(region.clone(), &fds, 0, config, None)?;
        let b = Self::end(region, &fds, 1, config, None)?;
        Ok((a, b))
    }

    /// The end that sends on direction `tx_dir` and receives on the other.
    pub(crate) fn end(
        region: Arc<Region>,
        fds: &Fds,
        tx_dir: usize,
        config: &ShmConfig,
        peer: Option<UnixStream>,
    ) -> Result<ShmLink, ShmError> {
        let rx_dir = 1 - tx_dir;
        let shared = Arc::new(Shared {
            caps: LinkCaps {
                zero_copy_recv: true,
                ..LinkCaps::reliable_ordered(region.layout.geo.large_size)
            },
            region,
            counters: Arc::new(Counters::default()),
            spin: config.spin,
            peer_dead: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        if let Some(stream) = peer {
            let wake = [fds.data[rx_dir].clone(), fds.space[tx_dir].clone()];
            let task = tokio::spawn(watch(stream, Arc::downgrade(&shared), wake));
            *shared.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        }
        let space_wait = sys::async_eventfd(fds.space[tx_dir].clone())
            .map_err(crate::error::io("register eventfd"))?;
        let data_wait = sys::async_eventfd(fds.data[rx_dir].clone())
            .map_err(crate::error::io("register eventfd"))?;
        let leases = Arc::new(Leases {
            shared: shared.clone(),
            dir: rx_dir,
            space_signal: fds.space[rx_dir].clone(),
        });
        Ok(ShmLink {
            tx: ShmTx {
                shared: shared.clone(),
                dir: tx_dir,
                head: 0,
                tail_seen: 0,
                space_wait,
                data_signal: fds.data[tx_dir].clone(),
                closed: false,
                error: None,
            },
            rx: ShmRx {
                shared,
                dir: rx_dir,
                tail: 0,
                data_wait,
                leases,
                end: None,
            },
        })
    }

    /// The link's counters.
    pub fn stats(&self) -> ShmStatsHandle {
        ShmStatsHandle(self.tx.shared.counters.clone())
    }
}

impl Link for ShmLink {
    type Tx = ShmTx;
    type Rx = ShmRx;

    fn caps(&self) -> LinkCaps {
        self.tx.shared.caps
    }

    fn split(self) -> (ShmTx, ShmRx) {
        (self.tx, self.rx)
    }
}

/// The spin before sleeping: looks at the clock only every 64 turns.
struct Spin {
    until: Option<Instant>,
    budget: Duration,
    turns: u32,
}

impl Spin {
    fn new(budget: Duration) -> Spin {
        Spin {
            until: None,
            budget,
            turns: 0,
        }
    }

    /// Whether to spin once more (and do so).
    #[inline]
    fn again(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        self.turns = self.turns.wrapping_add(1);
        if self.turns % 64 == 1 {
            let now = Instant::now();
            match self.until {
                None => self.until = Some(now + self.budget),
                Some(t) if now >= t => return false,
                Some(_) => {}
            }
        }
        std::hint::spin_loop();
        true
    }
}

fn corrupt(c: &Counters, what: String) -> LinkError {
    Counters::add(&c.validation_failures, 1);
    tracing::warn!("shared memory: {what}");
    LinkError::protocol(format!("shared memory corrupted by the peer: {what}"))
}

/// The sending half of a [`ShmLink`].
pub struct ShmTx {
    shared: Arc<Shared>,
    dir: usize,
    /// Messages published so far (the shared head is written only here).
    head: u32,
    /// The reader's tail as last read.
    tail_seen: u32,
    space_wait: AsyncFd<Arc<OwnedFd>>,
    data_signal: Arc<OwnedFd>,
    closed: bool,
    error: Option<LinkError>,
}

impl std::fmt::Debug for ShmTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTx")
            .field("dir", &self.dir)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ShmTx {
    /// Take the lowest free slot of `class`, marking it in use. Reusing the
    /// lowest one first keeps a steady stream cycling through as few slots
    /// (and as little cache) as it can: measured on 8 MiB frames, a
    /// rotating search that touched every slot in turn was slower.
    fn take_slot(&mut self, class: Class) -> Option<usize> {
        let r = &self.shared.region;
        (0..r.class_count(class)).find(|&i| {
            let st = r.slot_state(self.dir, class, i);
            if st.load(Ordering::Acquire) == 0 {
                st.store(1, Ordering::Relaxed);
                true
            } else {
                false
            }
        })
    }

    fn free_slot(&self, class: Class, index: usize) {
        self.shared
            .region
            .slot_state(self.dir, class, index)
            .store(0, Ordering::Release);
    }

    // r[impl shm.backpressure]
    /// Ready with a large slot when the ring has room and a large slot is
    /// free: the permit then holds space for a message of the maximum size.
    fn try_reserve(&mut self) -> Result<Option<usize>, LinkError> {
        if self.closed {
            return Err(LinkError::Closed);
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = &self.shared.region;
        if self.shared.peer_dead.load(Ordering::SeqCst) {
            return Err(self.fail(LinkError::PeerGone));
        }
        match r.control(self.dir, READER_STATE).load(Ordering::Acquire) {
            OPEN => {}
            GONE => return Err(self.fail(LinkError::PeerGone)),
            v => {
                let e = corrupt(&self.shared.counters, format!("reader state {v}"));
                return Err(self.fail(e));
            }
        }
        // r[impl shm.validate]
        // The reader's tail is read again only when the ring looks full, so
        // a busy link does not pull its cache line across on every message.
        if self.head.wrapping_sub(self.tail_seen) as usize >= r.layout.ring_len {
            let tail = r.control(self.dir, TAIL).load(Ordering::Acquire);
            let used = self.head.wrapping_sub(tail) as usize;
            if used > r.layout.ring_len {
                let e = corrupt(
                    &self.shared.counters,
                    format!("ring tail {tail} behind head {}", self.head),
                );
                return Err(self.fail(e));
            }
            self.tail_seen = tail;
            if used == r.layout.ring_len {
                return Ok(None);
            }
        }
        Ok(self.take_slot(Class::Large))
    }

    fn fail(&mut self, e: LinkError) -> LinkError {
        self.error = Some(e.clone());
        e
    }

    fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
        waited: &mut bool,
    ) -> Poll<Result<usize, LinkError>> {
        let mut spin = Spin::new(self.shared.spin);
        loop {
            if let Some(i) = self.try_reserve()? {
                return Poll::Ready(Ok(i));
            }
            if !*waited {
                *waited = true;
                Counters::bump(&self.shared.counters.reserve_waits, 1);
            }
            // r[impl shm.wake]
            if spin.again() {
                continue;
            }
            let region = self.shared.region.clone();
            let sleeping = region.control(self.dir, WRITER_SLEEPING);
            sleeping.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let Some(i) = self
                .try_reserve()
                .inspect_err(|_| sleeping.store(0, Ordering::Relaxed))?
            {
                sleeping.store(0, Ordering::Relaxed);
                return Poll::Ready(Ok(i));
            }
            match self.space_wait.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(mut guard)) => {
                    let _ = sys::eventfd_drain(guard.get_inner());
                    guard.clear_ready();
                    sleeping.store(0, Ordering::Relaxed);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(LinkError::Io(Arc::new(e)))),
            }
        }
    }

    fn publish(&mut self, place: Place, len: usize) {
        let r = &self.shared.region;
        let pos = self.head as usize % r.layout.ring_len;
        let e = r.ring_entry(self.dir, pos);
        let c = &self.shared.counters;
        let word = match place {
            Place::Inline => {
                Counters::bump(&c.tx_inline, 1);
                INLINE
            }
            Place::Slot(class, index) => {
                Counters::bump(
                    if class == Class::Small {
                        &c.tx_small
                    } else {
                        &c.tx_large
                    },
                    1,
                );
                (class as u32) << 31 | index as u32
            }
        };
        e.class.store(word, Ordering::Relaxed);
        e.len.store(len as u32, Ordering::Relaxed);
        self.head = self.head.wrapping_add(1);
        // The sequence number publishes the entry (and the payload before it).
        e.seq.store(self.head, Ordering::Release);
        Counters::bump(&c.tx_messages, 1);
        Counters::bump(&c.tx_bytes, len as u64);
        self.wake_reader(false);
    }

    fn wake_reader(&self, always: bool) {
        let r = &self.shared.region;
        fence(Ordering::SeqCst);
        if always || r.control(self.dir, READER_SLEEPING).load(Ordering::Relaxed) != 0 {
            sys::eventfd_signal(&self.data_signal);
            Counters::add(&self.shared.counters.wakeups_sent, 1);
        }
    }

    fn set_state(&self, state: u32) {
        self.shared
            .region
            .control(self.dir, WRITER_STATE)
            .store(state, Ordering::Release);
        self.wake_reader(true);
    }

    /// The link's counters.
    pub fn stats(&self) -> ShmStatsHandle {
        ShmStatsHandle(self.shared.counters.clone())
    }
}

impl LinkTx for ShmTx {
    type Permit<'a> = ShmPermit<'a>;

    fn caps(&self) -> LinkCaps {
        self.shared.caps
    }

    // r[impl link.reserve.backpressure]
    // r[impl link.reserve.cancel]
    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<ShmPermit<'_>, LinkError>> {
        async move {
            let mut waited = false;
            let large = poll_fn(|cx| self.poll_reserve(cx, &mut waited)).await?;
            Ok(ShmPermit {
                held: Some((self, large)),
            })
        }
    }

    // r[impl link.flush]
    fn flush(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        // Messages are published at commit; nothing waits here.
        let r = match &self.error {
            Some(e) if !self.closed => Err(e.clone()),
            _ => Ok(()),
        };
        std::future::ready(r)
    }

    // r[impl link.close.send-after]
    // r[impl shm.close]
    fn close(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        if !self.closed {
            self.closed = true;
            self.set_state(CLOSED);
        }
        std::future::ready(Ok(()))
    }
}

// r[impl link.drop.abrupt]
impl Drop for ShmTx {
    fn drop(&mut self) {
        if !self.closed {
            self.set_state(GONE);
        }
    }
}

/// Permission to send one message; holds a large slot until `alloc`.
pub struct ShmPermit<'a> {
    held: Option<(&'a mut ShmTx, usize)>,
}

impl Drop for ShmPermit<'_> {
    // r[impl link.reserve.drop-releases]
    fn drop(&mut self) {
        if let Some((tx, i)) = self.held.take() {
            tx.free_slot(Class::Large, i);
        }
    }
}

impl<'a> LinkTxPermit for ShmPermit<'a> {
    type Slot = ShmSlot<'a>;

    // r[impl link.alloc.limit]
    // r[impl shm.classes]
    /// A message of up to 112 bytes is written into its ring entry itself;
    /// one that fits a small slot goes to one when one is free; either way
    /// the permit's large slot is given back at once. Otherwise it uses the
    /// large slot the permit holds. Never waits.
    fn alloc(mut self, len: usize) -> Result<ShmSlot<'a>, LinkError> {
        let (tx, large) = self
            .held
            .take()
            .expect("a permit holds a large slot until alloc");
        let max = tx.shared.caps.max_payload;
        if len > max {
            tx.free_slot(Class::Large, large);
            return Err(LinkError::TooLarge { len, max });
        }
        let place = if len <= INLINE_MAX {
            tx.free_slot(Class::Large, large);
            Place::Inline
        } else if len <= tx.shared.region.class_size(Class::Small)
            && let Some(i) = tx.take_slot(Class::Small)
        {
            tx.free_slot(Class::Large, large);
            Place::Slot(Class::Small, i)
        } else {
            Place::Slot(Class::Large, large)
        };
        Ok(ShmSlot {
            tx,
            place,
            len,
            committed: false,
        })
    }
}

/// Where a message's payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In its ring entry.
    Inline,
    /// In a slot of a class.
    Slot(Class, usize),
}

/// A message being written straight into shared memory.
pub struct ShmSlot<'a> {
    tx: &'a mut ShmTx,
    place: Place,
    len: usize,
    committed: bool,
}

impl WriteSlot for ShmSlot<'_> {
    // r[impl shm.zero-copy]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        let r = &self.tx.shared.region;
        let p = match self.place {
            Place::Inline => {
                let pos = self.tx.head as usize % r.layout.ring_len;
                r.ring_entry(self.tx.dir, pos).inline
            }
            Place::Slot(class, index) => r.payload(self.tx.dir, class, index, self.len),
        };
        // SAFETY: `payload` and `ring_entry` checked that the bytes lie inside
        // the mapping (`len <= INLINE_MAX` for an entry). They are ours: a
        // slot marked in use by this writer and not yet published, or the
        // next ring entry, which `reserve` saw the reader had passed. The
        // borrow of `self` keeps them exclusive here. A hostile peer writing
        // the same bytes can change what we send, not where we write.
        unsafe { std::slice::from_raw_parts_mut(p, self.len) }
    }

    // r[impl link.slot.commit]
    fn commit(mut self) -> Result<(), LinkError> {
        self.committed = true;
        self.tx.publish(self.place, self.len);
        Ok(())
    }
}

impl Drop for ShmSlot<'_> {
    // r[impl link.slot.discard]
    fn drop(&mut self) {
        if !self.committed
            && let Place::Slot(class, index) = self.place
        {
            self.tx.free_slot(class, index);
        }
    }
}

/// Gives received slots back when their `Backing`s are dropped.
struct Leases {
    shared: Arc<Shared>,
    dir: usize,
    space_signal: Arc<OwnedFd>,
}

fn token_parts(t: LeaseToken) -> (Class, usize, usize) {
    let class = if t.a >> 32 == 0 {
        Class::Small
    } else {
        Class::Large
    };
    (class, (t.a & 0xffff_ffff) as usize, t.b as usize)
}

impl LeaseOwner for Leases {
    fn bytes(&self, token: LeaseToken) -> &[u8] {
        let (class, index, len) = token_parts(token);
        let p = self.shared.region.payload(self.dir, class, index, len);
        // SAFETY: the token was made from a validated descriptor (index and
        // length within the class), `payload` re-checks the bounds, and the
        // mapping lives as long as `self`. The writer does not reuse the slot
        // until `release` marks it free.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    // r[impl link.backing.lifetime]
    fn release(&self, token: LeaseToken) {
        let (class, index, _) = token_parts(token);
        let r = &self.shared.region;
        r.slot_state(self.dir, class, index)
            .store(0, Ordering::Release);
        fence(Ordering::SeqCst);
        if r.control(self.dir, WRITER_SLEEPING).load(Ordering::Relaxed) != 0 {
            sys::eventfd_signal(&self.space_signal);
            Counters::add(&self.shared.counters.wakeups_sent, 1);
        }
    }
}

/// The receiving half of a [`ShmLink`].
pub struct ShmRx {
    shared: Arc<Shared>,
    dir: usize,
    /// Messages taken so far (the shared tail is written only here).
    tail: u32,
    data_wait: AsyncFd<Arc<OwnedFd>>,
    leases: Arc<Leases>,
    end: Option<Result<(), LinkError>>,
}

impl std::fmt::Debug for ShmRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmRx")
            .field("dir", &self.dir)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ShmRx {
    /// The link's counters.
    pub fn stats(&self) -> ShmStatsHandle {
        ShmStatsHandle(self.shared.counters.clone())
    }

    // r[impl shm.validate]
    /// The next message if one is published; every word read from shared
    /// memory is checked first.
    fn try_take(&mut self) -> Result<Option<Backing>, LinkError> {
        let r = &self.shared.region;
        let c = &self.shared.counters;
        let pos = self.tail as usize % r.layout.ring_len;
        let e = r.ring_entry(self.dir, pos);
        // Published exactly when its sequence number is the next one; any
        // other value (older, or garbage) means nothing new is there.
        if e.seq.load(Ordering::Acquire) != self.tail.wrapping_add(1) {
            return Ok(None);
        }
        let (ci, len) = (
            e.class.load(Ordering::Relaxed),
            e.len.load(Ordering::Relaxed) as usize,
        );
        let backing = if ci == INLINE {
            if len > INLINE_MAX {
                return Err(corrupt(c, format!("inline entry of {len} bytes")));
            }
            let mut v = vec![0u8; len];
            // SAFETY: `inline` points at INLINE_MAX bytes inside the mapping
            // and `len <= INLINE_MAX`; `v` is a distinct heap buffer. The
            // copy happens before the tail moves past the entry, so the
            // writer does not reuse it meanwhile (a hostile writer can only
            // change what we copy).
            unsafe { std::ptr::copy_nonoverlapping(e.inline, v.as_mut_ptr(), len) };
            Counters::bump(&c.rx_inline, 1);
            Backing::boxed(v)
        } else {
            let class = if ci >> 31 == 0 {
                Class::Small
            } else {
                Class::Large
            };
            let index = (ci & 0x7fff_ffff) as usize;
            if index >= r.class_count(class) || len > r.class_size(class) {
                return Err(corrupt(
                    c,
                    format!("descriptor {ci:#x} of {len} bytes out of range"),
                ));
            }
            let token = LeaseToken {
                a: (class as u64) << 32 | index as u64,
                b: len as u64,
            };
            Counters::bump(&c.rx_zero_copy, 1);
            Backing::lease(self.leases.clone(), token)
        };
        self.tail = self.tail.wrapping_add(1);
        r.control(self.dir, TAIL)
            .store(self.tail, Ordering::Release);
        Counters::bump(&c.rx_messages, 1);
        Counters::bump(&c.rx_bytes, len as u64);
        // The ring entry is free again: a writer waiting for ring room may go.
        fence(Ordering::SeqCst);
        if r.control(self.dir, WRITER_SLEEPING).load(Ordering::Relaxed) != 0 {
            sys::eventfd_signal(&self.leases.space_signal);
            Counters::add(&c.wakeups_sent, 1);
        }
        Ok(Some(backing))
    }

    /// How the writer's state ends the stream, if it does (checked only
    /// once the ring is empty).
    fn writer_end(&self) -> Option<Result<(), LinkError>> {
        match self
            .shared
            .region
            .control(self.dir, WRITER_STATE)
            .load(Ordering::Acquire)
        {
            OPEN if self.shared.peer_dead.load(Ordering::SeqCst) => Some(Err(LinkError::PeerGone)),
            OPEN => None,
            CLOSED => Some(Ok(())),
            GONE => Some(Err(LinkError::PeerGone)),
            v => Some(Err(corrupt(
                &self.shared.counters,
                format!("writer state {v}"),
            ))),
        }
    }

    // r[impl link.recv.cancel]
    // r[impl link.close.sticky]
    // r[impl link.error.sticky]
    // r[impl shm.wake]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Backing>, LinkError>> {
        if let Some(end) = &self.end {
            return Poll::Ready(end.clone().map(|()| None));
        }
        let mut spin = Spin::new(self.shared.spin);
        let region = self.shared.region.clone();
        let dir = self.dir;
        let sleeping = || region.control(dir, READER_SLEEPING);
        loop {
            // The state is read before the ring: a close published after the
            // last message is only seen once that message is visible too.
            let end = self.writer_end();
            match self.try_take() {
                Ok(Some(m)) => return Poll::Ready(Ok(Some(m))),
                Ok(None) => {}
                Err(e) => {
                    self.end = Some(Err(e.clone()));
                    return Poll::Ready(Err(e));
                }
            }
            if let Some(end) = end {
                self.end = Some(end.clone());
                return Poll::Ready(end.map(|()| None));
            }
            if spin.again() {
                continue;
            }
            sleeping().store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let pos = self.tail as usize % region.layout.ring_len;
            let ready = region.ring_entry(self.dir, pos).seq.load(Ordering::Acquire)
                == self.tail.wrapping_add(1);
            if ready || self.writer_end().is_some() {
                sleeping().store(0, Ordering::Relaxed);
                continue;
            }
            match self.data_wait.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(mut guard)) => {
                    let _ = sys::eventfd_drain(guard.get_inner());
                    guard.clear_ready();
                    sleeping().store(0, Ordering::Relaxed);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(LinkError::Io(Arc::new(e)))),
            }
        }
    }
}

impl LinkRx for ShmRx {
    fn caps(&self) -> LinkCaps {
        self.shared.caps
    }

    fn recv(&mut self) -> impl MaybeSendFuture<Output = Result<Option<Backing>, LinkError>> {
        poll_fn(|cx| self.poll_recv(cx))
    }
}

// r[impl link.rx.drop]
impl Drop for ShmRx {
    fn drop(&mut self) {
        let r = &self.shared.region;
        r.control(self.dir, READER_STATE)
            .store(GONE, Ordering::Release);
        fence(Ordering::SeqCst);
        sys::eventfd_signal(&self.leases.space_signal);
    }
}
