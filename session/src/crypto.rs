//! Session keys, sealing and the anti-replay window (`session.crypto.*`).
//!
//! Keys: HKDF-SHA256 extracts a pseudo-random key from the pre-shared secret,
//! salted with the random values both sides sent in the handshake. Each
//! direction expands its own AES-128-GCM key per *epoch*: epoch `e` covers
//! packet numbers `e << rekey_shift ..`, so both ends switch keys at the same
//! packet number without a message and no key seals more than
//! `2^rekey_shift` packets. The nonce is the packet number, which each
//! direction increments per message and never reuses.

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::wire::TAG_LEN;

/// Which way a key protects traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host to client (frames, input acknowledgements).
    HostToClient,
    /// Client to host (input, feedback).
    ClientToHost,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::HostToClient => b"linkstream/1 key host->client",
            Direction::ClientToHost => b"linkstream/1 key client->host",
        }
    }
}

/// The highest packet number a session may use: the session ends before a
/// nonce could repeat.
pub const MAX_PN: u64 = 1 << 62;

/// The default rekey interval exponent: a key seals at most 2^23 packets,
/// the AES-GCM confidentiality limit RFC 9001 (§6.6) sets for QUIC.
pub const DEFAULT_REKEY_SHIFT: u8 = 23;

/// The secret both ends derive their keys from.
#[derive(Clone)]
pub struct Secret {
    prk: Hkdf<Sha256>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

// r[impl session.crypto.keys]
impl Secret {
    /// Extract the session secret from the pre-shared key and both randoms.
    pub fn derive(psk: &[u8], client_random: &[u8], host_random: &[u8]) -> Secret {
        let mut salt = Vec::with_capacity(client_random.len() + host_random.len());
        salt.extend_from_slice(client_random);
        salt.extend_from_slice(host_random);
        Secret {
            prk: Hkdf::<Sha256>::new(Some(&salt), psk),
        }
    }

    /// A 16-byte value proving knowledge of the secret, bound to `context`.
    pub fn confirm(&self, label: &[u8], context: &[u8]) -> [u8; 16] {
        let mut out = [0u8; 16];
        self.prk
            .expand_multi_info(&[b"linkstream/1 confirm ", label, context], &mut out)
            .expect("16 bytes is a valid HKDF length");
        out
    }

    fn key(&self, dir: Direction, epoch: u64) -> Aes128Gcm {
        let mut key = [0u8; 16];
        self.prk
            .expand_multi_info(&[dir.label(), &epoch.to_le_bytes()], &mut key)
            .expect("16 bytes is a valid HKDF length");
        Aes128Gcm::new(&key.into())
    }
}

/// Compare two tags without an early exit.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn nonce(pn: u64) -> Nonce<Aes128Gcm> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    n.into()
}

/// Seals one direction's messages.
pub struct Sealer {
    secret: Secret,
    dir: Direction,
    shift: u8,
    epoch: u64,
    cipher: Aes128Gcm,
    rekeys: u64,
}

// r[impl session.crypto.nonce]
impl Sealer {
    /// A sealer for `dir`, switching keys every `2^shift` packets.
    pub fn new(secret: Secret, dir: Direction, shift: u8) -> Sealer {
        let cipher = secret.key(dir, 0);
        Sealer {
            secret,
            dir,
            shift,
            epoch: 0,
            cipher,
            rekeys: 0,
        }
    }

    /// How many times the key changed.
    pub fn rekeys(&self) -> u64 {
        self.rekeys
    }

    /// Encrypt `body` in place, authenticating `aad` (the outer header), and
    /// return the tag. `pn` must be strictly greater than every earlier one.
    pub fn seal(&mut self, pn: u64, aad: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        let epoch = pn >> self.shift;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.cipher = self.secret.key(self.dir, epoch);
            self.rekeys += 1;
        }
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(pn), aad, body.into())
            .expect("AES-GCM seals any message below 64 GiB");
        tag.into()
    }
}

/// Opens the other direction's messages.
pub struct Opener {
    secret: Secret,
    dir: Direction,
    shift: u8,
    keys: [(u64, Aes128Gcm); 2],
}

impl Opener {
    /// An opener for messages sent in `dir`.
    pub fn new(secret: Secret, dir: Direction, shift: u8) -> Opener {
        let k0 = secret.key(dir, 0);
        let k1 = secret.key(dir, 1);
        Opener {
            secret,
            dir,
            shift,
            keys: [(0, k0), (1, k1)],
        }
    }

    /// Decrypt `body` (ciphertext without its tag) in place. On failure the
    /// contents of `body` are unspecified and must not be used.
    pub fn open(&mut self, pn: u64, aad: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
        let epoch = pn >> self.shift;
        let slot = (epoch & 1) as usize;
        if self.keys[slot].0 != epoch {
            self.keys[slot] = (epoch, self.secret.key(self.dir, epoch));
        }
        let Ok(tag) = Tag::<Aes128Gcm>::try_from(tag) else {
            return false;
        };
        self.keys[slot]
            .1
            .decrypt_inout_detached(&nonce(pn), aad, body.into(), &tag)
            .is_ok()
    }
}

/// Packet numbers further ahead of the highest seen than this are refused
/// before any cryptography runs.
pub const MAX_AHEAD: u64 = 1 << 20;

/// How many packet numbers behind the highest seen are still accepted.
pub const WINDOW: u64 = 4096;

