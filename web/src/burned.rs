//! The frame index burned into the testsrc picture (VIDEO-CONTRACT section
//! 2), read back from RGBA pixels such as a canvas's `getImageData`.

/// The code's block size for a picture `width` pixels wide:
/// `min(16, width / 48)` rounded down to even; `None` below 8.
pub fn block_size(width: usize) -> Option<usize> {
    let b = (width / 48).min(16) & !1;
    (b >= 8).then_some(b)
}

// r[impl web.canvas-index]
/// Read the low 32 bits of the burned-in index from RGBA pixels (`width`
/// pixels per row, at least the top `block_size` rows). Luma is
/// (R+G+B)/3; a block's bit is its central (B/2)x(B/2) mean above 128.
/// `None` if the picture is too small, the sync marker or the check byte
/// does not match.
pub fn read_rgba(rgba: &[u8], width: usize) -> Option<u32> {
    let b = block_size(width)?;
    if rgba.len() < width * b * 4 {
        return None;
    }
    let q = b / 4;
    let bit = |i: usize| {
        let mut sum = 0u32;
        for y in q..q + b / 2 {
            for x in i * b + q..i * b + q + b / 2 {
                let p = (y * width + x) * 4;
                sum += (rgba[p] as u32 + rgba[p + 1] as u32 + rgba[p + 2] as u32) / 3;
            }
        }
        sum / ((b / 2) * (b / 2)) as u32 > 128
    };
    if (0..8).any(|j| bit(40 + j) != (j % 2 == 0)) {
        return None;
    }
    let mut v = 0u64;
    for i in 0..40 {
        v |= (bit(i) as u64) << i;
    }
    let index = v as u32;
    let check = (v >> 32) as u8;
    let [b0, b1, b2, b3] = index.to_le_bytes();
    (check == !(b0 ^ b1 ^ b2 ^ b3)).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paint the code the way the contract describes (white 235, black 16)
    /// into an RGBA picture with a noisy background.
    fn paint(index: u32, width: usize, height: usize) -> Vec<u8> {
        let b = block_size(width).unwrap();
        let mut px = vec![0u8; width * height * 4];
        for (n, p) in px.chunks_mut(4).enumerate() {
            let v = (n * 37 % 251) as u8;
            p.copy_from_slice(&[v, v, v, 255]);
        }
        let [b0, b1, b2, b3] = index.to_le_bytes();
        let bits = index as u64 | ((!(b0 ^ b1 ^ b2 ^ b3) as u64) << 32);
        for i in 0..48 {
            let on = if i < 40 {
                bits >> i & 1 == 1
            } else {
                i % 2 == 0
            };
            let y = if on { 235 } else { 16 };
            for row in 0..b {
                for x in i * b..(i + 1) * b {
                    let p = (row * width + x) * 4;
                    px[p..p + 4].copy_from_slice(&[y, y, y, 255]);
                }
            }
        }
        px
    }

    #[test]
    fn reads_what_was_painted() {
        for (w, h) in [(1280, 720), (384, 64), (1920, 1080), (640, 360)] {
            for index in [0u32, 1, 0x1234_5678, u32::MAX] {
                assert_eq!(read_rgba(&paint(index, w, h), w), Some(index), "{w}x{h}");
            }
        }
    }

    // r[verify web.canvas-index]
    #[test]
    fn refuses_bad_marker_check_byte_and_small_pictures() {
        let w = 1280;
        let mut px = paint(42, w, 32);
        // Flip block 0's bit: the check byte no longer matches.
        for row in 0..16 {
            for x in 0..16 {
                let p = (row * w + x) * 4;
                px[p..p + 3].copy_from_slice(&[235, 235, 235]);
            }
        }
        // 42 has bit 0 clear, so block 0 was black.
        assert_eq!(read_rgba(&px, w), None);
        let blank = vec![128u8; w * 32 * 4];
        assert_eq!(read_rgba(&blank, w), None);
        assert_eq!(block_size(383), None);
        assert_eq!(block_size(1000), Some(16));
        assert_eq!(block_size(500), Some(10));
        assert_eq!(read_rgba(&[0; 16], 1280), None);
    }
}
