//! The layout of a segment, and typed access to it.
//!
//! ```text
//! header (256 B): magic, version, small_size, small_count, large_size,
//!                 large_count, ring_len, total length
//! direction 0 (a → b), then direction 1 (b → a), each:
//!   control words, each on its own 128-byte pair of cache lines: the
//!         writer's and the reader's states, the tail, the reader's and
//!         the writer's sleeping flags
//!   ring (128-byte aligned): ring_len entries of 128 bytes: sequence number, (class << 31 |
//!         slot index, or INLINE), length, then up to 112 payload bytes
//!   slot states: one u32 per small slot, then per large slot (0 = free)
//!   small payload: small_count × small_size
//!   large payload: large_count × large_size (page aligned)
//! ```
//!
//! Every word the peer can write is read here as a plain value and checked
//! by the caller before it is used as an index, offset or length.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use crate::sys::Mapping;

pub(crate) const MAGIC: u64 = 0x6c6e_6b73_686d_0001;
pub(crate) const VERSION: u32 = 3;
/// Bytes of a ring entry.
pub(crate) const ENTRY: usize = 128;
/// Payload bytes a ring entry carries itself.
pub(crate) const INLINE_MAX: usize = ENTRY - 16;
/// The class word of an entry whose payload is inline.
pub(crate) const INLINE: u32 = u32::MAX;
const HEADER: usize = 256;
/// Byte offsets of the header's words (each a `u32`; the magic is a `u64`
/// written as two words, low then high).
mod header {
    pub(super) const MAGIC_LO: usize = 0;
    pub(super) const MAGIC_HI: usize = 4;
    pub(super) const VERSION: usize = 8;
    pub(super) const SMALL_SIZE: usize = 12;
    pub(super) const SMALL_COUNT: usize = 16;
    pub(super) const LARGE_SIZE: usize = 20;
    pub(super) const LARGE_COUNT: usize = 24;
    pub(super) const RING_LEN: usize = 28;
    /// End of the words: all lie within the header.
    pub(super) const END: usize = 32;
}
const _: () = assert!(header::END <= HEADER);
const LINE: usize = 64;
const PAGE: usize = 4096;

/// Control words of one direction. (The ring entries carry their own
/// sequence numbers: there is no shared head.) Words written by different
/// sides never share a 128-byte pair of cache lines, and the ring starts on
/// such a pair: the CPU's adjacent-line prefetcher moves lines in pairs,
/// and a pair shared by the two sides' words moves back and forth (measured:
/// 128-byte-aligned entries cut the 64 B spinning latency by about a tenth).
pub(crate) const WRITER_STATE: usize = 0;
pub(crate) const READER_STATE: usize = 4;
pub(crate) const TAIL: usize = 2 * PAIR;
pub(crate) const READER_SLEEPING: usize = 3 * PAIR;
pub(crate) const WRITER_SLEEPING: usize = 4 * PAIR;
const CONTROL: usize = 5 * PAIR;
const PAIR: usize = 2 * LINE;

/// Size classes: small slots for control messages, large ones for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Small = 0,
    Large = 1,
}

/// The sizes a segment is laid out with (both directions alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub small_size: usize,
    pub small_count: usize,
    pub large_size: usize,
    pub large_count: usize,
}

/// Where everything is, computed from a geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub geo: Geometry,
    pub ring_len: usize,
    dir_len: usize,
    ring: usize,
    states: usize,
    small: usize,
    large: usize,
    pub total: usize,
}

