//! Client-side reassembly of frames from shards (`session.reassembly.*`).
//!
//! Every header field is checked against the negotiated parameters before
//! anything is allocated; the bytes held by incomplete frames (their data
//! buffers and stored parity shards) never exceed the configured ceiling —
//! the oldest incomplete frame is given up (reported lost) to make room.
//! Frames are handed out whole, in index order; a frame that cannot be
//! completed in time is reported lost and never delivered in part.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use web_time::Instant;

use crate::fec::{CODER_RS8, CODER_RS16, FecDecoder, Layout, MAX_MIN_PARITY, max_data};
use crate::stats::{ClientCounters, add, max, set};
use crate::wire::ShardHeader;

/// Frames more than this far ahead of the next one to deliver make the
/// reassembler give up the oldest ones.
pub const FRAME_WINDOW: u32 = 256;

/// What reassembly produced.
#[derive(Debug)]
pub(crate) enum Output {
    /// A whole frame.
    Frame {
        index: u32,
        pts: u64,
        flags: u8,
        data: Vec<u8>,
        recovered: bool,
    },
    /// Frames `first .. first + count` will never be delivered.
    Lost(u32, u32),
}

struct Block {
    start: usize,
    m: usize,
    have: Vec<bool>,
    have_data: usize,
    parity: Vec<Option<Vec<u8>>>,
    have_parity: usize,
    done: bool,
}

struct Asm {
    len: usize,
    pts: u64,
    flags: u8,
    coder: u8,
    layout: Layout,
    data: Vec<u8>,
    blocks: Vec<Option<Block>>,
    blocks_done: usize,
    /// When the last shard of this frame arrived.
    last_seen: Instant,
    completed_at: Option<Instant>,
    recovered: bool,
    mem: usize,
}

/// Why a shard was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    Malformed,
    Late,
    Redundant,
    Duplicate,
}

pub(crate) struct Reassembler {
    s: usize,
    max_frame: usize,
    ceiling: usize,
    frame_timeout: Duration,
    grace: Duration,
    next: u32,
    frames: BTreeMap<u32, Asm>,
    mem: usize,
    decoder: FecDecoder,
    /// Recently given-up frames, to tell late shards from redundant ones.
    recent_lost: BTreeSet<u32>,
}

impl Reassembler {
    pub(crate) fn new(
        s: usize,
        max_frame: usize,
        ceiling: usize,
        frame_timeout: Duration,
        grace: Duration,
    ) -> Self {
        Reassembler {
            s,
            max_frame,
            ceiling,
            frame_timeout,
            grace,
            next: 0,
            frames: BTreeMap::new(),
            mem: 0,
            decoder: FecDecoder::new(),
            recent_lost: BTreeSet::new(),
        }
    }

    /// The next frame index to deliver or give up.
    pub(crate) fn next(&self) -> u32 {
        self.next
    }

    fn account(&self, stats: &ClientCounters) {
        set(&stats.pending_bytes, self.mem as u64);
        max(&stats.pending_bytes_peak, self.mem as u64);
    }

    // r[impl session.reassembly.bounds]
    fn check(
        &self,
        h: &ShardHeader,
        payload: usize,
    ) -> Result<(Layout, usize, usize, usize), Reject> {
        let len = h.frame_len as usize;
        if len > self.max_frame
            || h.frame > crate::wire::MAX_FRAME_INDEX
            || h.shard_size as usize != self.s
            || !(h.coder == CODER_RS8 || h.coder == CODER_RS16)
        {
            return Err(Reject::Malformed);
        }
        let layout = Layout::new(len, self.s, max_data(h.coder));
        if h.blocks as usize != layout.blocks || h.block >= h.blocks {
            return Err(Reject::Malformed);
        }
        let (start, k) = layout.block(h.block as usize);
        let m = h.m as usize;
        if h.k as usize != k || m > k.max(MAX_MIN_PARITY) || (h.coder == CODER_RS8 && k + m > 255) {
            return Err(Reject::Malformed);
        }
        if h.coder == CODER_RS16 && m > 0 && !reed_solomon_simd::ReedSolomonEncoder::supports(k, m)
        {
            return Err(Reject::Malformed);
        }
        let i = h.index as usize;
        if i >= k + m {
            return Err(Reject::Malformed);
        }
        let expect = if i < k {
            let g = start + i;
            len.saturating_sub(g * self.s).min(self.s)
        } else {
            self.s
        };
        if payload != expect {
            return Err(Reject::Malformed);
        }
        Ok((layout, start, k, m))
    }

