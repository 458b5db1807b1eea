//! The ring protocol of one direction, apart from waiting: how a writer
//! claims slots and publishes entries, how a reader takes them, checks them
//! and gives the space back. No system calls and no runtime here, so the
//! protocol runs under Miri on heap memory (`Region::heap`); the link adds
//! spinning, eventfd sleeps and tokio on top.
//!
//! Publication: an entry is published by its sequence number (written last,
//! with release ordering); the reader takes entry `tail` only when its
//! sequence number is exactly `tail + 1`. The reader publishes how far it
//! has read (the shared tail) lazily: every quarter of the ring while busy,
//! and whenever it finds the ring empty, so a busy link does not move the
//! tail's cache line on every message.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use crate::region::{
    Class, ENTRY, Entry, INLINE, INLINE_MAX, READER_SLEEPING, READER_STATE, Region, TAIL,
    WRITER_SLEEPING, WRITER_STATE,
};

/// Direction states (`WRITER_STATE`, `READER_STATE`).
pub(crate) const OPEN: u32 = 0;
pub(crate) const CLOSED: u32 = 1;
pub(crate) const GONE: u32 = 2;

/// Where a message's payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In its ring entry.
    Inline,
    /// In a slot of a class.
    Slot(Class, usize),
}

/// A value read from shared memory that is out of range: the peer broke
/// the protocol (or wrote garbage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault(pub String);

/// One direction's ring entries and slot states, with their places in the
/// region computed and checked once.
struct Ring {
    region: Arc<Region>,
    dir: usize,
    entries: NonNull<u8>,
    states: NonNull<AtomicU32>,
    len: usize,
    small_count: usize,
}

// SAFETY: the pointers point into `region`, which this value keeps alive;
// everything reached through them is accessed as atomic words or through
// bounds-checked raw copies, as through `Region` itself.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    fn new(region: Arc<Region>, dir: usize) -> Ring {
        let (entries, states) = region.ring_bases(dir);
        Ring {
            len: region.layout.ring_len,
            small_count: region.layout.geo.small_count,
            region,
            dir,
            entries,
            states,
        }
    }

    /// Entry `pos`: its sequence, class and length words and its inline
    /// payload.
    #[inline]
    fn entry(&self, pos: usize) -> Entry<'_> {
        assert!(pos < self.len);
        // SAFETY: `ring_bases` checked that `len` entries of `ENTRY` bytes
        // from `entries` lie inside the region, 64-byte aligned, and `pos <
        // len`; `self.region` keeps the memory alive for the borrow; shared
        // words are only accessed atomically (`AtomicU32` has the layout of
        // `u32`).
        unsafe {
            let p = self.entries.as_ptr().add(pos * ENTRY);
            Entry {
                seq: &*p.cast::<AtomicU32>(),
                class: &*p.add(4).cast::<AtomicU32>(),
                len: &*p.add(8).cast::<AtomicU32>(),
                inline: p.add(16),
            }
        }
    }

    /// The state word of a slot (0 = free, anything else = in use).
    #[inline]
    fn state(&self, class: Class, index: usize) -> &AtomicU32 {
        let i = match class {
            Class::Small => index,
            Class::Large => self.small_count + index,
        };
        assert!(i < self.len);
        // SAFETY: `ring_bases` checked that `len` state words from `states`
        // lie inside the region, aligned, and `i < len`; the region lives as
        // long as `self`.
        unsafe { &*self.states.as_ptr().add(i) }
    }

    /// The next position after `pos`.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        if pos + 1 == self.len { 0 } else { pos + 1 }
    }
}

/// The writing end of one direction's ring.
pub(crate) struct RingTx {
    ring: Ring,
    /// Entries published so far.
    head: u32,
    /// `head` modulo the ring length (kept, not divided for).
    pos: usize,
    /// The reader's tail as last read.
    tail_seen: u32,
}