/// The outcome of checking a packet number against the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Not seen before and within the window.
    Fresh,
    /// Seen before.
    Duplicate,
    /// Older than the window.
    TooOld,
    /// Implausibly far ahead.
    TooFarAhead,
}

// r[impl session.crypto.replay]
/// A sliding window over received packet numbers: each is accepted once.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    highest: Option<u64>,
    bits: Vec<u64>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            highest: None,
            bits: vec![0; (WINDOW / 64) as usize],
        }
    }
}

impl ReplayWindow {
    /// Whether `pn` would be accepted (does not record it).
    pub fn check(&self, pn: u64) -> Replay {
        let Some(h) = self.highest else {
            return if pn > MAX_AHEAD {
                Replay::TooFarAhead
            } else {
                Replay::Fresh
            };
        };
        if pn > h {
            if pn - h > MAX_AHEAD {
                Replay::TooFarAhead
            } else {
                Replay::Fresh
            }
        } else if h - pn >= WINDOW {
            Replay::TooOld
        } else if self.get(pn) {
            Replay::Duplicate
        } else {
            Replay::Fresh
        }
    }

    fn bit(pn: u64) -> (usize, u64) {
        let i = pn % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn get(&self, pn: u64) -> bool {
        let (w, b) = Self::bit(pn);
        self.bits[w] & b != 0
    }

    /// Record `pn` as received (after it was authenticated).
    pub fn accept(&mut self, pn: u64) {
        match self.highest {
            Some(h) if pn <= h => {}
            Some(h) => {
                // Clear the slots the window slides over.
                let gap = pn - h;
                if gap >= WINDOW {
                    self.bits.iter_mut().for_each(|w| *w = 0);
                } else {
                    for p in h + 1..pn {
                        let (w, b) = Self::bit(p);
                        self.bits[w] &= !b;
                    }
                }
                self.highest = Some(pn);
            }
            None => {
                self.bits.iter_mut().for_each(|w| *w = 0);
                self.highest = Some(pn);
            }
        }
        let (w, b) = Self::bit(pn);
        self.bits[w] |= b;
    }
}

/// Fill `buf` with random bytes from the operating system (or the browser).
pub fn random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(shift: u8) -> (Sealer, Opener) {
        let s = Secret::derive(b"psk", &[1; 32], &[2; 32]);
        (
            Sealer::new(s.clone(), Direction::HostToClient, shift),
            Opener::new(s, Direction::HostToClient, shift),
        )
    }

    // r[verify session.crypto.nonce]
    #[test]
    fn keys_change_every_epoch_and_both_ends_follow() {
        let (mut s, mut o) = pair(3);
        let mut seen = std::collections::HashSet::new();
        for pn in 0..40u64 {
            let mut body = *b"same plaintext!!";
            let tag = s.seal(pn, b"hdr", &mut body);
            // Same plaintext, never the same ciphertext: nonce and key differ.
            assert!(seen.insert(body), "ciphertext repeated at pn {pn}");
            assert!(o.open(pn, b"hdr", &mut body, &tag), "pn {pn}");
            assert_eq!(&body, b"same plaintext!!");
        }
        assert_eq!(s.rekeys(), 4, "40 packets with 8 per key = 5 keys");
    }

    // r[verify session.crypto.keys]
    #[test]
    fn directions_and_sessions_have_distinct_keys() {
        let s = Secret::derive(b"psk", &[1; 32], &[2; 32]);
        let other = Secret::derive(b"psk", &[1; 32], &[3; 32]);
        let mut body = [7u8; 20];
        let tag = Sealer::new(s.clone(), Direction::HostToClient, 23).seal(0, b"", &mut body);
        let mut b2 = body;
        assert!(!Opener::new(s.clone(), Direction::ClientToHost, 23).open(0, b"", &mut b2, &tag));
        let mut b3 = body;
        assert!(!Opener::new(other, Direction::HostToClient, 23).open(0, b"", &mut b3, &tag));
        let mut b4 = body;
        assert!(Opener::new(s, Direction::HostToClient, 23).open(0, b"", &mut b4, &tag));
        assert_eq!(b4, [7u8; 20]);
    }

    #[test]
    fn tampering_fails_to_open() {
        let (mut s, mut o) = pair(23);
        let mut body = [5u8; 64];
        let tag = s.seal(9, b"aad", &mut body);
        for i in 0..64 {
            let mut b = body;
            b[i] ^= 1;
            assert!(!o.open(9, b"aad", &mut b, &tag));
        }
        let mut b = body;
        assert!(!o.open(9, b"aaD", &mut b, &tag));
        let mut b = body;
        assert!(!o.open(10, b"aad", &mut b, &tag));
    }

    // r[verify session.crypto.replay]
    #[test]
    fn window_accepts_each_number_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(5), Replay::Fresh);
        w.accept(5);
        assert_eq!(w.check(5), Replay::Duplicate);
        assert_eq!(w.check(3), Replay::Fresh);
        w.accept(3);
        assert_eq!(w.check(3), Replay::Duplicate);
        w.accept(5 + WINDOW);
        assert_eq!(w.check(5), Replay::TooOld);
        assert_eq!(w.check(6), Replay::Fresh);
        assert_eq!(w.check(5 + WINDOW), Replay::Duplicate);
        assert_eq!(w.check(5 + WINDOW + MAX_AHEAD + 1), Replay::TooFarAhead);
        // A slide clears the slots it passes over.
        w.accept(5 + 2 * WINDOW - 1);
        assert_eq!(w.check(5 + WINDOW + 1), Replay::Fresh);
    }
}
