//! Handshake messages and the parameters they agree (`session.handshake.*`).
//!
//! Client → `Hello` (versions, its random, encryption wanted, its largest
//! acceptable frame, its link's maximum payload); host → `Welcome` (the
//! agreed parameters, its random, and when encrypting a confirmation value
//! that proves it holds the pre-shared key, bound to every parameter) or
//! `Reject` (a reason code and text); client → `Finish`, sealed with the new
//! keys when encrypting, which proves the client holds the key too. Hello is
//! resent until a Welcome or Reject arrives, Welcome until a Finish arrives.

use crate::error::RejectReason;
use crate::fec::FecScheme;
use crate::wire::{
    FRAME_HEADER_LEN, OUTER_LEN, RANDOM_LEN, Reader, TAG_LEN, VERSION, WireError, Writer,
};

/// Bytes of a Hello body.
pub const HELLO_LEN: usize = 2 + RANDOM_LEN + 1 + 4 + 4;
/// Bytes of a Welcome body.
pub const WELCOME_LEN: usize = 1 + 2 * RANDOM_LEN + 3 + 2 + 2 + 4 + 4 + 3 + 16;

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest version the client speaks.
    pub min_version: u8,
    /// Newest version the client speaks.
    pub max_version: u8,
    /// The client's random contribution.
    pub random: [u8; RANDOM_LEN],
    /// Whether the client holds a key (wants encryption).
    pub encryption: bool,
    /// Largest frame the client accepts.
    pub max_frame: u32,
    /// The client link's maximum payload.
    pub max_message: u32,
}

impl Hello {
    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0; HELLO_LEN];
        let mut w = Writer::new(&mut b);
        w.u8(self.min_version);
        w.u8(self.max_version);
        w.bytes(&self.random);
        w.u8(self.encryption as u8);
        w.u32(self.max_frame);
        w.u32(self.max_message);
        b
    }

    /// Decode.
    pub fn read(body: &[u8]) -> Result<Hello, WireError> {
        let mut r = Reader::new(body);
        let h = Hello {
            min_version: r.u8()?,
            max_version: r.u8()?,
            random: r.bytes(RANDOM_LEN)?.try_into().expect("32"),
            encryption: r.u8()? != 0,
            max_frame: r.u32()?,
            max_message: r.u32()?,
        };
        if h.min_version > h.max_version {
            return Err(WireError("hello: empty version range"));
        }
        Ok(h)
    }

    /// Whether the client speaks this crate's version.
    pub fn speaks_ours(&self) -> bool {
        (self.min_version..=self.max_version).contains(&VERSION)
    }
}

/// The parameters a session runs with, as agreed in the Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Wire version.
    pub version: u8,
    /// AES-GCM on.
    pub encryption: bool,
    /// Frames travel whole (stream link) rather than as FEC shards.
    pub stream: bool,
    /// FEC policy.
    pub fec: FecScheme,
    /// Data shard counts up to which `Auto` uses GF(2^8).
    pub auto_threshold: u16,
    /// Shard payload size (lossy links).
    pub shard_size: u16,
    /// Largest frame.
    pub max_frame: u32,
    /// Largest link message both ends can carry.
    pub max_message: u32,
    /// Initial parity percentage.
    pub parity_pct: u8,
    /// Minimum parity shards per block.
    pub min_parity: u8,
    /// Keys change every `2^rekey_shift` packets.
    pub rekey_shift: u8,
}

impl Params {
    fn tag_len(&self) -> usize {
        if self.encryption { TAG_LEN } else { 0 }
    }

    /// Bytes of a frame each Frame message carries on a stream link (all
    /// parts but the last are this long).
    pub fn part_size(&self) -> usize {
        self.max_message as usize - OUTER_LEN - FRAME_HEADER_LEN - self.tag_len()
    }

    /// The largest body a message may have (the Input batch limit).
    pub fn max_body(&self) -> usize {
        self.max_message as usize - OUTER_LEN - TAG_LEN
    }
}