    /// Take one shard. Outputs (frames, losses) are pushed to `out`.
    pub(crate) fn shard(
        &mut self,
        h: &ShardHeader,
        payload: &[u8],
        now: Instant,
        stats: &ClientCounters,
        out: &mut Vec<Output>,
    ) -> Result<(), Reject> {
        let (layout, start, k, m) = self.check(h, payload.len())?;
        if h.frame < self.next {
            // Shards of a frame already delivered are redundant (parity not
            // needed, or data after recovery); of a frame given up, late.
            return Err(if self.recent_lost.contains(&h.frame) {
                Reject::Late
            } else {
                Reject::Redundant
            });
        }
        // A frame far ahead: everything too far behind it is given up.
        if h.frame - self.next >= FRAME_WINDOW {
            self.skip_to(h.frame - FRAME_WINDOW + 1, stats, out);
        }
        if !self.frames.contains_key(&h.frame) {
            let cost = layout.n * self.s;
            if cost > self.ceiling {
                return Err(Reject::Malformed);
            }
            // r[impl session.reassembly.ceiling]
            while self.mem + cost > self.ceiling {
                let Some((&oldest, _)) = self.frames.iter().next() else {
                    break;
                };
                if oldest > h.frame {
                    // Only newer frames hold the memory: this shard is the
                    // one to give up.
                    return Err(Reject::Late);
                }
                add(&stats.evicted_frames, 1);
                while self.next <= oldest {
                    self.give_up_head(stats, out);
                }
            }
            self.mem += cost;
            self.frames.insert(
                h.frame,
                Asm {
                    len: h.frame_len as usize,
                    pts: h.pts,
                    flags: h.flags,
                    coder: h.coder,
                    layout,
                    data: vec![0; cost],
                    blocks: (0..layout.blocks).map(|_| None).collect(),
                    blocks_done: 0,
                    last_seen: now,
                    completed_at: None,
                    recovered: false,
                    mem: cost,
                },
            );
        }
        let s = self.s;
        let asm = self.frames.get_mut(&h.frame).expect("inserted above");
        if asm.len != h.frame_len as usize
            || asm.pts != h.pts
            || asm.flags != h.flags
            || asm.coder != h.coder
        {
            return Err(Reject::Malformed);
        }
        let blk = asm.blocks[h.block as usize].get_or_insert_with(|| Block {
            start,
            m,
            have: vec![false; k + m],
            have_data: 0,
            parity: (0..m).map(|_| None).collect(),
            have_parity: 0,
            done: false,
        });
        if blk.m != m {
            return Err(Reject::Malformed);
        }
        if blk.done {
            return Err(Reject::Redundant);
        }
        let i = h.index as usize;
        if blk.have[i] {
            return Err(Reject::Duplicate);
        }
        asm.last_seen = now;
        if i < k {
            let at = (start + i) * s;
            asm.data[at..at + payload.len()].copy_from_slice(payload);
            blk.have_data += 1;
            add(&stats.data_shards_received, 1);
        } else {
            if self.mem + s > self.ceiling {
                return Err(Reject::Late);
            }
            blk.parity[i - k] = Some(payload.to_vec());
            blk.have_parity += 1;
            self.mem += s;
            asm.mem += s;
            add(&stats.parity_shards_received, 1);
        }
        blk.have[i] = true;
        let mut completed = false;
        if blk.have_data == k {
            completed = true;
        } else if blk.have_data + blk.have_parity >= k {
            // r[impl session.fec.recover]
            let region = &mut asm.data[blk.start * s..(blk.start + k) * s];
            match self
                .decoder
                .recover(asm.coder, s, region, &blk.have[..k], &blk.parity)
            {
                Ok(()) => {
                    completed = true;
                    asm.recovered = true;
                    add(&stats.blocks_recovered, 1);
                }
                Err(e) => {
                    tracing::debug!(frame = h.frame, "recovery failed: {e}");
                    return Err(Reject::Malformed);
                }
            }
        }
        if completed {
            blk.done = true;
            let freed = blk.have_parity * s;
            blk.parity = Vec::new();
            self.mem -= freed;
            asm.mem -= freed;
            asm.blocks_done += 1;
            if asm.blocks_done == asm.layout.blocks {
                asm.completed_at = Some(now);
            }
        }
        self.deliver(stats, out);
        self.account(stats);
        Ok(())
    }