impl RingTx {
    pub(crate) fn new(region: Arc<Region>, dir: usize) -> RingTx {
        RingTx {
            ring: Ring::new(region, dir),
            head: 0,
            pos: 0,
            tail_seen: 0,
        }
    }

    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.ring.region
    }

    /// The direction this end writes.
    pub(crate) fn dir(&self) -> usize {
        self.ring.dir
    }

    // r[impl shm.validate]
    /// The reader's state: `OPEN` or `GONE`.
    pub(crate) fn reader_state(&self) -> Result<u32, Fault> {
        match self
            .ring
            .region
            .control(self.ring.dir, READER_STATE)
            .load(Ordering::Acquire)
        {
            v @ (OPEN | GONE) => Ok(v),
            v => Err(Fault(format!("reader state {v}"))),
        }
    }

    // r[impl shm.validate]
    /// Whether the ring has room for one more entry. The reader's tail is
    /// read only when the ring looks full, so a busy link does not pull its
    /// cache line across on every message.
    pub(crate) fn has_room(&mut self) -> Result<bool, Fault> {
        let len = self.ring.len;
        if (self.head.wrapping_sub(self.tail_seen) as usize) < len {
            return Ok(true);
        }
        let tail = self
            .ring
            .region
            .control(self.ring.dir, TAIL)
            .load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail) as usize;
        if used > len {
            return Err(Fault(format!("ring tail {tail} behind head {}", self.head)));
        }
        self.tail_seen = tail;
        Ok(used < len)
    }

    /// Take the lowest free slot of `class`, marking it in use. Reusing the
    /// lowest one first keeps a steady stream cycling through as few slots
    /// (and as little cache) as it can: measured on 8 MiB frames, a
    /// rotating search that touched every slot in turn was slower.
    pub(crate) fn take_slot(&self, class: Class) -> Option<usize> {
        let i = self.find_free(class)?;
        self.mark_used(class, i);
        Some(i)
    }

    /// The lowest free slot of `class`, not marked. Only this writer marks
    /// slots in use (the reader only frees them), so a slot found free stays
    /// free until this writer marks it.
    pub(crate) fn find_free(&self, class: Class) -> Option<usize> {
        (0..self.ring.region.class_count(class))
            .find(|&i| self.ring.state(class, i).load(Ordering::Acquire) == 0)
    }

    /// Mark a slot found free as in use.
    pub(crate) fn mark_used(&self, class: Class, index: usize) {
        self.ring.state(class, index).store(1, Ordering::Relaxed);
    }

    /// Give back a slot this side took and did not publish.
    pub(crate) fn free_slot(&self, class: Class, index: usize) {
        self.ring.state(class, index).store(0, Ordering::Release);
    }

    /// Where the payload of the next message goes: `len` bytes at `place`
    /// (bounds-checked against the region).
    pub(crate) fn payload(&self, place: Place, len: usize) -> *mut u8 {
        match place {
            Place::Inline => {
                assert!(len <= INLINE_MAX);
                self.ring.entry(self.pos).inline
            }
            Place::Slot(class, index) => self.ring.region.payload(self.ring.dir, class, index, len),
        }
    }

    /// Publish the next entry: `len` bytes at `place`, written before.
    /// Returns whether the reader may be asleep (and must be woken).
    pub(crate) fn publish(&mut self, place: Place, len: usize) -> bool {
        let e = self.ring.entry(self.pos);
        let word = match place {
            Place::Inline => INLINE,
            Place::Slot(class, index) => (class as u32) << 31 | index as u32,
        };
        e.class.store(word, Ordering::Relaxed);
        e.len.store(len as u32, Ordering::Relaxed);
        self.head = self.head.wrapping_add(1);
        self.pos = self.ring.next(self.pos);
        // The sequence number publishes the entry (and the payload before it).
        e.seq.store(self.head, Ordering::Release);
        self.reader_asleep()
    }

    /// Whether the reader has said it may sleep. The fence orders this
    /// side's last store (an entry, a state) before the flag is read; the
    /// reader does the same the other way round, so one of the two sees
    /// the other.
    pub(crate) fn reader_asleep(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring
            .region
            .control(self.ring.dir, READER_SLEEPING)
            .load(Ordering::Relaxed)
            != 0
    }

    /// The flag this writer raises before it sleeps waiting for room.
    pub(crate) fn sleep_flag(&self) -> &AtomicU32 {
        self.ring.region.control(self.ring.dir, WRITER_SLEEPING)
    }

    /// Set this direction's writer state (`CLOSED`, `GONE`).
    pub(crate) fn set_state(&self, state: u32) {
        self.ring
            .region
            .control(self.ring.dir, WRITER_STATE)
            .store(state, Ordering::Release);
    }
}

/// A message taken from the ring.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Copied out of its ring entry.
    Inline(Box<[u8]>),
    /// In a slot (checked to be in range), still marked in use; give it
    /// back with [`release`].
    Slot {
        class: Class,
        index: usize,
        len: usize,
    },
}