/// Retransmission schedule of a handshake message: the first wait is
/// `first`, doubling to 1 s; on a reliable link one send waits the whole
/// time.
pub(crate) struct Backoff {
    interval: std::time::Duration,
    deadline: web_time::Instant,
    reliable: bool,
}

impl Backoff {
    pub(crate) fn new(
        first: std::time::Duration,
        deadline: web_time::Instant,
        reliable: bool,
    ) -> Self {
        Backoff {
            interval: first,
            deadline,
            reliable,
        }
    }

    /// Until when to wait for an answer after sending now.
    pub(crate) fn next_wait(&mut self) -> web_time::Instant {
        let until = if self.reliable {
            self.deadline
        } else {
            (web_time::Instant::now() + self.interval).min(self.deadline)
        };
        self.interval = (self.interval * 2).min(std::time::Duration::from_secs(1));
        until
    }
}

/// The host's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The client's random, echoed (ties the answer to this Hello).
    pub client_random: [u8; RANDOM_LEN],
    /// The host's random contribution.
    pub host_random: [u8; RANDOM_LEN],
    /// The agreed parameters.
    pub params: Params,
    /// Proof that the host holds the key (zeros in the clear).
    pub confirm: [u8; 16],
}

impl Welcome {
    /// Encode everything but the confirmation (what it authenticates).
    pub fn signed_part(&self) -> Vec<u8> {
        let mut b = self.to_bytes();
        b.truncate(WELCOME_LEN - 16);
        b
    }

    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let p = &self.params;
        let mut b = vec![0; WELCOME_LEN];
        let mut w = Writer::new(&mut b);
        w.u8(p.version);
        w.bytes(&self.client_random);
        w.bytes(&self.host_random);
        w.u8(p.encryption as u8);
        w.u8(p.stream as u8);
        w.u8(p.fec.to_u8());
        w.u16(p.auto_threshold);
        w.u16(p.shard_size);
        w.u32(p.max_frame);
        w.u32(p.max_message);
        w.u8(p.parity_pct);
        w.u8(p.min_parity);
        w.u8(p.rekey_shift);
        w.bytes(&self.confirm);
        b
    }

    /// Decode (the client checks the values against its own limits).
    pub fn read(body: &[u8]) -> Result<Welcome, WireError> {
        let mut r = Reader::new(body);
        let version = r.u8()?;
        let client_random = r.bytes(RANDOM_LEN)?.try_into().expect("32");
        let host_random = r.bytes(RANDOM_LEN)?.try_into().expect("32");
        let flag = |b: u8| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("welcome: flag not 0 or 1")),
        };
        let encryption = flag(r.u8()?)?;
        let stream = flag(r.u8()?)?;
        let fec = FecScheme::from_u8(r.u8()?).ok_or(WireError("welcome: unknown FEC scheme"))?;
        let params = Params {
            version,
            encryption,
            stream,
            fec,
            auto_threshold: r.u16()?,
            shard_size: r.u16()?,
            max_frame: r.u32()?,
            max_message: r.u32()?,
            parity_pct: r.u8()?,
            min_parity: r.u8()?,
            rekey_shift: r.u8()?,
        };
        let confirm = r.bytes(16)?.try_into().expect("16");
        Ok(Welcome {
            client_random,
            host_random,
            params,
            confirm,
        })
    }
}

/// Encode a Reject body: reason code, text length, text (at most 200 bytes).
pub fn reject_body(reason: RejectReason, detail: &str) -> Vec<u8> {
    let mut d = detail.as_bytes();
    if d.len() > 200 {
        let mut cut = 200;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        d = &d[..cut];
    }
    let mut b = vec![reason.to_u8(), d.len() as u8];
    b.extend_from_slice(d);
    b
}

/// Decode a Reject body.
pub fn read_reject(body: &[u8]) -> Result<(RejectReason, String), WireError> {
    let mut r = Reader::new(body);
    let reason = RejectReason::from_u8(r.u8()?);
    let n = r.u8()? as usize;
    let text = String::from_utf8_lossy(r.bytes(n)?).into_owned();
    Ok((reason, text))
}
