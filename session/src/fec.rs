//! Reed-Solomon forward error correction over blocks of shards
//! (`session.fec.*`).
//!
//! A frame is cut into `n = ceil(len / shard_size)` data shards (at least one;
//! the last is zero-padded for coding and sent trimmed). The data shards are
//! spread as evenly as possible over `ceil(n / max_k)` blocks, and each block
//! of `k` data shards gets `m` parity shards. Two coders:
//! - GF(2^8), `reed-solomon-erasure`: `k + m ≤ 255`, blocks of at most
//!   [`RS8_MAX_DATA`] data shards;
//! - GF(2^16), `reed-solomon-simd`: one block up to [`RS16_MAX_DATA`] data
//!   shards, O(n log n) coding.

use std::collections::HashMap;
use std::fmt;

use reed_solomon_erasure::galois_8::ReedSolomon as Rs8;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// The GF(2^8) coder's id on the wire.
pub const CODER_RS8: u8 = 1;
/// The GF(2^16) coder's id on the wire.
pub const CODER_RS16: u8 = 2;

/// Most data shards in one GF(2^8) block (so that `k + m ≤ 255` with up
/// to 100% parity... and a block stays cheap to code).
pub const RS8_MAX_DATA: usize = 64;
/// Most data shards in one GF(2^16) block.
pub const RS16_MAX_DATA: usize = 16384;
/// Most parity shards in one block beyond its data shard count
/// (`m ≤ max(k, MAX_MIN_PARITY)`).
pub const MAX_MIN_PARITY: usize = 16;

/// Which coder protects a frame's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FecScheme {
    /// GF(2^8) for frames of at most `auto_threshold` data shards, GF(2^16)
    /// above (the default; the threshold was picked by measurement, see
    /// BENCHMARKS.md).
    Auto,
    /// Always GF(2^8) (`reed-solomon-erasure`).
    Rs8,
    /// Always GF(2^16) (`reed-solomon-simd`).
    Rs16,
}

impl FecScheme {
    /// The wire id of the scheme.
    pub fn to_u8(self) -> u8 {
        match self {
            FecScheme::Auto => 0,
            FecScheme::Rs8 => CODER_RS8,
            FecScheme::Rs16 => CODER_RS16,
        }
    }

    /// Decode a scheme id.
    pub fn from_u8(b: u8) -> Option<FecScheme> {
        Some(match b {
            0 => FecScheme::Auto,
            CODER_RS8 => FecScheme::Rs8,
            CODER_RS16 => FecScheme::Rs16,
            _ => return None,
        })
    }

    /// The coder for a frame of `n` data shards.
    pub fn coder_for(self, n: usize, auto_threshold: usize) -> u8 {
        match self {
            FecScheme::Rs8 => CODER_RS8,
            FecScheme::Rs16 => CODER_RS16,
            FecScheme::Auto if n <= auto_threshold => CODER_RS8,
            FecScheme::Auto => CODER_RS16,
        }
    }
}

/// Data shards per block allowed for `coder`.
pub fn max_data(coder: u8) -> usize {
    if coder == CODER_RS16 {
        RS16_MAX_DATA
    } else {
        RS8_MAX_DATA
    }
}

// r[impl session.fec.blocks]
/// How a frame is cut into shards and blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Data shards in the frame.
    pub n: usize,
    /// Blocks in the frame.
    pub blocks: usize,
    base: usize,
    extra: usize,
}

impl Layout {
    /// The layout of a frame of `len` bytes in shards of `s` bytes, at most
    /// `max_k` data shards per block.
    pub fn new(len: usize, s: usize, max_k: usize) -> Layout {
        let n = len.div_ceil(s).max(1);
        let blocks = n.div_ceil(max_k);
        Layout {
            n,
            blocks,
            base: n / blocks,
            extra: n % blocks,
        }
    }

    /// First data shard (frame-wide index) and data shard count of `block`.
    pub fn block(&self, block: usize) -> (usize, usize) {
        let k = self.base + usize::from(block < self.extra);
        let start = block * self.base + block.min(self.extra);
        (start, k)
    }
}

/// Parity shards for a block of `k` data shards at `pct` percent, at least
/// `min` (and within the coder's limits).
pub fn parity_for(coder: u8, k: usize, pct: u8, min: u8) -> usize {
    let m = (k * pct as usize).div_ceil(100).max(min as usize);
    let m = m.min(k.max(MAX_MIN_PARITY));
    if coder == CODER_RS8 {
        m.min(255 - k)
    } else {
        m
    }
}