impl Msg {
    /// The payload length.
    pub(crate) fn len(&self) -> usize {
        match *self {
            Msg::Inline(ref b) => b.len(),
            Msg::Slot { len, .. } => len,
        }
    }
}

/// The reading end of one direction's ring.
pub(crate) struct RingRx {
    ring: Ring,
    /// Entries taken so far.
    tail: u32,
    /// `tail` modulo the ring length.
    pos: usize,
    /// The tail as last published to the writer.
    published: u32,
    /// Publish the tail at least every this many entries.
    batch: u32,
}

impl RingRx {
    pub(crate) fn new(region: Arc<Region>, dir: usize) -> RingRx {
        let batch = (region.layout.ring_len / 4).max(1) as u32;
        RingRx {
            ring: Ring::new(region, dir),
            tail: 0,
            pos: 0,
            published: 0,
            batch,
        }
    }

    /// Whether the next entry is published.
    pub(crate) fn ready(&self) -> bool {
        self.ring.entry(self.pos).seq.load(Ordering::Acquire) == self.tail.wrapping_add(1)
    }

    /// The writer's state word, unchecked (the caller decides what an
    /// unknown value means).
    pub(crate) fn writer_state(&self) -> u32 {
        self.ring
            .region
            .control(self.ring.dir, WRITER_STATE)
            .load(Ordering::Acquire)
    }

    // r[impl shm.validate]
    /// The next message if one is published; every word read from shared
    /// memory is checked before it is used. The second value says whether
    /// the tail was published and the writer may be asleep waiting for room
    /// (then it must be woken).
    pub(crate) fn try_take(&mut self) -> Result<Option<(Msg, bool)>, Fault> {
        let e = self.ring.entry(self.pos);
        // Published exactly when its sequence number is the next one; any
        // other value (older, or garbage) means nothing new is there.
        if e.seq.load(Ordering::Acquire) != self.tail.wrapping_add(1) {
            return Ok(None);
        }
        let (ci, len) = (
            e.class.load(Ordering::Relaxed),
            e.len.load(Ordering::Relaxed) as usize,
        );
        let msg = if ci == INLINE {
            if len > INLINE_MAX {
                return Err(Fault(format!("inline entry of {len} bytes")));
            }
            let mut bytes = Box::<[u8]>::new_uninit_slice(len);
            // SAFETY: `inline` points at INLINE_MAX bytes inside the region
            // and `len <= INLINE_MAX`; `bytes` is a distinct new buffer of
            // `len` bytes, all of which the copy initialises. The copy
            // happens before the tail moves past the entry, so the writer
            // does not reuse it meanwhile (a hostile writer can only change
            // what we copy).
            let bytes = unsafe {
                std::ptr::copy_nonoverlapping(e.inline, bytes.as_mut_ptr().cast::<u8>(), len);
                bytes.assume_init()
            };
            Msg::Inline(bytes)
        } else {
            let class = if ci >> 31 == 0 {
                Class::Small
            } else {
                Class::Large
            };
            let index = (ci & 0x7fff_ffff) as usize;
            let r = &self.ring.region;
            if index >= r.class_count(class) || len > r.class_size(class) {
                return Err(Fault(format!(
                    "descriptor {ci:#x} of {len} bytes out of range"
                )));
            }
            Msg::Slot { class, index, len }
        };
        self.tail = self.tail.wrapping_add(1);
        self.pos = self.ring.next(self.pos);
        let wake = self.tail.wrapping_sub(self.published) >= self.batch && self.publish_tail();
        Ok(Some((msg, wake)))
    }

    /// Publish the tail if it moved since it was last published. Returns
    /// whether the writer may be asleep waiting for room (then it must be
    /// woken). Called by the link whenever it finds the ring empty, and
    /// by `try_take` every quarter ring.
    pub(crate) fn publish_tail(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        self.published = self.tail;
        let (r, d) = (&self.ring.region, self.ring.dir);
        r.control(d, TAIL).store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        r.control(d, WRITER_SLEEPING).load(Ordering::Relaxed) != 0
    }

