//! The wire format (spec/session.md, `session.wire.*`): every message is an
//! outer header — version, kind, packet number — and a body, sealed with
//! AES-GCM after the handshake when encryption is on.
//!
//! All multi-byte integers are little-endian. Decoding never trusts a field:
//! every length and count is checked against the bytes present and against
//! the negotiated limits before anything is allocated.

use std::fmt;

/// The wire-format version this crate speaks.
pub const VERSION: u8 = 1;

/// Bytes of the outer header: version (1), kind (1), packet number (8).
pub const OUTER_LEN: usize = 10;

/// Bytes of an AES-GCM tag appended to a sealed body.
pub const TAG_LEN: usize = 16;

/// Bytes of the header of a [`Kind::Shard`] body.
pub const SHARD_HEADER_LEN: usize = 30;

/// Bytes of the header of a [`Kind::Frame`] body.
pub const FRAME_HEADER_LEN: usize = 22;

/// Bytes of the random value each side contributes to the handshake.
pub const RANDOM_LEN: usize = 32;

/// The smallest link message a session runs over: an input batch with the
/// longest event must fit.
pub const MIN_MESSAGE: usize = OUTER_LEN + TAG_LEN + 10 + 2 + MAX_TEXT;

/// The highest frame index a session uses: indices never wrap (at 240
/// frames/s this is 200 days); the host refuses to send past it.
pub const MAX_FRAME_INDEX: u32 = u32::MAX - 1024;

/// The longest text an [`InputEvent::Text`](crate::InputEvent::Text) may carry, in bytes.
pub const MAX_TEXT: usize = 255;

// r[impl session.wire.kinds]
/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → host: start of the handshake (never sealed).
    Hello = 1,
    /// Host → client: the agreed parameters (never sealed).
    Welcome = 2,
    /// Host → client: the handshake was refused (never sealed).
    Reject = 3,
    /// Client → host: handshake finished (sealed when encrypting).
    Finish = 4,
    /// Host → client: one shard of a frame on a lossy link.
    Shard = 5,
    /// Host → client: a frame, or one part of a large frame, on a stream link.
    Frame = 6,
    /// Client → host: a batch of input events.
    Input = 7,
    /// Host → client: cumulative acknowledgement of input events.
    InputAck = 8,
    /// Client → host: loss report.
    Feedback = 9,
    /// Either way: the sender ends the session (body: the host's next frame
    /// index, or 0 from the client). Sent three times on lossy links.
    Bye = 10,
    /// Client → host: per-packet arrival times for bandwidth estimation.
    Arrivals = 11,
    /// Host → client: padding that probes for capacity (body ignored).
    Padding = 12,
    /// Host → client: prove your address first; resend the Hello with this
    /// token (never sealed; `session.handshake.retry`).
    Retry = 13,
}

impl Kind {
    /// Decode a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Reject,
            4 => Kind::Finish,
            5 => Kind::Shard,
            6 => Kind::Frame,
            7 => Kind::Input,
            8 => Kind::InputAck,
            9 => Kind::Feedback,
            10 => Kind::Bye,
            11 => Kind::Arrivals,
            12 => Kind::Padding,
            13 => Kind::Retry,
            _ => return None,
        })
    }

    /// Handshake messages travel in the clear and carry packet number 0.
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            Kind::Hello | Kind::Welcome | Kind::Reject | Kind::Retry
        )
    }
}

/// Why a received message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// The decoded outer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// Message kind.
    pub kind: Kind,
    /// Packet number (0 for handshake messages).
    pub pn: u64,
}

// r[impl session.wire.outer]
/// Decode the outer header of `msg`.
pub fn read_outer(msg: &[u8]) -> Result<Outer, WireError> {
    if msg.len() < OUTER_LEN {
        return Err(WireError("shorter than the outer header"));
    }
    if msg[0] != VERSION {
        return Err(WireError("unknown wire version"));
    }
    let kind = Kind::from_u8(msg[1]).ok_or(WireError("unknown message kind"))?;
    let pn = u64::from_le_bytes(msg[2..10].try_into().expect("8 bytes"));
    Ok(Outer { kind, pn })
}

