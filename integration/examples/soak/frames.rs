//! The synthetic stream every session carries: frame `i`'s length, flags
//! and bytes all follow from `i`, so the host writes them and each viewer
//! checks them without sharing anything else.

use link_session::FrameFlags;

/// A keyframe every this many frames.
const KEY_EVERY: u32 = 60;
/// Bytes of a keyframe.
const KEY_LEN: usize = 8000;
/// Frame header: index and frame count, little-endian u32 each.
const HEAD: usize = 8;
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn frame_len(i: u32) -> usize {
    if i.is_multiple_of(KEY_EVERY) {
        KEY_LEN
    } else {
        1000 + (mix(u64::from(i) ^ 0xA5A5_0000) % 600) as usize
    }
}

pub(crate) fn flags(i: u32) -> FrameFlags {
    if i.is_multiple_of(KEY_EVERY) {
        FrameFlags::KEYFRAME
    } else {
        FrameFlags::NONE
    }
}

/// Frame `i` of a stream of `total`: header, then bytes drawn from `i`.
pub(crate) fn fill_frame(i: u32, total: u32, out: &mut [u8]) {
    out[..4].copy_from_slice(&i.to_le_bytes());
    out[4..HEAD].copy_from_slice(&total.to_le_bytes());
    let mut s = (u64::from(i) << 32) | 0x5EED;
    for chunk in out[HEAD..].chunks_mut(8) {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let w = mix(s).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}
