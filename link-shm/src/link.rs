//! The shared-memory link: a ring of descriptors per direction, slots in
//! two size classes, leases for zero-copy receive, eventfd wake-ups.

use std::future::poll_fn;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use link_types::{
    Backing, LeaseOwner, LeaseToken, Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit,
    MaybeSendFuture, WriteSlot,
};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

use crate::region::{Class, Geometry, INLINE_MAX, Layout, Memory, Region};
use crate::ring::{self, CLOSED, Fault, GONE, Msg, OPEN, Place, RingRx, RingTx};
use crate::stats::{Counters, ShmStatsHandle};
use crate::sys::{self, Mapping};
use crate::{ShmConfig, ShmError};

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
    /// The segment's memory file, for slots lent to a third party.
    segment: Arc<OwnedFd>,
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
    Ok((Region::init(Memory::Mapped(map), layout), segment, fds))
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
        let (region, segment, fds) = create_segment(config)?;
        let segment = Arc::new(segment);
        let a = Self::end(region.clone(), segment.clone(), &fds, 0, config, None)?;
        let b = Self::end(region, segment, &fds, 1, config, None)?;
        Ok((a, b))
    }

    /// The end that sends on direction `tx_dir` and receives on the other.
    pub(crate) fn end(
        region: Arc<Region>,
        segment: Arc<OwnedFd>,
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
            segment,
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
                ring: RingTx::new(shared.region.clone(), tx_dir),
                shared: shared.clone(),
                space_wait,
                data_signal: fds.data[tx_dir].clone(),
                closed: false,
                error: None,
            },
            rx: ShmRx {
                ring: RingRx::new(shared.region.clone(), rx_dir),
                shared,
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

/// The spin before sleeping. The clock is read only every 64 turns, and
/// not at all when what is waited for arrives within the first 64.
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
        if self.turns.is_multiple_of(64) {
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

/// A half that can sleep on its eventfd until the other side wakes it.
trait Sleeper {
    /// The flag in shared memory that tells the other side this half may
    /// be asleep (and must be signalled).
    fn sleep_flag(&self) -> &AtomicU32;
    /// The eventfd the other side signals.
    fn waker_fd(&self) -> &AsyncFd<Arc<OwnedFd>>;
    /// Whether what this half waits for may have arrived (then it must not
    /// sleep), or the link failed.
    fn can_proceed(&mut self) -> Result<bool, LinkError>;
}

// r[impl shm.wake]
/// The one sleep protocol of both halves: raise the sleep flag, fence,
/// check again, and only then wait for the eventfd; drain it, lower the
/// flag. The other side stores (an entry, a released slot, a state), fences
/// and then reads the flag, so of the two one always sees the other: either
/// this recheck sees the store, or the other side sees the flag and signals.
///
/// `Ready(Ok(()))`: look again (the recheck passed or a signal came).
/// `Pending`: asleep, the flag raised, the task registered on the eventfd.
fn sleep(s: &mut impl Sleeper, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
    s.sleep_flag().store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    match s.can_proceed() {
        Ok(false) => {}
        done => {
            s.sleep_flag().store(0, Ordering::Relaxed);
            return Poll::Ready(done.map(|_| ()));
        }
    }
    match s.waker_fd().poll_read_ready(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(mut guard)) => {
            let _ = sys::eventfd_drain(guard.get_inner());
            guard.clear_ready();
            s.sleep_flag().store(0, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => {
            s.sleep_flag().store(0, Ordering::Relaxed);
            Poll::Ready(Err(LinkError::Io(Arc::new(e))))
        }
    }
}

fn corrupt(c: &Counters, Fault(what): Fault) -> LinkError {
    c.validation_failures.add(1);
    tracing::warn!("shared memory: {what}");
    LinkError::protocol(format!("shared memory corrupted by the peer: {what}"))
}

/// The sending half of a [`ShmLink`].
pub struct ShmTx {
    shared: Arc<Shared>,
    ring: RingTx,
    space_wait: AsyncFd<Arc<OwnedFd>>,
    data_signal: Arc<OwnedFd>,
    closed: bool,
    error: Option<LinkError>,
}

impl std::fmt::Debug for ShmTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTx")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ShmTx {
    // r[impl shm.backpressure]
    // r[impl shm.validate]
    /// Ready with a large slot when the ring has room and a large slot is
    /// free: the permit then holds space for a message of the maximum size.
    fn try_reserve(&mut self) -> Result<Option<usize>, LinkError> {
        if self.closed {
            return Err(LinkError::Closed);
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.shared.peer_dead.load(Ordering::Relaxed) {
            return Err(self.fail(LinkError::PeerGone));
        }
        match self.ring.reader_state() {
            Ok(OPEN) => {}
            Ok(_) => return Err(self.fail(LinkError::PeerGone)),
            Err(f) => {
                let e = corrupt(&self.shared.counters, f);
                return Err(self.fail(e));
            }
        }
        match self.ring.has_room() {
            Ok(true) => Ok(self.ring.find_free(Class::Large)),
            Ok(false) => Ok(None),
            Err(f) => {
                let e = corrupt(&self.shared.counters, f);
                Err(self.fail(e))
            }
        }
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
                self.shared.counters.reserve_waits.bump(1);
            }
            if spin.again() {
                continue;
            }
            if sleep(self, cx)?.is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn publish(&mut self, place: Place, len: usize) {
        let c = &self.shared.counters;
        match place {
            Place::Inline => &c.tx_inline,
            Place::Slot(Class::Small, _) => &c.tx_small,
            Place::Slot(Class::Large, _) => &c.tx_large,
        }
        .bump(1);
        c.tx_bytes.bump(len as u64);
        if self.ring.publish(place, len) {
            self.signal_reader();
        }
    }

    fn signal_reader(&self) {
        sys::eventfd_signal(&self.data_signal);
        self.shared.counters.wakeups_sent.add(1);
    }

    fn set_state(&self, state: u32) {
        self.ring.set_state(state);
        fence(Ordering::SeqCst);
        self.signal_reader();
    }

    /// The link's counters.
    pub fn stats(&self) -> ShmStatsHandle {
        ShmStatsHandle(self.shared.counters.clone())
    }
}

impl Sleeper for ShmTx {
    fn sleep_flag(&self) -> &AtomicU32 {
        self.ring.sleep_flag()
    }

    fn waker_fd(&self) -> &AsyncFd<Arc<OwnedFd>> {
        &self.space_wait
    }

    fn can_proceed(&mut self) -> Result<bool, LinkError> {
        self.try_reserve().map(|slot| slot.is_some())
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
            // The first attempt without the spinning machinery: a permit is
            // usually there at once.
            let large = match self.try_reserve()? {
                Some(i) => i,
                None => {
                    let mut waited = false;
                    poll_fn(|cx| self.poll_reserve(cx, &mut waited)).await?
                }
            };
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

// r[impl link.reserve.drop-releases]
/// Permission to send one message: a free large slot and room in the ring.
/// The slot is marked in use only by `alloc`, and only if the message needs
/// it: the permit borrows the sending half, so no other permit can take the
/// slot meanwhile (only this writer marks slots; the reader only frees
/// them), and a dropped permit holds nothing.
pub struct ShmPermit<'a> {
    held: Option<(&'a mut ShmTx, usize)>,
}

impl<'a> LinkTxPermit for ShmPermit<'a> {
    type Slot = ShmSlot<'a>;

    // r[impl link.alloc.limit]
    // r[impl shm.classes]
    /// A message of up to 112 bytes is written into its ring entry itself;
    /// one that fits a small slot goes to one when one is free; otherwise it
    /// takes the large slot the permit found. Never waits.
    fn alloc(mut self, len: usize) -> Result<ShmSlot<'a>, LinkError> {
        let (tx, large) = self
            .held
            .take()
            .expect("a permit holds a large slot until alloc");
        let max = tx.shared.caps.max_payload;
        if len > max {
            return Err(LinkError::TooLarge { len, max });
        }
        let place = if len <= INLINE_MAX {
            Place::Inline
        } else if len <= tx.ring.region().class_size(Class::Small)
            && let Some(i) = tx.ring.take_slot(Class::Small)
        {
            Place::Slot(Class::Small, i)
        } else {
            tx.ring.mark_used(Class::Large, large);
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

/// A message being written straight into shared memory.
pub struct ShmSlot<'a> {
    tx: &'a mut ShmTx,
    place: Place,
    len: usize,
    committed: bool,
}

/// A write slot's bytes as a place in the segment's memory file, for a
/// trusted producer that lets a third party (an X server with MIT-SHM, a
/// GPU driver) write the message: `len` bytes at `offset` in `fd`.
#[derive(Debug, Clone, Copy)]
pub struct LentSlot<'a> {
    /// The segment's memory file. Duplicate it to hand it on.
    pub fd: BorrowedFd<'a>,
    /// Where the slot's bytes start in the file.
    pub offset: u64,
    /// How many bytes the message has (what `alloc` was given).
    pub len: usize,
    /// The memory file's length: the third party maps all of it.
    pub segment_len: usize,
}

impl ShmSlot<'_> {
    // r[impl shm.lend]
    /// The slot as a place in the segment's memory file, for a third party
    /// to write the message into; `None` for a message small enough to sit
    /// in its ring entry (it has no slot of its own).
    ///
    /// What the third party writes there before [`WriteSlot::commit`] is
    /// what the reader receives. It gets the whole memory file, so it must
    /// be trusted as the peer process is: a third party that writes
    /// elsewhere can garble messages in flight, but both ends already
    /// treat the segment as written by a hostile peer (`shm.validate`,
    /// the hostile-peer checks), so it cannot make either end read or
    /// write outside the mapping. Take no `as_mut_slice` of the slot
    /// while the third party may still be writing it.
    pub fn lend(&self) -> Option<LentSlot<'_>> {
        let Place::Slot(class, index) = self.place else {
            return None;
        };
        let region = self.tx.ring.region();
        Some(LentSlot {
            fd: self.tx.shared.segment.as_fd(),
            offset: region.payload_offset(self.tx.ring.dir(), class, index) as u64,
            len: self.len,
            segment_len: region.layout.total,
        })
    }
}

impl WriteSlot for ShmSlot<'_> {
    // r[impl shm.zero-copy]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        let p = self.tx.ring.payload(self.place, self.len);
        // SAFETY: `payload` checked that the bytes lie inside the mapping
        // (`len <= INLINE_MAX` for an entry). They are ours: a slot marked
        // in use by this writer and not yet published, or the next ring
        // entry, which `reserve` saw the reader had passed. The borrow of
        // `self` keeps them exclusive here. A hostile peer writing the same
        // bytes can change what we send, not where we write.
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
            self.tx.ring.free_slot(class, index);
        }
    }
}