/// Encode an outer header into the first [`OUTER_LEN`] bytes of `buf`.
pub fn write_outer(buf: &mut [u8], kind: Kind, pn: u64) {
    buf[0] = VERSION;
    buf[1] = kind as u8;
    buf[2..10].copy_from_slice(&pn.to_le_bytes());
}

/// A bounds-checked reader over a received body.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Read `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    /// `n` bytes, or an error if fewer remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    /// A little-endian i32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    /// A little-endian i16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    /// A little-endian f32.
    pub fn f32(&mut self) -> Result<f32, WireError> {
        Ok(f32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
}

/// A writer into a buffer that was sized for what it receives.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    /// Write into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    /// How many bytes were written.
    pub fn len(&self) -> usize {
        self.at
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.at == 0
    }

    /// Append bytes (the caller sized the buffer; overflow is a bug).
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// Append one byte.
    pub fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    /// Append a little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }

    /// Append a little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    /// Append a little-endian i32.
    pub fn i32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }

    /// Append a little-endian i16.
    pub fn i16(&mut self, v: i16) {
        self.bytes(&v.to_le_bytes());
    }

    /// Append a little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    /// Append a little-endian f32.
    pub fn f32(&mut self, v: f32) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Header of one shard of a frame on a lossy link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    /// Frame index.
    pub frame: u32,
    /// Frame length in bytes.
    pub frame_len: u32,
    /// Presentation time in microseconds.
    pub pts: u64,
    /// Frame flags.
    pub flags: u8,
    /// Coder of this frame's blocks (1 = GF(2^8), 2 = GF(2^16)).
    pub coder: u8,
    /// Block of the frame this shard belongs to.
    pub block: u16,
    /// Blocks in the frame.
    pub blocks: u16,
    /// Index within the block: `0..k` data, `k..k+m` parity.
    pub index: u16,
    /// Data shards of this block.
    pub k: u16,
    /// Parity shards of this block.
    pub m: u16,
    /// Shard size of this frame.
    pub shard_size: u16,
}

// r[impl session.wire.shard]
impl ShardHeader {
    /// Encode into `w`.
    pub fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.frame);
        w.u32(self.frame_len);
        w.u64(self.pts);
        w.u8(self.flags);
        w.u8(self.coder);
        w.u16(self.block);
        w.u16(self.blocks);
        w.u16(self.index);
        w.u16(self.k);
        w.u16(self.m);
        w.u16(self.shard_size);
    }

    /// Decode from `r` (fields are checked by the reassembler).
    pub fn read(r: &mut Reader<'_>) -> Result<ShardHeader, WireError> {
        Ok(ShardHeader {
            frame: r.u32()?,
            frame_len: r.u32()?,
            pts: r.u64()?,
            flags: r.u8()?,
            coder: r.u8()?,
            block: r.u16()?,
            blocks: r.u16()?,
            index: r.u16()?,
            k: r.u16()?,
            m: r.u16()?,
            shard_size: r.u16()?,
        })
    }
}

/// Header of a frame (or one part of it) on a stream link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame index.
    pub frame: u32,
    /// Frame length in bytes.
    pub frame_len: u32,
    /// Presentation time in microseconds.
    pub pts: u64,
    /// Frame flags.
    pub flags: u8,
    /// Part of the frame this message carries.
    pub part: u16,
    /// Parts the frame was cut into.
    pub parts: u16,
}

// r[impl session.wire.frame]
impl FrameHeader {
    /// Encode into `w`.
    pub fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.frame);
        w.u32(self.frame_len);
        w.u64(self.pts);
        w.u8(self.flags);
        w.u8(0);
        w.u16(self.part);
        w.u16(self.parts);
    }

    /// Decode from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<FrameHeader, WireError> {
        let frame = r.u32()?;
        let frame_len = r.u32()?;
        let pts = r.u64()?;
        let flags = r.u8()?;
        if r.u8()? != 0 {
            return Err(WireError("frame: reserved byte not zero"));
        }
        Ok(FrameHeader {
            frame,
            frame_len,
            pts,
            flags,
            part: r.u16()?,
            parts: r.u16()?,
        })
    }
}

