//! The handshake messages' bodies: Hello (with the retry token it may
//! carry), Welcome and the parameters it agrees, Reject, Retry.

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
            encryption: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(WireError("hello: encryption flag not 0 or 1")),
            },
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

/// Longest retry token a Hello may carry.
pub const TOKEN_MAX: usize = 64;

// r[impl session.handshake.retry]
/// The retry token a Hello body carries after its fixed fields (a length
/// byte and the token), if any. A malformed tail is no token.
pub fn hello_token(body: &[u8]) -> Option<&[u8]> {
    let n = *body.get(HELLO_LEN)? as usize;
    if n == 0 || n > TOKEN_MAX {
        return None;
    }
    body.get(HELLO_LEN + 1..HELLO_LEN + 1 + n)
}

/// A Hello body with `token` appended (empty: the plain body).
pub fn hello_with_token(hello: &[u8], token: &[u8]) -> Vec<u8> {
    let mut b = hello[..HELLO_LEN.min(hello.len())].to_vec();
    if !token.is_empty() {
        b.push(token.len().min(TOKEN_MAX) as u8);
        b.extend_from_slice(&token[..token.len().min(TOKEN_MAX)]);
    }
    b
}

/// The host's stateless demand for proof of address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// The client's random, echoed (ties the Retry to its Hello).
    pub client_random: [u8; RANDOM_LEN],
    /// The token to resend the Hello with.
    pub token: Vec<u8>,
}

impl Retry {
    /// Encode the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let t = &self.token[..self.token.len().min(TOKEN_MAX)];
        let mut b = Vec::with_capacity(RANDOM_LEN + 1 + t.len());
        b.extend_from_slice(&self.client_random);
        b.push(t.len() as u8);
        b.extend_from_slice(t);
        b
    }

    /// Decode a body.
    pub fn read(body: &[u8]) -> Result<Retry, WireError> {
        let mut r = Reader::new(body);
        let client_random = r.bytes(RANDOM_LEN)?.try_into().expect("32");
        let n = r.u8()? as usize;
        if n == 0 || n > TOKEN_MAX {
            return Err(WireError("retry: token length outside 1..=64"));
        }
        let token = r.bytes(n)?.to_vec();
        Ok(Retry {
            client_random,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::gate::TOKEN_LEN;

    // r[verify session.handshake.client]
    #[test]
    fn a_hello_round_trips_and_its_encryption_flag_is_0_or_1() {
        let h = Hello {
            min_version: VERSION,
            max_version: VERSION,
            random: [7; RANDOM_LEN],
            encryption: true,
            max_frame: 1 << 20,
            max_message: 1472,
        };
        let bytes = h.to_bytes();
        assert_eq!(Hello::read(&bytes).unwrap(), h);
        let flag = 2 + RANDOM_LEN;
        assert_eq!(bytes[flag], 1);
        for bad in [2u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[flag] = bad;
            assert!(Hello::read(&b).is_err(), "encryption flag {bad}");
        }
    }
    // r[verify session.handshake.retry]
    #[test]
    fn hello_tokens_and_retry_bodies_parse_strictly() {
        let h = vec![0u8; HELLO_LEN];
        assert_eq!(hello_token(&h), None);
        let with = hello_with_token(&h, &[1, 2, 3]);
        assert_eq!(with.len(), HELLO_LEN + 4);
        assert_eq!(hello_token(&with), Some(&[1u8, 2, 3][..]));
        assert_eq!(hello_token(&with[..HELLO_LEN + 3]), None, "truncated");
        let mut zero = h.clone();
        zero.push(0);
        assert_eq!(hello_token(&zero), None);
        let r = Retry {
            client_random: [1; RANDOM_LEN],
            token: vec![9; TOKEN_LEN],
        };
        assert_eq!(Retry::read(&r.to_bytes()).unwrap(), r);
        assert!(Retry::read(&r.to_bytes()[..RANDOM_LEN + 5]).is_err());
        let mut empty = [1u8; RANDOM_LEN].to_vec();
        empty.push(0);
        assert!(Retry::read(&empty).is_err());
    }
}