/// A coding failure (a bug or a hostile header that slipped past checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecError(pub String);

impl fmt::Display for FecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FEC: {}", self.0)
    }
}

impl std::error::Error for FecError {}

fn err(e: impl fmt::Display) -> FecError {
    FecError(e.to_string())
}

/// Computes parity shards; keeps coder tables and buffers between frames.
#[derive(Default)]
pub struct FecEncoder {
    rs8: HashMap<(usize, usize), Rs8>,
    rs16: Option<ReedSolomonEncoder>,
    parity: Vec<Vec<u8>>,
    pad: Vec<u8>,
}

impl FecEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    // r[impl session.fec.coders]
    /// Parity for one block: `data` holds the block's bytes (`≤ k * s`; the
    /// rest is taken as zeros). Returns `m` shards of `s` bytes.
    pub fn encode(
        &mut self,
        coder: u8,
        data: &[u8],
        k: usize,
        m: usize,
        s: usize,
    ) -> Result<&[Vec<u8>], FecError> {
        if data.len() > k * s || k == 0 {
            return Err(FecError(format!(
                "{} bytes do not fit {k} shards of {s}",
                data.len()
            )));
        }
        self.parity.resize_with(m, Vec::new);
        for p in &mut self.parity[..m] {
            p.resize(s, 0);
        }
        if m == 0 {
            return Ok(&self.parity[..0]);
        }
        // The last shard, zero-padded, when the data ends inside it.
        let full = data.len() / s;
        let tail = &data[full * s..];
        self.pad.clear();
        self.pad.resize(s, 0);
        self.pad[..tail.len()].copy_from_slice(tail);
        fn shard<'a>(
            data: &'a [u8],
            pad: &'a [u8],
            full: usize,
            s: usize,
            i: usize,
        ) -> Option<&'a [u8]> {
            if i < full {
                Some(&data[i * s..(i + 1) * s])
            } else if i == full {
                Some(pad)
            } else {
                None
            }
        }
        match coder {
            CODER_RS8 => {
                if k + m > 255 {
                    return Err(FecError(format!("{k} + {m} shards exceed GF(2^8)")));
                }
                let rs = match self.rs8.entry((k, m)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(Rs8::new(k, m).map_err(err)?)
                    }
                };
                let zeros = vec![0u8; if full + 1 < k { s } else { 0 }];
                let shards: Vec<&[u8]> = (0..k)
                    .map(|i| shard(data, &self.pad, full, s, i).unwrap_or(&zeros))
                    .collect();
                rs.encode_sep(&shards, &mut self.parity[..m]).map_err(err)?;
            }
            CODER_RS16 => {
                let enc = match &mut self.rs16 {
                    Some(e) => {
                        e.reset(k, m, s).map_err(err)?;
                        e
                    }
                    None => self
                        .rs16
                        .insert(ReedSolomonEncoder::new(k, m, s).map_err(err)?),
                };
                let zeros = vec![0u8; if full + 1 < k { s } else { 0 }];
                for i in 0..k {
                    enc.add_original_shard(shard(data, &self.pad, full, s, i).unwrap_or(&zeros))
                        .map_err(err)?;
                }
                let out = enc.encode().map_err(err)?;
                for (dst, src) in self.parity[..m].iter_mut().zip(out.recovery_iter()) {
                    dst.copy_from_slice(src);
                }
            }
            c => return Err(FecError(format!("unknown coder {c}"))),
        }
        Ok(&self.parity[..m])
    }
}

/// Rebuilds missing data shards; keeps coder tables between frames.
#[derive(Default)]
pub struct FecDecoder {
    rs8: HashMap<(usize, usize), Rs8>,
    rs16: Option<ReedSolomonDecoder>,
}