/// Bytes of a Feedback body.
pub const FEEDBACK_LEN: usize = 8 + 8 + 4 + 4 + 8;

// r[impl session.feedback.report]
/// The client's loss report (a Feedback body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    /// Frames delivered so far.
    pub delivered: u64,
    /// Frames lost so far.
    pub lost: u64,
    /// The newest lost frame plus one (0: none yet).
    pub last_lost: u32,
    /// Message loss over the interval, parts per million.
    pub loss_ppm: u32,
    /// Frames rebuilt from parity so far.
    pub recovered: u64,
}

impl Feedback {
    /// Encode.
    pub fn to_bytes(self) -> [u8; FEEDBACK_LEN] {
        let mut b = [0u8; FEEDBACK_LEN];
        let mut w = Writer::new(&mut b);
        w.u64(self.delivered);
        w.u64(self.lost);
        w.u32(self.last_lost);
        w.u32(self.loss_ppm);
        w.u64(self.recovered);
        b
    }

    /// Decode (exact length, loss at most 100%).
    pub fn read(body: &[u8]) -> Result<Feedback, WireError> {
        if body.len() != FEEDBACK_LEN {
            return Err(WireError("feedback: wrong length"));
        }
        let mut r = Reader::new(body);
        let f = Feedback {
            delivered: r.u64()?,
            lost: r.u64()?,
            last_lost: r.u32()?,
            loss_ppm: r.u32()?,
            recovered: r.u64()?,
        };
        if f.loss_ppm > 1_000_000 {
            return Err(WireError("feedback: loss above 100%"));
        }
        Ok(f)
    }
}

/// Encode a u64 body (InputAck: the next input number expected).
pub fn u64_body(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Decode a u64 body (exactly 8 bytes).
pub fn read_u64_body(body: &[u8]) -> Result<u64, WireError> {
    body.try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| WireError("expected an 8-byte body"))
}

/// Encode a u32 body (Bye: the host's frame count, 0 from the client).
pub fn u32_body(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// Decode a u32 body (exactly 4 bytes).
pub fn read_u32_body(body: &[u8]) -> Result<u32, WireError> {
    body.try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| WireError("expected a 4-byte body"))
}

/// Bytes of an Arrivals body before its entries.
pub const ARRIVALS_HEADER_LEN: usize = 8 + 8 + 2;
/// Units of an arrival delta, microseconds.
pub const ARRIVAL_UNIT_US: u64 = 4;
/// The entry of a packet that did not arrive.
pub const ARRIVAL_LOST: i16 = i16::MIN;

// r[impl session.bwe.arrivals]
/// Encode an Arrivals body: packet numbers from `base` on, of which
/// `arrivals` (sorted by packet number, each `>= base`) arrived at the
/// given times (µs, the client's clock); numbers in between did not.
/// Takes as many as `max_entries` entries allow, and stops early where a
/// delta does not fit. Returns the body and how many of `arrivals` it
/// covers (at least one when `arrivals` is not empty and `max_entries`
/// allows it); the next body starts after the last covered packet number.
pub fn write_arrivals(base: u64, arrivals: &[(u64, u64)], max_entries: usize) -> (Vec<u8>, usize) {
    let max_entries = max_entries.min(u16::MAX as usize);
    let mut entries: Vec<i16> = Vec::new();
    let Some(&(_, ref_us)) = arrivals.first() else {
        return (Vec::new(), 0);
    };
    let mut prev = ref_us;
    let mut next_pn = base;
    let mut used = 0;
    for &(pn, at) in arrivals {
        if pn < next_pn {
            used += 1; // a repeat: already covered
            continue;
        }
        let gap = (pn - next_pn) as usize;
        if entries.len() + gap + 1 > max_entries {
            break;
        }
        let delta = (at as i64 - prev as i64).div_euclid(ARRIVAL_UNIT_US as i64);
        if delta <= ARRIVAL_LOST as i64 || delta > i16::MAX as i64 {
            break;
        }
        entries.extend(std::iter::repeat_n(ARRIVAL_LOST, gap));
        entries.push(delta as i16);
        prev = (prev as i64 + delta * ARRIVAL_UNIT_US as i64) as u64;
        next_pn = pn + 1;
        used += 1;
    }
    let mut b = vec![0u8; ARRIVALS_HEADER_LEN + 2 * entries.len()];
    let mut w = Writer::new(&mut b);
    w.u64(base);
    w.u64(ref_us);
    w.u16(entries.len() as u16);
    for e in entries {
        w.i16(e);
    }
    (b, used)
}