    fn lost(&mut self, first: u32, count: u32, stats: &ClientCounters, out: &mut Vec<Output>) {
        out.push(Output::Lost(first, count));
        // Remember the most recent ones (to tell late shards from redundant).
        let from = first.max((first + count).saturating_sub(1024));
        self.recent_lost.extend(from..first + count);
        while self.recent_lost.len() > 1024 {
            self.recent_lost.pop_first();
        }
        add(&stats.frames_lost, count as u64);
    }

    fn give_up_head(&mut self, stats: &ClientCounters, out: &mut Vec<Output>) {
        if let Some(a) = self.frames.remove(&self.next) {
            self.mem -= a.mem;
        }
        self.lost(self.next, 1, stats, out);
        self.next += 1;
        self.deliver(stats, out);
    }

    /// Give up every frame before `target`, in time proportional to the
    /// frames held (not to the distance).
    fn skip_to(&mut self, target: u32, stats: &ClientCounters, out: &mut Vec<Output>) {
        while self.next < target {
            match self.frames.range(self.next..target).next().map(|(&i, _)| i) {
                Some(i) if i == self.next => self.give_up_head(stats, out),
                Some(i) => {
                    self.lost(self.next, i - self.next, stats, out);
                    self.next = i;
                }
                None => {
                    self.lost(self.next, target - self.next, stats, out);
                    self.next = target;
                }
            }
        }
    }

    fn deliver(&mut self, stats: &ClientCounters, out: &mut Vec<Output>) {
        while let Some(a) = self.frames.get(&self.next) {
            if a.completed_at.is_none() {
                break;
            }
            let mut a = self.frames.remove(&self.next).expect("present");
            self.mem -= a.mem;
            a.data.truncate(a.len);
            add(&stats.frames_delivered, 1);
            add(&stats.frame_bytes_delivered, a.len as u64);
            if a.recovered {
                add(&stats.frames_recovered, 1);
            }
            out.push(Output::Frame {
                index: self.next,
                pts: a.pts,
                flags: a.flags,
                data: a.data,
                recovered: a.recovered,
            });
            self.next += 1;
        }
        self.account(stats);
    }

    // r[impl session.reassembly.timeout]
    /// Give up the frame at the head when a frame waited `frame_timeout`
    /// without receiving a shard, or when a later frame completed more than
    /// the grace period ago without it.
    pub(crate) fn poll(&mut self, now: Instant, stats: &ClientCounters, out: &mut Vec<Output>) {
        while let Some(deadline) = self.deadline() {
            if deadline > now {
                break;
            }
            self.give_up_head(stats, out);
        }
    }

