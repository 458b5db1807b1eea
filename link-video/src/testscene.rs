//! Tests only: a deterministic, camera-like moving test picture (I420),
//! and damaged input for decoders. The picture comes
//! from the layered-encoder prototype: sensor noise and textured moving
//! blocks like a camera picture, unlike the flat test pattern of
//! [`crate::TestSrc`] (its PSNR thresholds were measured on this scene).

/// One I420 picture, planes tightly packed.
#[allow(dead_code)]
pub struct Frame {
    pub w: usize,
    pub h: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

fn hash(x: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B1);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85EB_CA77);
    h ^= h >> 13;
    h
}

/// The moving blocks at 1280x720: size, speed (pixels per frame), id.
const BLOCKS: [(usize, usize, f32, f32, u32); 3] = [
    (160, 120, 7.0, 2.0, 1),
    (240, 200, -4.0, 3.0, 2),
    (120, 90, 11.0, -5.0, 3),
];

/// Where a block is in a `w` x `h` picture at time `tf` (bouncing off the
/// edges): (x, y, width, height, id).
fn place(
    &(bw, bh, vx, vy, id): &(usize, usize, f32, f32, u32),
    w: usize,
    h: usize,
    tf: f32,
) -> (usize, usize, usize, usize, u32) {
    let bw = bw * w / 1280;
    let bh = bh * h / 720;
    let span_x = (w - bw) as f32;
    let span_y = (h - bh) as f32;
    let px = ((vx * tf + 200.0 * id as f32).rem_euclid(2.0 * span_x) - span_x).abs() as usize;
    let py = ((vy * tf + 150.0 * id as f32).rem_euclid(2.0 * span_y) - span_y).abs() as usize;
    (px, py, bw, bh, id)
}

/// Frame `t` of the scene: a slowly panning sinusoidal background (separable,
/// so cheap), a static fine-detail band (hash texture, like text), three
/// textured blocks moving at different speeds, and a mild per-frame sensor
/// noise (±2) so that no frame is a pure copy of the previous one.
pub fn frame(w: usize, h: usize, t: usize) -> Frame {
    let tf = t as f32;
    let sx: Vec<f32> = (0..w)
        .map(|x| ((x as f32 + 3.0 * tf) / 37.0).sin())
        .collect();
    let cy: Vec<f32> = (0..h)
        .map(|y| ((y as f32 - 1.5 * tf) / 29.0).cos())
        .collect();
    let mut y = vec![0u8; w * h];
    for r in 0..h {
        let row = &mut y[r * w..(r + 1) * w];
        let base_r = 40.0 + 120.0 * r as f32 / h as f32;
        for (c, px) in row.iter_mut().enumerate() {
            let mut v = base_r + 50.0 * sx[c] * cy[r];
            // static detail band (rows 40%..55%)
            if r * 20 >= h * 8 && r * 20 < h * 11 {
                let bx = (c / 3) as u32;
                let by = (r / 3) as u32;
                v = if hash(bx * 7919 + by * 104_729) & 3 == 0 {
                    230.0
                } else {
                    30.0
                };
            }
            let n = (hash((t as u32).wrapping_mul(2_654_435_761) ^ (r * w + c) as u32) % 5) as f32
                - 2.0;
            *px = (v + n).clamp(0.0, 255.0) as u8;
        }
    }
    // moving textured blocks
    for block in &BLOCKS {
        let (px, py, bw, bh, id) = place(block, w, h, tf);
        for r in 0..bh {
            for c in 0..bw {
                let tex = hash(id * 1_000_003 + ((r / 8) * 97 + c / 8) as u32);
                let v = 60 + (tex % 160) as u8;
                y[(py + r) * w + px + c] = v;
            }
        }
    }
    let (cw, ch) = (w / 2, h / 2);
    let mut u = vec![0u8; cw * ch];
    let mut v = vec![0u8; cw * ch];
    for r in 0..ch {
        for c in 0..cw {
            u[r * cw + c] = (128.0 + 40.0 * ((c as f32 + 2.0 * tf) / 61.0).sin()) as u8;
            v[r * cw + c] = (128.0 + 40.0 * ((r as f32 - tf) / 47.0).cos()) as u8;
        }
    }
    // chroma of the blocks (so they are coloured objects)
    for block in &BLOCKS {
        let (px, py, bw, bh, id) = place(block, w, h, tf);
        for r in py / 2..(py + bh) / 2 {
            for c in px / 2..(px + bw) / 2 {
                u[r * cw + c] = (60 * id) as u8;
                v[r * cw + c] = 255 - (50 * id) as u8;
            }
        }
    }
    Frame { w, h, y, u, v }
}

/// Frame `t` as one packed I420 buffer.
pub fn i420(w: usize, h: usize, t: usize) -> Vec<u8> {
    let f = frame(w, h, t);
    let mut v = f.y;
    v.extend_from_slice(&f.u);
    v.extend_from_slice(&f.v);
    v
}

/// 300 inputs a decoder must survive, made from `aus` (real access units)
/// with a fixed seed: every even one random bytes (up to 3000) behind a
/// start code, every odd one a real access unit with 8 bytes overwritten;
/// every 7th cut in half.
pub fn garbage(aus: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..300)
        .map(|round| {
            let mut buf = if round % 2 == 0 {
                let len = (rnd() % 3000) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                b.splice(0..0, [0, 0, 0, 1, (rnd() as u8 & 0x1f) | 0x60]);
                b
            } else {
                let mut b = aus[(rnd() % aus.len() as u64) as usize].to_vec();
                for _ in 0..8 {
                    let at = (rnd() as usize) % b.len();
                    b[at] = rnd() as u8;
                }
                b
            };
            if round % 7 == 0 {
                buf.truncate(buf.len() / 2);
            }
            buf
        })
        .collect()
}