    /// Mark the reader gone (its half was dropped).
    pub(crate) fn set_gone(&self) {
        self.ring
            .region
            .control(self.ring.dir, READER_STATE)
            .store(GONE, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// The flag this reader raises before it sleeps waiting for data.
    pub(crate) fn sleep_flag(&self) -> &AtomicU32 {
        self.ring.region.control(self.ring.dir, READER_SLEEPING)
    }
}

/// Give a received slot back to the writer (from any thread). Returns
/// whether the writer may be asleep waiting for space (then it must be
/// woken).
pub(crate) fn release(region: &Region, dir: usize, class: Class, index: usize) -> bool {
    region
        .slot_state(dir, class, index)
        .store(0, Ordering::Release);
    fence(Ordering::SeqCst);
    region.control(dir, WRITER_SLEEPING).load(Ordering::Relaxed) != 0
}

/// The bytes of a received slot.
///
/// # Safety
/// `class`, `index` and `len` must come from a [`Msg::Slot`] of this
/// region and direction that has not been released; the slice must not
/// outlive the region.
pub(crate) unsafe fn slot_bytes(
    region: &Region,
    dir: usize,
    class: Class,
    index: usize,
    len: usize,
) -> &[u8] {
    let p = region.payload(dir, class, index, len);
    // SAFETY: `payload` checked the bounds; the caller guarantees the slot
    // is received and not released, so the writer does not write it until
    // `release` marks it free.
    unsafe { std::slice::from_raw_parts(p, len) }
}

#[cfg(test)]
mod tests {
    //! The ring protocol on heap memory: these tests run natively with
    //! `cargo test` and under Miri (`scripts/miri.sh`), whose data-race
    //! detector checks the orderings above and whose bounds checks catch
    //! any access outside the region.

    use super::*;
    use crate::region::Geometry;

    fn geo() -> Geometry {
        Geometry {
            small_size: 192,
            small_count: 3,
            large_size: 512,
            large_count: 2,
        }
    }

    /// The length of message `i`: inline, small-slot and large-slot sizes.
    fn len_of(i: u32) -> usize {
        [0, 1, 64, 112, 113, 150, 192, 193, 400, 512][i as usize % 10]
    }

    fn fill(i: u32, buf: &mut [u8]) {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = (i as usize).wrapping_mul(31).wrapping_add(k) as u8;
        }
    }

    /// What a link's `alloc` does: inline up to INLINE_MAX, a small slot
    /// if one is free and the message fits, else the large slot held.
    fn send(tx: &mut RingTx, i: u32) {
        let len = len_of(i);
        let large = loop {
            if tx.has_room().expect("honest tail")
                && let Some(l) = tx.take_slot(Class::Large)
            {
                break l;
            }
            std::thread::yield_now();
        };
        let place = if len <= INLINE_MAX {
            tx.free_slot(Class::Large, large);
            Place::Inline
        } else if len <= tx.region().class_size(Class::Small)
            && let Some(s) = tx.take_slot(Class::Small)
        {
            tx.free_slot(Class::Large, large);
            Place::Slot(Class::Small, s)
        } else {
            Place::Slot(Class::Large, large)
        };
        let p = tx.payload(place, len);
        // SAFETY: `payload` bounds-checked `len` bytes at `place`, which
        // this writer owns until it publishes them.
        fill(i, unsafe { std::slice::from_raw_parts_mut(p, len) });
        tx.publish(place, len);
    }

    // r[verify shm.validate]
    // r[verify shm.zero-copy]
    /// A writer thread and a reader thread move messages of every size
    /// class through a small ring; the reader hands each slot to a third
    /// thread, which checks the bytes and releases it. Every message
    /// arrives once, in order, intact; under Miri, no data race and no
    /// access outside the region.
    #[test]
    fn two_threads_move_every_size_class_in_order() {
        let n: u32 = if cfg!(miri) { 60 } else { 20_000 };
        let region = Region::heap(geo());
        let mut tx = RingTx::new(region.clone(), 0);
        let mut rx = RingRx::new(region.clone(), 0);
        let writer = std::thread::spawn(move || {
            for i in 0..n {
                send(&mut tx, i);
            }
        });
        let (held_tx, held_rx) = std::sync::mpsc::channel::<(u32, Class, usize, usize)>();
        let releaser = {
            let region = region.clone();
            std::thread::spawn(move || {
                for (i, class, index, len) in held_rx {
                    // SAFETY: a slot received and not yet released.
                    let got = unsafe { slot_bytes(&region, 0, class, index, len) };
                    let mut want = vec![0u8; len];
                    fill(i, &mut want);
                    assert_eq!(got, &want[..], "message {i}");
                    release(&region, 0, class, index);
                }
            })
        };
        let mut i = 0;
        while i < n {
            match rx.try_take().expect("honest entries") {
                Some((msg, _)) => {
                    assert_eq!(msg.len(), len_of(i), "message {i}");
                    match msg {
                        Msg::Inline(bytes) => {
                            let mut want = vec![0u8; bytes.len()];
                            fill(i, &mut want);
                            assert_eq!(&bytes[..], &want[..], "message {i}");
                        }
                        Msg::Slot { class, index, len } => {
                            held_tx.send((i, class, index, len)).unwrap();
                        }
                    }
                    i += 1;
                }
                None => {
                    rx.publish_tail();
                    std::thread::yield_now();
                }
            }
        }
        drop(held_tx);
        writer.join().unwrap();
        releaser.join().unwrap();
        assert!(rx.try_take().unwrap().is_none());
    }

    /// A tiny deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    // r[verify shm.validate]
    /// Garbage in every word of a direction (control words, ring entries,
    /// slot states) between operations: the reader and the writer report
    /// faults or take messages within range; nothing panics or reaches
    /// outside the region (Miri checks every access).
    #[test]
    fn garbage_words_are_faults_not_crashes() {
        let rounds = if cfg!(miri) { 150 } else { 20_000 };
        let region = Region::heap(geo());
        let words = region.layout.total / 4;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut faults, mut taken) = (0u32, 0u32);
        let mut tx = RingTx::new(region.clone(), 0);
        let mut rx = RingRx::new(region.clone(), 0);
        for round in 0..rounds {
            // Scribble a few words: half the time near the ring's start,
            // where the control words and entries are, with values near
            // the ones that mean something.
            for _ in 0..4 {
                let w = if rng.next().is_multiple_of(2) {
                    (rng.next() % 512) as usize + 64
                } else {
                    (rng.next() as usize) % words
                };
                let v = match rng.next() % 4 {
                    0 => rng.next() as u32,
                    1 => (rng.next() % 8) as u32,
                    2 => rx.tail.wrapping_add(1),
                    _ => INLINE - (rng.next() % 2) as u32,
                };
                region.word(w * 4).store(v, Ordering::Relaxed);
            }
            match rx.try_take() {
                Ok(Some((msg, _))) => {
                    taken += 1;
                    match msg {
                        Msg::Inline(b) => assert!(b.len() <= INLINE_MAX),
                        Msg::Slot { class, index, len } => {
                            // SAFETY: a slot just received, in range.
                            let b = unsafe { slot_bytes(&region, 0, class, index, len) };
                            assert_eq!(b.len(), len);
                            release(&region, 0, class, index);
                        }
                    }
                }
                Ok(None) => {}
                Err(Fault(_)) => faults += 1,
            }
            if tx.reader_state().is_err() {
                faults += 1;
            }
            match tx.has_room() {
                Ok(true) => {
                    if let Some(l) = tx.take_slot(Class::Large) {
                        let place = Place::Slot(Class::Large, l);
                        let len = (round % 512) as usize;
                        let p = tx.payload(place, len);
                        // SAFETY: bounds-checked by `payload`.
                        unsafe { std::ptr::write_bytes(p, round as u8, len) };
                        tx.publish(place, len);
                    }
                }
                Ok(false) => {}
                Err(Fault(_)) => faults += 1,
            }
        }
        assert!(faults > 0, "garbage was never noticed");
        assert!(taken > 0, "nothing was taken at all");
    }

    /// The tail is published every quarter ring while the reader is busy,
    /// and at once when asked (the link asks when it finds the ring empty).
    #[test]
    fn tail_is_published_lazily() {
        let region = Region::heap(Geometry {
            small_count: 12,
            large_count: 4,
            ..geo()
        });
        let mut tx = RingTx::new(region.clone(), 0);
        let mut rx = RingRx::new(region.clone(), 0);
        let tail = || region.control(0, TAIL).load(Ordering::Relaxed);
        let ring = region.layout.ring_len as u32;
        for i in 0..ring {
            send(&mut tx, i * 10);
        }
        assert!(!tx.has_room().unwrap(), "ring of {ring} is full");
        let batch = ring / 4;
        assert!(batch > 1);
        for k in 1..batch {
            rx.try_take().unwrap().unwrap();
            assert_eq!(tail(), 0, "after {k}");
        }
        rx.try_take().unwrap().unwrap();
        assert_eq!(tail(), batch);
        assert!(tx.has_room().unwrap());
        rx.try_take().unwrap().unwrap();
        assert_eq!(tail(), batch);
        rx.publish_tail();
        assert_eq!(tail(), batch + 1);
    }
}