    /// When the head frame will be given up if nothing arrives.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for a in self.frames.values() {
            let t = match a.completed_at {
                Some(c) => c + self.grace,
                None => a.last_seen + self.frame_timeout,
            };
            d = Some(d.map_or(t, |d| d.min(t)));
        }
        d
    }

    /// The link ended: deliver what is whole, report the rest lost — up to
    /// `end` (the host's frame count from its `Bye`) when known, so that
    /// frames of which nothing arrived are reported too.
    pub(crate) fn finish(
        &mut self,
        end: Option<u32>,
        stats: &ClientCounters,
        out: &mut Vec<Output>,
    ) {
        self.finish_pending(stats, out);
        if let Some(end) = end {
            self.skip_to(end, stats, out);
        }
    }

    fn finish_pending(&mut self, stats: &ClientCounters, out: &mut Vec<Output>) {
        while let Some((&last, _)) = self.frames.iter().next_back() {
            if self.next > last {
                break;
            }
            self.deliver(stats, out);
            if self.frames.is_empty() {
                break;
            }
            self.give_up_head(stats, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fec::{FecEncoder, parity_for};

    const S: usize = 100;

    /// Every shard (header, payload) of one frame.
    fn shards(frame: u32, data: &[u8], coder: u8, pct: u8) -> Vec<(ShardHeader, Vec<u8>)> {
        let layout = Layout::new(data.len(), S, max_data(coder));
        let mut enc = FecEncoder::new();
        let mut out = Vec::new();
        for b in 0..layout.blocks {
            let (start, k) = layout.block(b);
            let m = parity_for(coder, k, pct, 1);
            let block = &data[(start * S).min(data.len())..((start + k) * S).min(data.len())];
            let parity = enc.encode(coder, block, k, m, S).unwrap().to_vec();
            for i in 0..k + m {
                let payload = if i < k {
                    block[(i * S).min(block.len())..((i + 1) * S).min(block.len())].to_vec()
                } else {
                    parity[i - k].clone()
                };
                let h = ShardHeader {
                    frame,
                    frame_len: data.len() as u32,
                    pts: 5,
                    flags: 0,
                    coder,
                    block: b as u16,
                    blocks: layout.blocks as u16,
                    index: i as u16,
                    k: k as u16,
                    m: m as u16,
                    shard_size: S as u16,
                };
                out.push((h, payload));
            }
        }
        out
    }

    fn reasm() -> Reassembler {
        Reassembler::new(
            S,
            1 << 20,
            4 << 20,
            Duration::from_millis(50),
            Duration::from_millis(5),
        )
    }

    // r[verify session.fec.recover]
    // r[verify session.fec.blocks]
    #[test]
    fn loss_within_the_parity_budget_is_recovered_beyond_it_is_reported() {
        for coder in [CODER_RS8, CODER_RS16] {
            // 150 shards: 3 blocks of 50 with GF(2^8), one block with GF(2^16).
            let data: Vec<u8> = (0..15_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
            let all = shards(0, &data, coder, 20);
            let blocks = all[0].0.blocks;
            // Drop exactly m shards of every block (data ones: the worst case).
            let mut r = reasm();
            let st = ClientCounters::default();
            let mut out = Vec::new();
            let now = Instant::now();
            for (h, p) in &all {
                if h.index < h.m {
                    continue;
                }
                let _ = r.shard(h, p, now, &st, &mut out);
            }
            assert_eq!(out.len(), 1, "coder {coder}");
            match &out[0] {
                Output::Frame {
                    data: d, recovered, ..
                } => {
                    assert_eq!(d, &data);
                    assert!(recovered);
                }
                o => panic!("{o:?}"),
            }
            assert_eq!(st.blocks_recovered.get(), blocks as u64);
            // One more shard missing in one block: the frame is lost, never
            // delivered in part.
            let mut r = reasm();
            let st = ClientCounters::default();
            let mut out = Vec::new();
            for (h, p) in &all {
                if h.index < h.m || (h.block == 0 && h.index == h.m) {
                    continue;
                }
                let _ = r.shard(h, p, now, &st, &mut out);
            }
            assert!(out.is_empty());
            r.poll(now + Duration::from_millis(51), &st, &mut out);
            assert!(matches!(out[..], [Output::Lost(0, 1)]), "{out:?}");
            assert_eq!(r.mem, 0, "the lost frame's memory was released");
        }
    }

    // r[verify session.reassembly.timeout]
    #[test]
    fn a_stalled_head_frame_is_given_up_after_grace_or_timeout() {
        let now = Instant::now();
        let f0 = shards(0, &[1u8; 1000], CODER_RS8, 20);
        let f1 = shards(1, &[2u8; 1000], CODER_RS8, 20);
        let st = ClientCounters::default();
        let mut out = Vec::new();
        // Frame 0 gets one shard; frame 1 completes.
        let mut r = reasm();
        r.shard(&f0[0].0, &f0[0].1, now, &st, &mut out).unwrap();
        for (h, p) in &f1 {
            let _ = r.shard(h, p, now, &st, &mut out);
        }
        assert!(out.is_empty(), "frame 1 waits for frame 0");
        r.poll(now + Duration::from_millis(4), &st, &mut out);
        assert!(out.is_empty(), "still within the grace period");
        r.poll(now + Duration::from_millis(6), &st, &mut out);
        assert!(matches!(out[0], Output::Lost(0, 1)));
        assert!(matches!(out[1], Output::Frame { index: 1, .. }));
        // A late shard of frame 0 is counted, not used.
        assert_eq!(
            r.shard(&f0[1].0, &f0[1].1, now, &st, &mut out),
            Err(Reject::Late)
        );
        // Alone, an incomplete frame waits frame_timeout after its last shard.
        let mut r = reasm();
        let mut out = Vec::new();
        r.shard(&f0[0].0, &f0[0].1, now, &st, &mut out).unwrap();
        r.shard(
            &f0[1].0,
            &f0[1].1,
            now + Duration::from_millis(40),
            &st,
            &mut out,
        )
        .unwrap();
        r.poll(now + Duration::from_millis(60), &st, &mut out);
        assert!(out.is_empty(), "a shard 40 ms in restarted the wait");
        r.poll(now + Duration::from_millis(91), &st, &mut out);
        assert!(matches!(out[..], [Output::Lost(0, 1)]));
    }

    #[test]
    fn inconsistent_headers_are_refused_before_allocating() {
        let now = Instant::now();
        let st = ClientCounters::default();
        let mut out = Vec::new();
        let mut r = reasm();
        let (h, p) = shards(0, &[1u8; 1000], CODER_RS8, 20).remove(0);
        for bad in [
            ShardHeader {
                frame_len: (1 << 20) + 1,
                ..h
            },
            ShardHeader { coder: 3, ..h },
            ShardHeader { k: h.k + 1, ..h },
            ShardHeader { blocks: 2, ..h },
            ShardHeader { block: 1, ..h },
            ShardHeader {
                index: h.k + h.m,
                ..h
            },
            ShardHeader { m: 200, ..h },
            ShardHeader {
                shard_size: 50,
                ..h
            },
        ] {
            assert_eq!(
                r.shard(&bad, &p, now, &st, &mut out),
                Err(Reject::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            r.shard(&h, &p[..99], now, &st, &mut out),
            Err(Reject::Malformed)
        );
        assert_eq!(r.mem, 0);
        assert!(r.frames.is_empty());
    }

    #[test]
    fn a_frame_far_ahead_gives_up_the_gap_in_one_step() {
        let now = Instant::now();
        let st = ClientCounters::default();
        let mut out = Vec::new();
        let mut r = reasm();
        let (h, p) = shards(crate::wire::MAX_FRAME_INDEX, &[1u8; 10], CODER_RS8, 20).remove(0);
        r.shard(&h, &p, now, &st, &mut out).unwrap();
        assert!(
            matches!(out[..], [Output::Lost(0, n)] if n == crate::wire::MAX_FRAME_INDEX - FRAME_WINDOW + 1)
        );
        let (h, p) = shards(crate::wire::MAX_FRAME_INDEX + 1, &[1u8; 10], CODER_RS8, 20).remove(0);
        assert_eq!(r.shard(&h, &p, now, &st, &mut out), Err(Reject::Malformed));
    }
}
