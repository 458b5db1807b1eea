//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz). Not an API:
//! hidden from the docs and not covered by semver. They drive the same
//! validation the link runs on a peer's offer and on the ring, with bytes
//! the fuzzer chooses instead of a hostile process's.

use std::sync::atomic::Ordering;

use crate::region::{Class, Geometry, Layout, Memory, Region};
use crate::ring::{Msg, Place, RingRx, RingTx, release, slot_bytes};
use crate::sys::Mapping;

/// A peer's offer: a segment whose first bytes (its header) are `data[8..]`,
/// created `data[0..4]` bytes long (at most 1 MiB) and announced as
/// `data[4..8]` bytes long, opened the way the joining side opens it. On
/// success, a reader takes what the (garbage) ring holds in both directions.
/// Returns the refusal reason, if any.
pub fn open_segment(data: &[u8]) -> Result<(), String> {
    if data.len() < 8 {
        return Err("short input".into());
    }
    let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    let created = (word(0) as usize % (1 << 20)).max(4096);
    let announced = word(4) as usize % (1 << 21);
    let (map, fd) = Mapping::create(created).map_err(|e| e.to_string())?;
    for (i, chunk) in data[8..].chunks(4).enumerate() {
        if (i + 1) * 4 > created {
            break;
        }
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        map.word(i * 4)
            .store(u32::from_le_bytes(w), Ordering::Relaxed);
    }
    drop(map);
    let map = Mapping::map(&fd, announced).map_err(|e| e.to_string())?;
    let region = Region::open(map)?;
    for dir in 0..2 {
        drain(&region, dir, region.layout.ring_len + 1);
    }
    Ok(())
}

/// Take up to `limit` messages; read every slot's bytes (bounds-checked by
/// the region) and give it back. Stops at the first fault.
fn drain(region: &std::sync::Arc<Region>, dir: usize, limit: usize) -> usize {
    let mut rx = RingRx::new(region.clone(), dir);
    let mut taken = 0;
    for _ in 0..limit {
        match rx.try_take() {
            Ok(Some((Msg::Inline(b), _))) => {
                std::hint::black_box(b.iter().map(|&x| x as u32).sum::<u32>());
            }
            Ok(Some((Msg::Slot { class, index, len }, _))) => {
                // SAFETY: a slot just received from this region and
                // direction, not yet released; the slice is dropped before
                // `release` and before the region.
                let b = unsafe { slot_bytes(region, dir, class, index, len) };
                std::hint::black_box(b.iter().map(|&x| x as u32).sum::<u32>());
                release(region, dir, class, index);
            }
            Ok(None) | Err(_) => break,
        }
        taken += 1;
    }
    let _ = rx.publish_tail();
    taken
}

/// The geometry of [`garbled_ring`]'s segment: small, so that the fuzzer's
/// word writes land on rings, descriptors and states often.
fn small_geometry() -> Geometry {
    Geometry {
        small_size: 192,
        small_count: 3,
        large_size: 512,
        large_count: 2,
    }
}

/// A valid segment with messages of every size class published in
/// direction 0 (and some taken), then garbled by `data`: each 6 bytes are a
/// word offset (`u16`, modulo the segment's words) and a value to store
/// there. A reader then takes whatever the ring says, and a writer checks
/// for room and state; both must end in messages inside the segment or a
/// fault, never an access out of bounds, a panic or a hang. Returns how
/// many messages the reader took.
pub fn garbled_ring(data: &[u8]) -> usize {
    let layout = Layout::new(small_geometry()).expect("valid geometry");
    let (map, _fd) = Mapping::create(layout.total).expect("memfd");
    let region = Region::init(Memory::Mapped(map), layout);
    let mut tx = RingTx::new(region.clone(), 0);
    // Messages inline, in small and in large slots.
    let pre = data.first().copied().unwrap_or(0) as usize % 8;
    for (i, len) in [0usize, 100, 150, 400, 7, 192, 500, 64]
        .into_iter()
        .enumerate()
        .take(pre)
    {
        if !tx.has_room().unwrap_or(false) {
            break;
        }
        let place = if len <= crate::region::INLINE_MAX {
            Place::Inline
        } else if len <= region.class_size(Class::Small)
            && let Some(s) = tx.take_slot(Class::Small)
        {
            Place::Slot(Class::Small, s)
        } else if let Some(l) = tx.take_slot(Class::Large) {
            Place::Slot(Class::Large, l)
        } else {
            break;
        };
        let p = tx.payload(place, len);
        // SAFETY: `payload` bounds-checked `len` bytes at `place`, which
        // this writer owns until it publishes them.
        unsafe { std::ptr::write_bytes(p, i as u8, len) };
        tx.publish(place, len);
    }
    let words = layout.total / 4;
    for w in data.get(1..).unwrap_or(&[]).chunks_exact(6) {
        let off = u16::from_le_bytes([w[0], w[1]]) as usize;
        // Offsets spread over the whole segment, scaled so that a u16 can
        // reach every word.
        let i = off * words / 65536;
        let v = u32::from_le_bytes([w[2], w[3], w[4], w[5]]);
        region.word(i * 4).store(v, Ordering::Relaxed);
    }
    let taken = drain(&region, 0, 4 * layout.ring_len);
    let _ = tx.reader_state();
    for _ in 0..layout.ring_len + 1 {
        match tx.has_room() {
            Ok(true) => {
                tx.publish(Place::Inline, 0);
            }
            _ => break,
        }
    }
    taken
}

/// A real offer in [`open_segment`]'s input format: the sizes and the
/// header of a segment laid out as [`garbled_ring`]'s, with messages
/// published in direction 0 (a seed for the fuzzer's corpus).
pub fn real_offer() -> Vec<u8> {
    let layout = Layout::new(small_geometry()).expect("valid geometry");
    let (map, _fd) = Mapping::create(layout.total).expect("memfd");
    let region = Region::init(Memory::Mapped(map), layout);
    let mut tx = RingTx::new(region.clone(), 0);
    for len in [3usize, 150] {
        let place = if len <= crate::region::INLINE_MAX {
            Place::Inline
        } else {
            Place::Slot(Class::Small, tx.take_slot(Class::Small).expect("free"))
        };
        tx.publish(place, len);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(layout.total as u32).to_le_bytes());
    out.extend_from_slice(&(layout.total as u32).to_le_bytes());
    // The header and the start of direction 0 (its control words and the
    // first ring entries).
    let upto = layout.total.min(4096);
    for off in (0..upto).step_by(4) {
        out.extend_from_slice(&region.word(off).load(Ordering::Relaxed).to_le_bytes());
    }
    out
}
