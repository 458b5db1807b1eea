//! Host and client configuration.

use std::time::Duration;

use crate::SessionError;
use crate::bwe::BweConfig;
use crate::crypto::DEFAULT_REKEY_SHIFT;
use crate::fec::FecScheme;
use crate::pacer::PacingConfig;

/// Largest frame the wire format allows (the length field is checked
/// against this before anything is allocated).
pub const MAX_FRAME_LIMIT: usize = 1 << 30;

/// Data shards up to which [`FecScheme::Auto`] uses GF(2^8); above it
/// GF(2^16). Picked by measurement (`link-bench session`, BENCHMARKS.md).
pub const AUTO_RS16_ABOVE: usize = 64;

/// The host's side of the session.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Pre-shared secret: `Some` turns AES-GCM on (the client must hold the
    /// same secret), `None` sends in the clear.
    pub psk: Option<Vec<u8>>,
    /// Forward error correction on lossy links.
    pub fec: FecScheme,
    /// Parity shards per block, as a percentage of its data shards (0–100).
    pub parity_pct: u8,
    /// At least this many parity shards per block on lossy links (0–16).
    pub min_parity: u8,
    /// Raise the parity percentage when the client reports more loss
    /// (to `3 × loss% + 1`, never below `parity_pct`, at most 100).
    pub adaptive_parity: bool,
    /// Largest shard payload on lossy links; lowered to fit both links'
    /// maximum payload (and rounded down to an even number).
    pub shard_size: usize,
    /// Largest frame the host will send.
    pub max_frame: usize,
    /// How long `accept` waits for a client.
    pub handshake_timeout: Duration,
    /// First retransmission interval of handshake messages (doubles to 1 s).
    pub retransmit: Duration,
    /// Keys change every `2^rekey_shift` packets (10–40).
    pub rekey_shift: u8,
    /// On lossy links, `next_event` fails when nothing arrived from the
    /// client for this long (the client sends loss reports every
    /// `feedback_interval`, so a live client is never idle). Only
    /// authentic session messages count: a stream of Hellos or of messages
    /// that fail to open does not keep a session alive.
    pub idle_timeout: Duration,
    /// On lossy links, a Hello on an established session (the client
    /// restarted with the same address and port) ends the session with
    /// `SessionError::ClientRestarted` once nothing authentic arrived from
    /// the client for this long; a Hello while the client is live (a late
    /// duplicate, or a forged one) is only counted.
    pub restart_grace: Duration,
    /// Pacing of datagrams on lossy links (on by default).
    pub pacing: PacingConfig,
    /// Bandwidth estimation: start rate, bounds, probing.
    pub bwe: BweConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            psk: None,
            fec: FecScheme::Auto,
            parity_pct: 20,
            min_parity: 1,
            adaptive_parity: false,
            shard_size: 1400,
            max_frame: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            retransmit: Duration::from_millis(50),
            rekey_shift: DEFAULT_REKEY_SHIFT,
            idle_timeout: Duration::from_secs(10),
            restart_grace: Duration::from_secs(1),
            pacing: PacingConfig::default(),
            bwe: BweConfig::default(),
        }
    }
}

impl HostConfig {
    pub(crate) fn validate(&self) -> Result<(), SessionError> {
        let bad = |s: &str| Err(SessionError::InvalidConfig(s.into()));
        if self.parity_pct > 100 {
            return bad("parity_pct above 100");
        }
        if self.min_parity as usize > crate::fec::MAX_MIN_PARITY {
            return bad("min_parity above 16");
        }
        if self.shard_size < 64 || self.shard_size > u16::MAX as usize {
            return bad("shard_size outside 64..=65535");
        }
        if self.max_frame == 0 || self.max_frame > MAX_FRAME_LIMIT {
            return bad("max_frame outside 1..=1 GiB");
        }
        if !(10..=40).contains(&self.rekey_shift) {
            return bad("rekey_shift outside 10..=40");
        }
        if self.psk.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("pre-shared key shorter than 16 bytes");
        }
        let b = &self.bwe;
        if b.min_bps == 0 || b.min_bps > b.max_bps {
            return bad("bwe: min_bps must be above 0 and at most max_bps");
        }
        if !(b.pacing_gain.is_finite() && (1.0..=10.0).contains(&b.pacing_gain)) {
            return bad("bwe: pacing_gain outside 1..=10");
        }
        if self.pacing.batch == 0 || self.pacing.batch > 1024 {
            return bad("pacing: batch outside 1..=1024");
        }
        Ok(())
    }
}

/// The client's side of the session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Pre-shared secret: must match the host's (both `None` = clear text).
    pub psk: Option<Vec<u8>>,
    /// Largest frame the client accepts; the host's maximum must not be larger.
    pub max_frame: usize,
    /// Ceiling on the memory held by incomplete frames (lossy links); at
    /// least twice `max_frame`. Past it the oldest incomplete frame is given
    /// up and reported lost.
    pub max_pending_bytes: usize,
    /// An incomplete frame is reported lost when no shard of it arrived for
    /// this long.
    pub frame_timeout: Duration,
    /// ... or this long after a later frame completed without it.
    pub reorder_grace: Duration,
    /// Loss reports go to the host this often (and at once on a loss).
    pub feedback_interval: Duration,
    /// How long `connect` waits for the host.
    pub handshake_timeout: Duration,
    /// First retransmission interval of the `Hello` (doubles to 1 s).
    pub retransmit: Duration,
    /// Input events that may wait for acknowledgement.
    pub max_input_queue: usize,
    /// Smallest input retransmission timeout.
    pub min_rto: Duration,
    /// On lossy links, `next_frame` fails when nothing arrived from the
    /// host for this long (all copies of its `Bye` lost, or the host gone).
    pub idle_timeout: Duration,
    /// On lossy links, arrival reports for bandwidth estimation go to the
    /// host this often while packets arrive.
    pub arrival_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            psk: None,
            max_frame: 16 << 20,
            max_pending_bytes: 64 << 20,
            frame_timeout: Duration::from_millis(100),
            reorder_grace: Duration::from_millis(10),
            feedback_interval: Duration::from_millis(100),
            handshake_timeout: Duration::from_secs(10),
            retransmit: Duration::from_millis(50),
            max_input_queue: 4096,
            min_rto: Duration::from_millis(10),
            idle_timeout: Duration::from_secs(10),
            arrival_interval: Duration::from_millis(50),
        }
    }
}

impl ClientConfig {
    pub(crate) fn validate(&self) -> Result<(), SessionError> {
        let bad = |s: &str| Err(SessionError::InvalidConfig(s.into()));
        if self.max_frame == 0 || self.max_frame > MAX_FRAME_LIMIT {
            return bad("max_frame outside 1..=1 GiB");
        }
        if self.max_pending_bytes < 2 * self.max_frame {
            return bad("max_pending_bytes below twice max_frame");
        }
        if self.max_input_queue == 0 {
            return bad("max_input_queue is 0");
        }
        if self.psk.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("pre-shared key shorter than 16 bytes");
        }
        Ok(())
    }
}