fn align(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

impl Layout {
    /// The layout for `geo`, or why it is not usable.
    pub(crate) fn new(geo: Geometry) -> Result<Layout, String> {
        let g = geo;
        if g.small_count == 0 || g.large_count == 0 {
            return Err("slot counts must be at least 1".into());
        }
        if g.small_count > 1 << 16 || g.large_count > 1 << 16 {
            return Err("slot counts must be at most 65536".into());
        }
        if g.small_size == 0
            || !g.small_size.is_multiple_of(LINE)
            || !g.large_size.is_multiple_of(LINE)
        {
            return Err("slot sizes must be non-zero multiples of 64 bytes".into());
        }
        if g.large_size < g.small_size {
            return Err("large slots must be at least as large as small ones".into());
        }
        if g.large_size > u32::MAX as usize / 2 {
            return Err("large slots must be below 2 GiB".into());
        }
        let ring_len = g.small_count + g.large_count;
        let ring = CONTROL;
        let states = ring + ring_len * ENTRY;
        let small = align(states + ring_len * 4, LINE);
        let large = align(small + g.small_count * g.small_size, PAGE);
        let dir_len = align(
            large
                .checked_add(
                    g.large_count
                        .checked_mul(g.large_size)
                        .ok_or("segment too large")?,
                )
                .ok_or("segment too large")?,
            PAGE,
        );
        let total = HEADER
            .checked_add(dir_len.checked_mul(2).ok_or("segment too large")?)
            .ok_or("segment too large")?;
        if total > 1 << 40 {
            return Err("segment above 1 TiB".into());
        }
        Ok(Layout {
            geo,
            ring_len,
            dir_len,
            ring,
            states,
            small,
            large,
            total,
        })
    }

    fn dir(&self, d: usize) -> usize {
        HEADER + d * self.dir_len
    }
}

/// The memory a segment lives in: a shared mapping between processes, or
/// (for running the ring logic under Miri, which cannot map files) plain
/// zeroed heap memory with the same alignment.
pub(crate) enum Memory {
    /// A shared mapping of a memory file.
    Mapped(Mapping),
    /// Heap memory owned by this process (tests only).
    #[cfg(test)]
    Heap(Heap),
}

impl Memory {
    fn ptr(&self) -> NonNull<u8> {
        match self {
            Memory::Mapped(m) => m.ptr(),
            #[cfg(test)]
            Memory::Heap(h) => h.ptr,
        }
    }

    fn len(&self) -> usize {
        match self {
            Memory::Mapped(m) => m.len(),
            #[cfg(test)]
            Memory::Heap(h) => h.layout.size(),
        }
    }
}

/// Zeroed, page-aligned heap memory.
#[cfg(test)]
pub(crate) struct Heap {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

#[cfg(test)]
// SAFETY: plain memory owned by this value; all access to it goes through
// `Region`, which uses atomics for shared words and bounds-checked raw
// copies for payload bytes, as for a mapping.
unsafe impl Send for Heap {}
#[cfg(test)]
// SAFETY: as above.
unsafe impl Sync for Heap {}

#[cfg(test)]
impl Heap {
    /// `len` zeroed bytes aligned to a page.
    pub(crate) fn zeroed(len: usize) -> Heap {
        let layout = std::alloc::Layout::from_size_align(len.max(PAGE), PAGE)
            .expect("segment size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Heap { ptr, layout }
    }
}

#[cfg(test)]
impl Drop for Heap {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout; nothing
        // refers to it any more (every user holds the `Region` that owns it).
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A segment's memory with its layout.
pub(crate) struct Region {
    mem: Memory,
    pub layout: Layout,
}

impl Region {
    /// A freshly created (zeroed) segment: write the header.
    pub(crate) fn init(mem: Memory, layout: Layout) -> Arc<Region> {
        assert!(mem.len() >= layout.total);
        let r = Region { mem, layout };
        let g = layout.geo;
        let words: [(usize, u32); 6] = [
            (header::VERSION, VERSION),
            (header::SMALL_SIZE, g.small_size as u32),
            (header::SMALL_COUNT, g.small_count as u32),
            (header::LARGE_SIZE, g.large_size as u32),
            (header::LARGE_COUNT, g.large_count as u32),
            (header::RING_LEN, layout.ring_len as u32),
        ];
        for (off, v) in words {
            r.word(off).store(v, std::sync::atomic::Ordering::Relaxed);
        }
        // The magic last, the high word with Release: a reader that sees it
        // sees the words above.
        r.word(header::MAGIC_LO)
            .store(MAGIC as u32, std::sync::atomic::Ordering::Relaxed);
        r.word(header::MAGIC_HI)
            .store((MAGIC >> 32) as u32, std::sync::atomic::Ordering::Release);
        Arc::new(r)
    }

    /// A segment made by a peer: check its header against the mapping
    /// before anything else is read from it.
    pub(crate) fn open(map: Mapping) -> Result<Arc<Region>, String> {
        if map.len() < HEADER {
            return Err("segment shorter than its header".into());
        }
        let r = |off: usize| {
            // SAFETY: every `off` passed is a `header::` offset, 4-aligned
            // with `off + 4 <= header::END <= HEADER <= map.len()`.
            unsafe { word_at(map.ptr(), off) }.load(std::sync::atomic::Ordering::Acquire)
        };
        let magic = r(header::MAGIC_LO) as u64 | (r(header::MAGIC_HI) as u64) << 32;
        if magic != MAGIC {
            return Err(format!("bad magic {magic:#x}"));
        }
        let version = r(header::VERSION);
        if version != VERSION {
            return Err(format!("segment version {version} (this is {VERSION})"));
        }
        let geo = Geometry {
            small_size: r(header::SMALL_SIZE) as usize,
            small_count: r(header::SMALL_COUNT) as usize,
            large_size: r(header::LARGE_SIZE) as usize,
            large_count: r(header::LARGE_COUNT) as usize,
        };
        let layout = Layout::new(geo)?;
        if layout.ring_len != r(header::RING_LEN) as usize {
            return Err("ring length does not match the slot counts".into());
        }
        if layout.total > map.len() {
            return Err(format!(
                "segment of {} bytes is too short for its layout ({} bytes)",
                map.len(),
                layout.total
            ));
        }
        Ok(Arc::new(Region {
            mem: Memory::Mapped(map),
            layout,
        }))
    }

    /// A zeroed heap-backed segment laid out for `geo` (tests, Miri).
    #[cfg(test)]
    pub(crate) fn heap(geo: Geometry) -> Arc<Region> {
        let layout = Layout::new(geo).expect("test geometry");
        Region::init(Memory::Heap(Heap::zeroed(layout.total)), layout)
    }

    /// The 32-bit shared word at byte offset `off` of the segment.
    pub(crate) fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.layout.total);
        // SAFETY: checked just above: aligned and inside the mapping.
        unsafe { word_at(self.mem.ptr(), off) }
    }

    /// A control word of direction `d`.
    pub(crate) fn control(&self, d: usize, which: usize) -> &AtomicU32 {
        self.word(self.layout.dir(d) + which)
    }

    /// The state word of a slot (0 = free, anything else = in use).
    pub(crate) fn slot_state(&self, d: usize, class: Class, index: usize) -> &AtomicU32 {
        let i = match class {
            Class::Small => index,
            Class::Large => self.layout.geo.small_count + index,
        };
        assert!(i < self.layout.ring_len);
        self.word(self.layout.dir(d) + self.layout.states + i * 4)
    }

    /// The start of direction `d`'s ring entries and of its slot state
    /// words, after checking that all `ring_len` of each lie inside the
    /// region. (The ring's hot path indexes from these instead of
    /// recomputing and re-checking offsets for every word.)
    pub(crate) fn ring_bases(&self, d: usize) -> (NonNull<u8>, NonNull<AtomicU32>) {
        let l = &self.layout;
        let ring = l.dir(d) + l.ring;
        let states = l.dir(d) + l.states;
        assert!(ring + l.ring_len * ENTRY <= l.total && ring.is_multiple_of(LINE));
        assert!(states + l.ring_len * 4 <= l.total && states.is_multiple_of(4));
        let base = self.mem.ptr().as_ptr();
        // SAFETY: both offsets are inside the region (checked above), so the
        // pointers are in bounds and not null.
        unsafe {
            (
                NonNull::new_unchecked(base.add(ring)),
                NonNull::new_unchecked(base.add(states).cast()),
            )
        }
    }

    /// Capacity of a slot of `class`.
    pub(crate) fn class_size(&self, class: Class) -> usize {
        match class {
            Class::Small => self.layout.geo.small_size,
            Class::Large => self.layout.geo.large_size,
        }
    }

    /// Number of slots of `class`.
    pub(crate) fn class_count(&self, class: Class) -> usize {
        match class {
            Class::Small => self.layout.geo.small_count,
            Class::Large => self.layout.geo.large_count,
        }
    }

    /// Pointer to the first `len` payload bytes of a slot, bounds-checked.
    /// Where slot `index` of `class` in direction `d` starts in the segment.
    pub(crate) fn payload_offset(&self, d: usize, class: Class, index: usize) -> usize {
        assert!(index < self.class_count(class));
        let base = match class {
            Class::Small => self.layout.small,
            Class::Large => self.layout.large,
        };
        self.layout.dir(d) + base + index * self.class_size(class)
    }

    pub(crate) fn payload(&self, d: usize, class: Class, index: usize, len: usize) -> *mut u8 {
        assert!(index < self.class_count(class) && len <= self.class_size(class));
        let base = match class {
            Class::Small => self.layout.small,
            Class::Large => self.layout.large,
        };
        let off = self.layout.dir(d) + base + index * self.class_size(class);
        assert!(off + len <= self.layout.total);
        // SAFETY: `off + len` is inside the mapping (checked above).
        unsafe { self.mem.ptr().as_ptr().add(off) }
    }
}

/// The words of one ring entry and its inline payload.
pub(crate) struct Entry<'a> {
    pub seq: &'a AtomicU32,
    pub class: &'a AtomicU32,
    pub len: &'a AtomicU32,
    /// `INLINE_MAX` bytes inside the mapping.
    pub inline: *mut u8,
}

/// # Safety
/// `base` must be the start of memory that outlives the returned reference,
/// `off` must be 4-aligned and `off + 4` at most that memory's length.
unsafe fn word_at<'a>(base: NonNull<u8>, off: usize) -> &'a AtomicU32 {
    // SAFETY: the caller guarantees alignment, bounds and lifetime;
    // `AtomicU32` has the layout of `u32`; every access to shared words is
    // atomic.
    unsafe { &*base.as_ptr().add(off).cast::<AtomicU32>() }
}