/// Gives received slots back when their `Backing`s are dropped.
struct Leases {
    shared: Arc<Shared>,
    dir: usize,
    space_signal: Arc<OwnedFd>,
}

impl Leases {
    fn signal_writer(&self) {
        sys::eventfd_signal(&self.space_signal);
        self.shared.counters.wakeups_sent.add(1);
    }
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
        // SAFETY: the token was made from a `Msg::Slot` of this direction
        // (index and length checked against the class), it is released
        // only when its `Backing` is dropped, and the region lives as long
        // as `self`.
        unsafe { ring::slot_bytes(&self.shared.region, self.dir, class, index, len) }
    }

    // r[impl link.backing.lifetime]
    fn release(&self, token: LeaseToken) {
        let (class, index, _) = token_parts(token);
        if ring::release(&self.shared.region, self.dir, class, index) {
            self.signal_writer();
        }
    }
}

/// The receiving half of a [`ShmLink`].
pub struct ShmRx {
    shared: Arc<Shared>,
    ring: RingRx,
    data_wait: AsyncFd<Arc<OwnedFd>>,
    leases: Arc<Leases>,
    end: Option<Result<(), LinkError>>,
}

impl std::fmt::Debug for ShmRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmRx")
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
    /// The next message if one is published, as a `Backing`: a copy of an
    /// inline entry, or a lease on its slot.
    fn try_take(&mut self) -> Result<Option<Backing>, LinkError> {
        let c = &self.shared.counters;
        let (msg, wake) = match self.ring.try_take() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(f) => return Err(corrupt(c, f)),
        };
        let len = msg.len();
        let backing = match msg {
            Msg::Inline(bytes) => {
                c.rx_inline.bump(1);
                Backing::boxed(bytes)
            }
            Msg::Slot { class, index, len } => {
                c.rx_zero_copy.bump(1);
                let token = LeaseToken {
                    a: (class as u64) << 32 | index as u64,
                    b: len as u64,
                };
                Backing::lease(self.leases.clone(), token)
            }
        };
        c.rx_bytes.bump(len as u64);
        if wake {
            self.leases.signal_writer();
        }
        Ok(Some(backing))
    }

    /// `try_take`, with an error made the stream's sticky end.
    fn take(&mut self) -> Result<Option<Backing>, LinkError> {
        self.try_take()
            .inspect_err(|e| self.end = Some(Err(e.clone())))
    }

    /// How the writer's state ends the stream, if it does (checked only
    /// once the ring is empty).
    fn writer_end(&self) -> Option<Result<(), LinkError>> {
        match self.ring.writer_state() {
            OPEN if self.shared.peer_dead.load(Ordering::Relaxed) => Some(Err(LinkError::PeerGone)),
            OPEN => None,
            CLOSED => Some(Ok(())),
            GONE => Some(Err(LinkError::PeerGone)),
            v => Some(Err(corrupt(
                &self.shared.counters,
                Fault(format!("writer state {v}")),
            ))),
        }
    }

    // r[impl link.recv.cancel]
    // r[impl link.close.sticky]
    // r[impl link.error.sticky]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Backing>, LinkError>> {
        if let Some(end) = &self.end {
            return Poll::Ready(end.clone().map(|()| None));
        }
        // A message waiting is taken at once: the writer's state matters
        // only once the ring is empty.
        if let Some(m) = self.take()? {
            return Poll::Ready(Ok(Some(m)));
        }
        let mut spin = Spin::new(self.shared.spin);
        loop {
            // The state is read before the ring: a close published after the
            // last message is only seen once that message is visible too.
            let end = self.writer_end();
            if let Some(m) = self.take()? {
                return Poll::Ready(Ok(Some(m)));
            }
            if let Some(end) = end {
                self.end = Some(end.clone());
                return Poll::Ready(end.map(|()| None));
            }
            // The ring is empty: tell the writer how far this side read
            // (published lazily while busy), then wait.
            if self.ring.publish_tail() {
                self.leases.signal_writer();
            }
            if spin.again() {
                continue;
            }
            if sleep(self, cx)?.is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Sleeper for ShmRx {
    fn sleep_flag(&self) -> &AtomicU32 {
        self.ring.sleep_flag()
    }

    fn waker_fd(&self) -> &AsyncFd<Arc<OwnedFd>> {
        &self.data_wait
    }

    fn can_proceed(&mut self) -> Result<bool, LinkError> {
        Ok(self.ring.ready() || self.writer_end().is_some())
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
        self.ring.set_gone();
        sys::eventfd_signal(&self.leases.space_signal);
    }
}