/// Decode an Arrivals body into one [`Arrival`](crate::bwe::Arrival) per
/// packet number it covers.
pub fn read_arrivals(body: &[u8]) -> Result<Vec<crate::bwe::Arrival>, WireError> {
    let mut r = Reader::new(body);
    let base = r.u64()?;
    let mut t = r.u64()? as i64;
    let n = r.u16()? as usize;
    if r.remaining() != 2 * n {
        return Err(WireError("arrivals: length does not match the count"));
    }
    if base.checked_add(n as u64).is_none() {
        return Err(WireError("arrivals: packet numbers overflow"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = r.i16()?;
        let at_us = if e == ARRIVAL_LOST {
            None
        } else {
            t += e as i64 * ARRIVAL_UNIT_US as i64;
            Some(t.max(0) as u64)
        };
        out.push(crate::bwe::Arrival {
            pn: base + i as u64,
            at_us,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(r.u16().is_err());
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.bytes(usize::MAX).is_err());
    }

    // r[verify session.wire.kinds]
    #[test]
    fn every_kind_has_the_code_the_spec_gives_it() {
        let table = [
            (Kind::Hello, 1),
            (Kind::Welcome, 2),
            (Kind::Reject, 3),
            (Kind::Finish, 4),
            (Kind::Shard, 5),
            (Kind::Frame, 6),
            (Kind::Input, 7),
            (Kind::InputAck, 8),
            (Kind::Feedback, 9),
            (Kind::Bye, 10),
            (Kind::Arrivals, 11),
            (Kind::Padding, 12),
            (Kind::Retry, 13),
        ];
        for (kind, code) in table {
            let mut m = [0u8; OUTER_LEN];
            write_outer(&mut m, kind, 7);
            assert_eq!(m[1], code, "{kind:?} is written as {code}");
            assert_eq!(Kind::from_u8(code), Some(kind), "{code} reads as {kind:?}");
            assert_eq!(read_outer(&m).unwrap().kind, kind);
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(14), None);
    }

    // r[verify session.wire.outer]
    #[test]
    fn outer_header_is_checked() {
        let mut m = [0u8; OUTER_LEN];
        write_outer(&mut m, Kind::Bye, 0x0102_0304_0506_0708);
        assert_eq!(m[..2], [1, 10]);
        assert_eq!(m[2..], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(
            read_outer(&m).unwrap(),
            Outer {
                kind: Kind::Bye,
                pn: 0x0102_0304_0506_0708
            }
        );
        assert!(read_outer(&m[..9]).is_err(), "short");
        let mut v2 = m;
        v2[0] = 2;
        assert!(read_outer(&v2).is_err(), "other version");
        for k in 0..=255u8 {
            let mut x = m;
            x[1] = k;
            assert_eq!(read_outer(&x).is_ok(), (1..=13).contains(&k), "kind {k}");
        }
        assert!(Kind::Hello.is_handshake() && Kind::Reject.is_handshake());
        assert!(Kind::Retry.is_handshake());
        assert!(!Kind::Finish.is_handshake() && !Kind::Shard.is_handshake());
    }

    // r[verify session.bwe.arrivals]
    #[test]
    fn arrivals_round_trip_with_losses_and_split_on_big_deltas() {
        let arr = [(5u64, 1_000u64), (6, 1_100), (9, 1_050), (10, 2_000_000)];
        let (b, used) = write_arrivals(4, &arr, 100);
        // pn 4 lost, 5, 6 arrived, 7 and 8 lost, 9 arrived (before 6: a
        // negative delta); 10 is 2 s later and does not fit: next body.
        assert_eq!(used, 3);
        assert_eq!(b.len(), ARRIVALS_HEADER_LEN + 2 * 6);
        let got = read_arrivals(&b).unwrap();
        let want: Vec<(u64, Option<u64>)> = vec![
            (4, None),
            (5, Some(1_000)),
            (6, Some(1_100)),
            (7, None),
            (8, None),
            (9, Some(1_048)),
        ];
        let got: Vec<(u64, Option<u64>)> = got.iter().map(|a| (a.pn, a.at_us)).collect();
        assert_eq!(got, want);
        let (b2, used2) = write_arrivals(10, &arr[3..], 100);
        assert_eq!(used2, 1);
        assert_eq!(read_arrivals(&b2).unwrap()[0].at_us, Some(2_000_000));
        // The entry limit splits too.
        let (_, used3) = write_arrivals(0, &arr, 6);
        assert_eq!(used3, 1, "pn 0..=5 fill the six entries");
        // Malformed: count disagrees with the length.
        let mut bad = b.clone();
        bad.pop();
        assert!(read_arrivals(&bad).is_err());
        assert!(read_arrivals(&b[..10]).is_err());
    }

    #[test]
    fn feedback_round_trips_and_is_checked() {
        let f = Feedback {
            delivered: 1,
            lost: 2,
            last_lost: 3,
            loss_ppm: 4,
            recovered: 5,
        };
        assert_eq!(Feedback::read(&f.to_bytes()).unwrap(), f);
        assert!(Feedback::read(&f.to_bytes()[1..]).is_err());
        let mut b = f.to_bytes();
        b[20..24].copy_from_slice(&2_000_000u32.to_le_bytes());
        assert!(Feedback::read(&b).is_err());
        assert_eq!(read_u64_body(&u64_body(9)).unwrap(), 9);
        assert!(read_u32_body(&[1, 2, 3]).is_err());
    }

    // r[verify session.wire.frame]
    #[test]
    fn frame_header_round_trips() {
        let h = FrameHeader {
            frame: 9,
            frame_len: 70_000,
            pts: 123,
            flags: 1,
            part: 2,
            parts: 3,
        };
        let mut buf = [0u8; FRAME_HEADER_LEN];
        let mut w = Writer::new(&mut buf);
        h.write(&mut w);
        assert_eq!(w.len(), FRAME_HEADER_LEN);
        assert_eq!(buf[..4], 9u32.to_le_bytes());
        assert_eq!(FrameHeader::read(&mut Reader::new(&buf)).unwrap(), h);
        assert!(FrameHeader::read(&mut Reader::new(&buf[..21])).is_err());
        let mut reserved = buf;
        reserved[17] = 1;
        assert!(FrameHeader::read(&mut Reader::new(&reserved)).is_err());
    }

    // r[verify session.wire.shard]
    #[test]
    fn shard_header_round_trips() {
        let h = ShardHeader {
            frame: 7,
            frame_len: 123_456,
            pts: 99,
            flags: 1,
            coder: 2,
            block: 0,
            blocks: 1,
            index: 3,
            k: 88,
            m: 18,
            shard_size: 1400,
        };
        let mut buf = [0u8; SHARD_HEADER_LEN];
        let mut w = Writer::new(&mut buf);
        h.write(&mut w);
        assert_eq!(w.len(), SHARD_HEADER_LEN);
        assert_eq!(ShardHeader::read(&mut Reader::new(&buf)).unwrap(), h);
    }
}
