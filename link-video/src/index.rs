//! The frame index burned into the test pattern's picture (rules
//! `video.testsrc.code`, `video.testsrc.read`): the layout of the code, and
//! the one reader of it, over a luma accessor, used for I420 luma planes
//! ([`read_index`], the native client) and RGBA pixels ([`read_rgba`], the
//! browser's canvas).
//!
//! The top band (`y < B`, `B = min(16, width / 48)` rounded down to even)
//! holds [`CODE_BLOCKS`] blocks of `B`x`B` luma pixels: blocks 0..32 the low
//! 32 bits of the index (LSB first), 32..40 a check byte
//! `!(b0 ^ b1 ^ b2 ^ b3)` of the four index bytes, 40..48 alternating
//! white/black (white first) as a sync marker. White is Y [`WHITE`], black
//! Y [`BLACK`].

/// Luma of a white code block.
pub const WHITE: u8 = 235;
/// Luma of a black code block.
pub const BLACK: u8 = 16;
/// Number of blocks in the code row.
pub const CODE_BLOCKS: usize = 48;
/// Smallest width the code fits in (block size 8).
pub const MIN_WIDTH: usize = 384;

/// The code block size for a picture width: `min(16, width / 48)` rounded
/// down to even; `None` if that is below 8.
pub fn block_size(width: usize) -> Option<usize> {
    let b = (width / CODE_BLOCKS).min(16) & !1;
    (b >= 8).then_some(b)
}

/// The 48 bits of the code for an index: 32 index bits, the check byte,
/// then the marker; bit `i` is block `i` (set: white).
pub fn code_bits(index: u64) -> u64 {
    let low = index as u32;
    let b = low.to_le_bytes();
    let check = !(b[0] ^ b[1] ^ b[2] ^ b[3]);
    let marker: u64 = 0b0101_0101; // block 40 white, 41 black, ...
    u64::from(low) | (u64::from(check) << 32) | (marker << 40)
}

/// Extends the low 32 bits read from a picture to the full index nearest to
/// `expected` (the index the caller expects around this frame).
pub fn unwrap_index(low32: u64, expected: u64) -> u64 {
    let low32 = low32 & 0xFFFF_FFFF;
    let base = expected & !0xFFFF_FFFF;
    let candidates = [
        base.checked_sub(1 << 32).map(|b| b | low32),
        Some(base | low32),
        base.checked_add(1 << 32).map(|b| b | low32),
    ];
    candidates
        .into_iter()
        .flatten()
        .min_by_key(|c| c.abs_diff(expected))
        .unwrap_or(low32)
}

// r[impl video.testsrc.read]
/// Reads the code from a picture `width` pixels wide and at least `rows`
/// high through `luma(x, y)`, which is only called for `x < width` and
/// `y < block_size(width)`: the low 32 bits of the index, or `None` if the
/// width has no code, `rows` is below the block size, or the sync marker or
/// the check byte does not match. A block's bit is set when the mean luma
/// of its central `B/2`x`B/2` pixels is above 128.
pub fn read_with(width: usize, rows: usize, luma: impl Fn(usize, usize) -> u8) -> Option<u64> {
    let b = block_size(width)?;
    if rows < b {
        return None;
    }
    let (r0, c0, n) = (b / 4, b / 4, b / 2);
    let mut bits = 0u64;
    for i in 0..CODE_BLOCKS {
        let x0 = i * b + c0;
        let sum: u32 = (r0..r0 + n)
            .flat_map(|y| (x0..x0 + n).map(move |x| (x, y)))
            .map(|(x, y)| u32::from(luma(x, y)))
            .sum();
        // mean > 128  <=>  sum > 128 * count
        if sum > 128 * (n * n) as u32 {
            bits |= 1 << i;
        }
    }
    let low = bits & 0xFFFF_FFFF;
    (code_bits(low) == bits).then_some(low)
}

/// Reads the burned-in index from an I420 Y plane (`width * height` bytes,
/// rows packed): the low 32 bits of the frame index (extend them with
/// [`unwrap_index`]), or `None` as [`read_with`].
pub fn read_index(y_plane: &[u8], width: usize, height: usize) -> Option<u64> {
    if y_plane.len() < width.checked_mul(height)? {
        return None;
    }
    read_with(width, height, |x, y| y_plane[y * width + x])
}

// r[impl video.scale.index]
/// Reads the burned-in index from the Y plane of rendition `shift`: a
/// `width` x `height` picture that is the coded picture halved `shift`
/// times ([`crate::scale::half_i420`]). The code is read at the source's
/// geometry (`width << shift`), each source pixel from the rendition pixel
/// that covers it. `None` as [`read_with`].
pub fn read_index_scaled(y_plane: &[u8], width: usize, height: usize, shift: u8) -> Option<u64> {
    if shift > 3 || y_plane.len() < width.checked_mul(height)? {
        return None;
    }
    let s = u32::from(shift);
    read_with(width << s, height << s, |x, y| {
        y_plane[(y >> s) * width + (x >> s)]
    })
}