impl FecDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild the missing data shards of one block in place. `data` is the
    /// block's `k * s` bytes, `have` says which data shards arrived, and
    /// `parity` holds the parity shards that arrived. Needs at least `k`
    /// shards in all.
    pub fn recover(
        &mut self,
        coder: u8,
        s: usize,
        data: &mut [u8],
        have: &[bool],
        parity: &[Option<Vec<u8>>],
    ) -> Result<(), FecError> {
        let k = have.len();
        let m = parity.len();
        let present = have.iter().filter(|h| **h).count() + parity.iter().flatten().count();
        if data.len() != k * s || present < k {
            return Err(FecError(format!("{present} of {k} shards are not enough")));
        }
        if parity.iter().flatten().any(|p| p.len() != s) {
            return Err(FecError("parity shard of the wrong size".into()));
        }
        match coder {
            CODER_RS8 => {
                let rs = match self.rs8.entry((k, m)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(Rs8::new(k, m).map_err(err)?)
                    }
                };
                let mut spare: Vec<Vec<u8>> = parity
                    .iter()
                    .map(|p| p.clone().unwrap_or_else(|| vec![0; s]))
                    .collect();
                let mut slices: Vec<(&mut [u8], bool)> =
                    data.chunks_mut(s).zip(have).map(|(c, h)| (c, *h)).collect();
                for (p, was) in spare.iter_mut().zip(parity) {
                    slices.push((p.as_mut_slice(), was.is_some()));
                }
                rs.reconstruct_data(&mut slices).map_err(err)?;
            }
            CODER_RS16 => {
                let dec = match &mut self.rs16 {
                    Some(d) => {
                        d.reset(k, m, s).map_err(err)?;
                        d
                    }
                    None => self
                        .rs16
                        .insert(ReedSolomonDecoder::new(k, m, s).map_err(err)?),
                };
                for (i, chunk) in data.chunks(s).enumerate() {
                    if have[i] {
                        dec.add_original_shard(i, chunk).map_err(err)?;
                    }
                }
                for (i, p) in parity.iter().enumerate() {
                    if let Some(p) = p {
                        dec.add_recovery_shard(i, p).map_err(err)?;
                    }
                }
                let out = dec.decode().map_err(err)?;
                for (i, shard) in out.restored_original_iter() {
                    if i < k {
                        data[i * s..(i + 1) * s].copy_from_slice(shard);
                    }
                }
            }
            c => return Err(FecError(format!("unknown coder {c}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_spreads_shards_evenly_and_covers_the_frame() {
        for len in [0usize, 1, 1399, 1400, 1401, 100_000, 1_000_000] {
            for max_k in [1, 7, 64, 16384] {
                let l = Layout::new(len, 1400, max_k);
                let mut next = 0;
                for b in 0..l.blocks {
                    let (start, k) = l.block(b);
                    assert_eq!(start, next);
                    assert!(k >= 1 && k <= max_k);
                    next += k;
                }
                assert_eq!(next, l.n);
            }
        }
    }

    // r[verify session.fec.coders]
    #[test]
    fn both_coders_recover_any_k_of_k_plus_m() {
        let s = 64;
        for coder in [CODER_RS8, CODER_RS16] {
            for (k, m) in [(1usize, 1usize), (5, 2), (10, 3), (30, 6)] {
                let data: Vec<u8> = (0..k * s - 17).map(|i| (i * 31 + k) as u8).collect();
                let mut enc = FecEncoder::new();
                let parity: Vec<Vec<u8>> = enc.encode(coder, &data, k, m, s).unwrap().to_vec();
                // Lose the first m data shards (the worst case for a systematic code).
                let lost = m.min(k);
                let mut buf = vec![0u8; k * s];
                buf[..data.len()].copy_from_slice(&data);
                let mut have = vec![true; k];
                for h in have.iter_mut().take(lost) {
                    *h = false;
                }
                for i in 0..lost {
                    buf[i * s..(i + 1) * s].fill(0xEE);
                }
                let par: Vec<Option<Vec<u8>>> = parity.into_iter().map(Some).collect();
                FecDecoder::new()
                    .recover(coder, s, &mut buf, &have, &par)
                    .unwrap();
                assert_eq!(&buf[..data.len()], &data[..], "coder {coder} k {k} m {m}");
            }
        }
    }

    #[test]
    fn too_few_shards_is_an_error_not_garbage() {
        let s = 32;
        let data = vec![9u8; 4 * s];
        let parity = FecEncoder::new()
            .encode(CODER_RS8, &data, 4, 1, s)
            .unwrap()
            .to_vec();
        let mut buf = data.clone();
        let have = [false, false, true, true];
        let r =
            FecDecoder::new().recover(CODER_RS8, s, &mut buf, &have, &[Some(parity[0].clone())]);
        assert!(r.is_err());
    }
}
