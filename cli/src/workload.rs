//! The synthetic workload of `linkstream demo`: frame sizes that average a
//! bitrate with periodic keyframes, and frame contents that carry their
//! index and a checksum so the receiver can check every byte.

/// Frame sizes of the synthetic stream: P-frames around the average, a
/// keyframe 8x larger every `gop` frames, averaging `bitrate_mbps`.
pub fn frame_size(bitrate_mbps: f64, fps: u32, gop: u32, i: u32) -> usize {
    let avg = bitrate_mbps * 1e6 / 8.0 / fps as f64;
    let g = gop as f64;
    let p = avg * g / (g - 1.0 + 8.0);
    let size = if i.is_multiple_of(gop) {
        8.0 * p
    } else {
        // ±25% variation, deterministic.
        let wobble = ((i.wrapping_mul(2_654_435_761) >> 16) % 1000) as f64 / 1000.0 - 0.5;
        p * (1.0 + wobble / 2.0)
    };
    (size as usize).max(32)
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Fill a frame (at least 32 bytes): index, pseudo-random body, FNV
/// checksum of everything before it in the last 8 bytes.
pub fn fill_frame(buf: &mut [u8], index: u32) {
    let n = buf.len();
    let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for chunk in buf[..n - 8].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    buf[..4].copy_from_slice(&index.to_le_bytes());
    let sum = fnv(&buf[..n - 8]);
    buf[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// Whether `data` is the frame [`fill_frame`] wrote for `index`.
pub fn frame_ok(data: &[u8], index: u32) -> bool {
    let n = data.len();
    n >= 32
        && data[..4] == index.to_le_bytes()
        && fnv(&data[..n - 8]).to_le_bytes() == data[n - 8..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_frame_checks_and_a_flipped_byte_does_not() {
        let mut b = vec![0u8; 1000];
        fill_frame(&mut b, 7);
        assert!(frame_ok(&b, 7));
        assert!(!frame_ok(&b, 8));
        b[500] ^= 1;
        assert!(!frame_ok(&b, 7));
    }

    #[test]
    fn sizes_average_the_bitrate() {
        let (fps, gop) = (60, 60);
        let total: usize = (0..600).map(|i| frame_size(20.0, fps, gop, i)).sum();
        let mbps = total as f64 * 8.0 / 10.0 / 1e6;
        assert!((mbps - 20.0).abs() < 1.0, "{mbps}");
        assert!(frame_size(20.0, fps, gop, 0) > 4 * frame_size(20.0, fps, gop, 1));
    }
}