/// [`read_rgba`] for rendition `shift` (see [`read_index_scaled`]):
/// `rgba` holds `width`-pixel rows of the rendition.
pub fn read_rgba_scaled(rgba: &[u8], width: usize, shift: u8) -> Option<u64> {
    if shift > 3 {
        return None;
    }
    let s = u32::from(shift);
    let rows = rgba.len() / width.checked_mul(4)?.max(1);
    read_with(width << s, rows << s, |x, y| {
        let p = ((y >> s) * width + (x >> s)) * 4;
        ((u16::from(rgba[p]) + u16::from(rgba[p + 1]) + u16::from(rgba[p + 2])) / 3) as u8
    })
}

/// Reads the burned-in index from RGBA pixels (`width` pixels per row, at
/// least the top `block_size(width)` rows, as a canvas's `getImageData`
/// gives them). A pixel's luma is `(R + G + B) / 3`. The low 32 bits of the
/// index, or `None` as [`read_with`].
pub fn read_rgba(rgba: &[u8], width: usize) -> Option<u64> {
    let rows = rgba.len() / width.checked_mul(4)?.max(1);
    read_with(width, rows, |x, y| {
        let p = (y * width + x) * 4;
        ((u16::from(rgba[p]) + u16::from(rgba[p + 1]) + u16::from(rgba[p + 2])) / 3) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paints the code into an RGBA picture with a noisy background, the
    /// way a canvas shows a decoded test pattern.
    fn paint_rgba(index: u64, width: usize, height: usize) -> Vec<u8> {
        let b = block_size(width).unwrap();
        let mut px = vec![0u8; width * height * 4];
        for (n, p) in px.chunks_mut(4).enumerate() {
            let v = (n * 37 % 251) as u8;
            p.copy_from_slice(&[v, v, v, 255]);
        }
        let bits = code_bits(index);
        for i in 0..CODE_BLOCKS {
            let y = if bits >> i & 1 == 1 { WHITE } else { BLACK };
            for row in 0..b {
                for x in i * b..(i + 1) * b {
                    let p = (row * width + x) * 4;
                    px[p..p + 4].copy_from_slice(&[y, y, y, 255]);
                }
            }
        }
        px
    }

    /// The luma plane of the same picture.
    fn luma_of(rgba: &[u8]) -> Vec<u8> {
        rgba.chunks(4)
            .map(|p| ((p[0] as u16 + p[1] as u16 + p[2] as u16) / 3) as u8)
            .collect()
    }

    // r[verify video.testsrc.read]
    #[test]
    fn rgba_and_luma_readers_read_what_was_painted() {
        for (w, h) in [(1280, 720), (384, 64), (1920, 1080), (640, 360)] {
            for index in [0u64, 1, 0x1234_5678, u32::MAX as u64] {
                let px = paint_rgba(index, w, h);
                assert_eq!(read_rgba(&px, w), Some(index), "{w}x{h}");
                // Only the band is needed.
                let b = block_size(w).unwrap();
                assert_eq!(read_rgba(&px[..w * b * 4], w), Some(index));
                assert_eq!(read_index(&luma_of(&px), w, h), Some(index));
            }
        }
    }

    // r[verify video.scale.index]
    #[test]
    fn a_rendition_reads_through_the_scaling_it_was_made_with() {
        let (w, h) = (1280usize, 720usize);
        for index in [5u64, 0x00ab_cdef] {
            let px = paint_rgba(index, w, h);
            let mut i420 = luma_of(&px);
            i420.resize(crate::i420_len(w, h), 128);
            let mut half = vec![0u8; crate::i420_len(w / 2, h / 2)];
            crate::scale::half_i420(&i420, w, h, &mut half).unwrap();
            let mut quarter = vec![0u8; crate::i420_len(w / 4, h / 4)];
            crate::scale::half_i420(&half, w / 2, h / 2, &mut quarter).unwrap();
            assert_eq!(read_index_scaled(&half, w / 2, h / 2, 1), Some(index));
            assert_eq!(read_index_scaled(&quarter, w / 4, h / 4, 2), Some(index));
            // Read at the rendition's own geometry, the blocks do not line up.
            assert_eq!(read_index(&half, w / 2, h / 2), None);
            assert_eq!(read_index_scaled(&half, w / 2, h / 2, 0), None);
            // The same from RGBA rows of the rendition, as a canvas shows it.
            let rgba: Vec<u8> = half[..w / 2 * h / 2]
                .iter()
                .flat_map(|&y| [y, y, y, 255])
                .collect();
            assert_eq!(read_rgba_scaled(&rgba, w / 2, 1), Some(index));
            assert_eq!(read_rgba(&rgba, w / 2), None);
        }
        // Out-of-range shifts and short planes read as nothing.
        assert_eq!(read_index_scaled(&[0; 64], 8, 8, 4), None);
        assert_eq!(read_index_scaled(&[0; 10], 640, 360, 1), None);
        assert_eq!(read_rgba_scaled(&[], 0, 1), None);
    }

    // r[verify video.testsrc.read]
    #[test]
    fn damaged_codes_and_small_pictures_read_as_nothing() {
        let w = 1280;
        let mut px = paint_rgba(42, w, 32);
        // 42 has bit 0 clear, so block 0 is black; paint it white: the
        // check byte no longer matches.
        for row in 0..16 {
            for x in 0..16 {
                let p = (row * w + x) * 4;
                px[p..p + 3].copy_from_slice(&[235, 235, 235]);
            }
        }
        assert_eq!(read_rgba(&px, w), None);
        assert_eq!(read_rgba(&vec![128u8; w * 32 * 4], w), None);
        assert_eq!(block_size(383), None);
        assert_eq!(block_size(1000), Some(16));
        assert_eq!(block_size(500), Some(10));
        // Too few rows, too narrow, empty, zero width: nothing, no panic.
        let ok = paint_rgba(7, w, 32);
        assert_eq!(read_rgba(&ok[..w * 15 * 4], w), None);
        assert_eq!(read_rgba(&[0; 16], 1280), None);
        assert_eq!(read_rgba(&[], 0), None);
        assert_eq!(read_index(&[], 0, 0), None);
        assert_eq!(read_index(&luma_of(&ok)[..100], w, 32), None);
        assert_eq!(read_index(&luma_of(&ok), usize::MAX, 2), None);
    }

    /// An RGBA picture whose code blocks are painted by `luma(white,
    /// centre)`: `centre` is whether the pixel lies in the block's central
    /// `B/2`x`B/2` square, the only part the reader looks at.
    fn paint_blocks(
        index: u64,
        width: usize,
        height: usize,
        luma: impl Fn(bool, bool) -> u8,
    ) -> Vec<u8> {
        let b = block_size(width).unwrap();
        let mut px = paint_rgba(index, width, height);
        let bits = code_bits(index);
        let inner = |d: usize| (b / 4..b / 4 + b / 2).contains(&d);
        for i in 0..CODE_BLOCKS {
            for row in 0..b {
                for x in i * b..(i + 1) * b {
                    let y = luma(bits >> i & 1 == 1, inner(row) && inner(x - i * b));
                    let p = (row * width + x) * 4;
                    px[p..p + 3].copy_from_slice(&[y, y, y]);
                }
            }
        }
        px
    }

    // r[verify video.testsrc.read]
    /// Only a block's central square counts: a ring of the opposite colour
    /// around it (a codec's ringing at block edges, worst case) reads
    /// correctly, through both readers.
    #[test]
    fn only_the_central_square_of_each_block_is_read() {
        for w in [384, 500, 640, 1280] {
            for index in [1u64, 0x00FF_00FF, 0xA5A5_5A5A] {
                let px = paint_blocks(
                    index,
                    w,
                    64,
                    |white, centre| {
                        if white == centre { WHITE } else { BLACK }
                    },
                );
                assert_eq!(read_rgba(&px, w), Some(index), "rgba {w}");
                assert_eq!(read_index(&luma_of(&px), w, 64), Some(index), "luma {w}");
            }
        }
    }

    // r[verify video.testsrc.read]
    /// A block is white when its mean luma is *above* 128: a mean of
    /// exactly 128 is black.
    #[test]
    fn a_mean_of_exactly_128_is_black() {
        let w = 1280;
        let px = paint_blocks(0x1234_5678, w, 32, |white, _| if white { 129 } else { 128 });
        assert_eq!(read_rgba(&px, w), Some(0x1234_5678));
        assert_eq!(read_index(&luma_of(&px), w, 32), Some(0x1234_5678));
    }

    // r[verify video.testsrc.read]
    /// A pixel's luma is the mean of R, G and B: coloured blocks whose
    /// class only the three channels together give (any one channel
    /// alone, or alpha, says the opposite) read correctly.
    #[test]
    fn rgba_luma_is_the_mean_of_the_three_channels() {
        let w = 640;
        let mut px = paint_rgba(0x0BAD_CAFE, w, 16);
        let b = block_size(w).unwrap();
        let bits = code_bits(0x0BAD_CAFE);
        for i in 0..CODE_BLOCKS {
            // White: mean 170 of (0, 255, 255); black: mean 85 of (255, 0, 0);
            // alpha 0.
            let c = if bits >> i & 1 == 1 {
                [0, 255, 255, 0]
            } else {
                [255, 0, 0, 0]
            };
            for row in 0..b {
                for x in i * b..(i + 1) * b {
                    let p = (row * w + x) * 4;
                    px[p..p + 4].copy_from_slice(&c);
                }
            }
        }
        assert_eq!(read_rgba(&px, w), Some(0x0BAD_CAFE));
    }

    #[test]
    fn the_low_32_bits_extend_to_the_nearest_index() {
        assert_eq!(unwrap_index(5, 3), 5);
        assert_eq!(unwrap_index(1, u32::MAX as u64), (1u64 << 32) | 1);
        assert_eq!(unwrap_index(u32::MAX as u64, 1 << 32), u32::MAX as u64);
        assert_eq!(unwrap_index(9, (7 << 32) | 12), (7 << 32) | 9);
    }
}
