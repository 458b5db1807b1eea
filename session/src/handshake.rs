//! Handshake messages and the parameters they agree (`session.handshake.*`).
//!
//! Client → `Hello` (versions, its random, encryption wanted, its largest
//! acceptable frame, its link's maximum payload); host → `Welcome` (the
//! agreed parameters, its random, and when encrypting a confirmation value
//! that proves it holds the pre-shared key, bound to every parameter) or
//! `Reject` (a reason code and text); client → `Finish`, sealed with the new
//! keys when encrypting, which proves the client holds the key too. Hello is
//! resent until a Welcome or Reject arrives, Welcome until a Finish arrives.

use link_types::{LinkCaps, LinkRx, LinkTx};
use web_time::Instant;

use crate::SessionError;
use crate::client::with_deadline;
use crate::config::{AUTO_RS16_ABOVE, ClientConfig, HostConfig};
use crate::crypto::{Direction, Opener, Sealer, Secret, ct_eq, random};
use crate::error::RejectReason;
use crate::fec::FecScheme;
use crate::open::Guard;
use crate::stats::{ClientCounters, HostCounters, add, set};
use crate::tx::TxState;
use crate::wire::{
    FRAME_HEADER_LEN, Kind, OUTER_LEN, RANDOM_LEN, Reader, SHARD_HEADER_LEN, TAG_LEN, VERSION,
    WireError, Writer,
};

/// Retry messages the client follows in one handshake.
const MAX_RETRIES: u32 = 3;

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

/// Longest retry token a Hello may carry.
pub const TOKEN_MAX: usize = 64;

/// Bytes of a token made by [`RetryGate`]: its time bucket and a 16-byte MAC.
pub const TOKEN_LEN: usize = 4 + 16;

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

// r[impl session.handshake.amplification]
/// The host's anti-amplification budget before the client's address is
/// validated: it sends at most `factor` times the bytes it received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    received: u64,
    sent: u64,
    factor: u64,
    /// No limit (stream links: their peer is validated by construction).
    unlimited: bool,
}

impl Budget {
    pub(crate) fn new(factor: u64, unlimited: bool) -> Self {
        Budget {
            received: 0,
            sent: 0,
            factor,
            unlimited,
        }
    }

    /// `n` bytes arrived from the client's address.
    pub(crate) fn received(&mut self, n: usize) {
        self.received += n as u64;
    }

    /// Bytes that may still be sent.
    pub(crate) fn room(&self) -> u64 {
        if self.unlimited {
            return u64::MAX;
        }
        (self.received * self.factor).saturating_sub(self.sent)
    }

    /// Take `n` bytes if the budget has them.
    pub(crate) fn spend(&mut self, n: usize) -> bool {
        if self.room() < n as u64 {
            return false;
        }
        self.sent += n as u64;
        true
    }
}

/// How long one key of a [`RetryGate`] mints tokens; a token stays valid
/// for this long to twice this long (the current and the previous key).
pub const TOKEN_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

struct TokenKeys {
    bucket: u64,
    current: [u8; 32],
    previous: [u8; 32],
}

// r[impl session.handshake.retry]
/// Stateless address validation for a many-peer endpoint (a
/// [`link_types::AdmissionGate`]): under load it answers a Hello from an
/// unknown source with a [`Retry`] carrying a token, the MAC (HMAC-SHA-256,
/// truncated to 16 bytes) of the source address and a time bucket under a
/// random key that changes every [`TOKEN_PERIOD`] (the previous key is
/// kept, so a token is valid for one to two periods); it keeps no state per
/// source. A Hello carrying a valid token is admitted with its address
/// validated.
pub struct RetryGate {
    keys: std::sync::Mutex<TokenKeys>,
    epoch: web_time::Instant,
    period: std::time::Duration,
}

impl RetryGate {
    /// A gate with fresh random keys rotating every [`TOKEN_PERIOD`].
    pub fn new() -> Result<RetryGate, getrandom::Error> {
        Self::with_period(TOKEN_PERIOD)
    }

    /// A gate whose keys rotate every `period` (at least 1 ms).
    pub fn with_period(period: std::time::Duration) -> Result<RetryGate, getrandom::Error> {
        let mut current = [0; 32];
        let mut previous = [0; 32];
        crate::crypto::random(&mut current)?;
        crate::crypto::random(&mut previous)?;
        Ok(RetryGate {
            keys: std::sync::Mutex::new(TokenKeys {
                bucket: 0,
                current,
                previous,
            }),
            epoch: web_time::Instant::now(),
            period: period.max(std::time::Duration::from_millis(1)),
        })
    }

    fn bucket_now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() / self.period.as_nanos()) as u64
    }

    /// The keys of the current and the previous bucket, rotated to `now`.
    fn keys(&self, now: u64) -> (u64, [u8; 32], [u8; 32]) {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if now > k.bucket {
            let (mut a, mut b) = ([0; 32], [0; 32]);
            // Without randomness the old keys stay: tokens still verify,
            // they just live longer.
            if crate::crypto::random(&mut a).is_ok() && crate::crypto::random(&mut b).is_ok() {
                k.previous = if now == k.bucket + 1 { k.current } else { b };
                k.current = a;
            }
            k.bucket = now;
        }
        (k.bucket, k.current, k.previous)
    }

    fn mac(key: &[u8; 32], source: std::net::SocketAddr, bucket: u32) -> [u8; 16] {
        let mut data = Vec::with_capacity(1 + 16 + 2 + 4);
        match source.ip() {
            std::net::IpAddr::V4(a) => {
                data.push(4);
                data.extend_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                data.push(6);
                data.extend_from_slice(&a.octets());
            }
        }
        data.extend_from_slice(&source.port().to_be_bytes());
        data.extend_from_slice(&bucket.to_le_bytes());
        let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(key), &data);
        prk[..16].try_into().expect("16 of 32")
    }

    /// A token for `source`, valid now.
    pub fn token(&self, source: std::net::SocketAddr) -> [u8; TOKEN_LEN] {
        self.token_at(source, self.bucket_now())
    }

    fn token_at(&self, source: std::net::SocketAddr, now: u64) -> [u8; TOKEN_LEN] {
        let (bucket, current, _) = self.keys(now);
        let b = bucket as u32;
        let mut t = [0; TOKEN_LEN];
        t[..4].copy_from_slice(&b.to_le_bytes());
        t[4..].copy_from_slice(&Self::mac(&current, source, b));
        t
    }

    /// Whether `token` was made by this gate for `source` in the current or
    /// the previous bucket.
    pub fn verify(&self, source: std::net::SocketAddr, token: &[u8]) -> bool {
        self.verify_at(source, token, self.bucket_now())
    }

    fn verify_at(&self, source: std::net::SocketAddr, token: &[u8], now: u64) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let (bucket, current, previous) = self.keys(now);
        let b = u32::from_le_bytes(token[..4].try_into().expect("4"));
        let key = if b == bucket as u32 {
            current
        } else if bucket > 0 && b == (bucket - 1) as u32 {
            previous
        } else {
            return false;
        };
        crate::crypto::ct_eq(&Self::mac(&key, source, b), &token[4..])
    }
}

impl link_types::AdmissionGate for RetryGate {
    fn admit(
        &self,
        source: std::net::SocketAddr,
        datagram: &[u8],
        demand_proof: bool,
        reply: &mut Vec<u8>,
    ) -> link_types::Admission {
        use link_types::Admission;
        let hello = crate::wire::read_outer(datagram)
            .ok()
            .filter(|o| o.kind == crate::wire::Kind::Hello)
            .and_then(|_| {
                let body = &datagram[OUTER_LEN..];
                Hello::read(body).ok().map(|h| (h, hello_token(body)))
            });
        let Some((hello, token)) = hello else {
            // Not a Hello: no handshake can start with it.
            return if demand_proof {
                Admission::Drop
            } else {
                Admission::Admit
            };
        };
        if token.is_some_and(|t| self.verify(source, t)) {
            return Admission::AdmitValidated;
        }
        if !demand_proof {
            return Admission::Admit;
        }
        let body = Retry {
            client_random: hello.random,
            token: self.token(source).to_vec(),
        }
        .to_bytes();
        reply.resize(OUTER_LEN, 0);
        crate::wire::write_outer(reply, crate::wire::Kind::Retry, 0);
        reply.extend_from_slice(&body);
        Admission::Reply
    }
}

// The two ends' handshake loops (`session.handshake.*`), one beside the
// other; `Host::accept` and `Client::connect` run them and build the
// session from what they settle.

/// The host's side: wait for a Hello, agree the parameters (or Reject),
/// resend the Welcome within the amplification budget until the client's
/// Finish (or, encrypting, another authentic message) arrives. Sets the
/// keys on `txs` and `guard`, marks the link validated when the client
/// proved its address, and returns the agreed parameters.
pub(crate) async fn host_side<T: LinkTx, R: LinkRx>(
    txs: &mut TxState<T>,
    rx: &mut R,
    guard: &mut Guard,
    config: &HostConfig,
    caps: LinkCaps,
    stats: &HostCounters,
    deadline: Instant,
) -> Result<Params, SessionError> {
    let timeout = |stats: &HostCounters| SessionError::HandshakeTimeout {
        waited: config.handshake_timeout,
        auth_failures: stats.auth_failures.get(),
    };
    // Everything sent before the client's address is validated stays
    // within 3x what arrived from it (stream links: validated by
    // construction).
    let mut budget = Budget::new(3, caps.reliable);
    // Wait for a Hello.
    let hello = loop {
        let Some(r) = with_deadline(rx.recv(), deadline).await else {
            return Err(timeout(stats));
        };
        let Some(msg) = r? else {
            return Err(SessionError::ClosedDuringHandshake);
        };
        budget.received(msg.len());
        add(&stats.handshake_bytes_received, msg.len() as u64);
        match guard.open(msg.as_slice()) {
            Ok((Kind::Hello, _, body)) => match Hello::read(body) {
                Ok(h) => break h,
                Err(_) => add(&stats.malformed_dropped, 1),
            },
            Ok(_) => add(&stats.unexpected_dropped, 1),
            Err(d) => crate::host::count_drop(stats, d),
        }
    };
    let params = match agree(&hello, config, caps) {
        Ok(p) => p,
        Err((reason, detail)) => {
            // The reason's text is cut to fit the budget.
            let room = budget.room().min(4096) as usize;
            let fixed = txs.wire_len(Kind::Reject, 2);
            let text = room.saturating_sub(fixed);
            let mut body = reject_body(reason, &detail);
            if body.len() > 2 + text {
                body = reject_body(reason, &detail[..floor_char(&detail, text)]);
            }
            let wire = txs.wire_len(Kind::Reject, body.len());
            if budget.spend(wire) {
                txs.send(
                    Kind::Reject,
                    body.len(),
                    |b| b.copy_from_slice(&body),
                    &stats.messages_sent,
                )
                .await?;
                txs.tx.flush().await?;
                add(&stats.handshake_bytes_sent, wire as u64);
            } else {
                add(&stats.amplification_held, 1);
            }
            return Err(SessionError::Rejected { reason, detail });
        }
    };
    let mut host_random = [0u8; RANDOM_LEN];
    random(&mut host_random).map_err(SessionError::Random)?;
    let mut welcome = Welcome {
        client_random: hello.random,
        host_random,
        params,
        confirm: [0; 16],
    };
    if let Some(psk) = &config.psk {
        let secret = Secret::derive(psk, &hello.random, &host_random);
        welcome.confirm = secret.confirm(b"host", &welcome.signed_part());
        txs.sealer = Some(Sealer::new(
            secret.clone(),
            Direction::HostToClient,
            params.rekey_shift,
        ));
        guard.opener = Some(Opener::new(
            secret,
            Direction::ClientToHost,
            params.rekey_shift,
        ));
    }
    let welcome = welcome.to_bytes();
    let welcome_wire = txs.wire_len(Kind::Welcome, WELCOME_LEN);
    let encrypted = config.psk.is_some();
    let mut backoff = Backoff::new(config.retransmit, deadline, caps.reliable);
    // Whether the client proved its address (it received our Welcome).
    let validated = 'hs: loop {
        // r[impl session.handshake.amplification]
        let until = if budget.spend(welcome_wire) {
            txs.send(
                Kind::Welcome,
                WELCOME_LEN,
                |b| b.copy_from_slice(&welcome),
                &stats.messages_sent,
            )
            .await?;
            txs.tx.flush().await?;
            add(&stats.handshake_bytes_sent, welcome_wire as u64);
            backoff.next_wait()
        } else {
            // Over budget: wait for more bytes from the client (its
            // Hello resends) rather than resend on a timer.
            add(&stats.amplification_held, 1);
            deadline
        };
        loop {
            let Some(r) = with_deadline(rx.recv(), until).await else {
                if Instant::now() >= deadline {
                    return Err(timeout(stats));
                }
                continue 'hs;
            };
            let Some(msg) = r? else {
                return Err(SessionError::ClosedDuringHandshake);
            };
            budget.received(msg.len());
            add(&stats.handshake_bytes_received, msg.len() as u64);
            match guard.open(msg.as_slice()) {
                // The client did not hear the Welcome: answer at once.
                Ok((Kind::Hello, _, body)) => {
                    if Hello::read(body).is_ok_and(|h| h.random == hello.random) {
                        continue 'hs;
                    }
                    add(&stats.unexpected_dropped, 1);
                }
                // r[impl session.handshake.validation]
                // A Finish proves the address when it is authentic
                // (encrypting: sealed with keys only our Welcome's
                // random gives) or echoes our random (in the clear).
                Ok((Kind::Finish, _, body)) => {
                    break 'hs encrypted || ct_eq(body, &host_random);
                }
                // Anything authentic after the Finish: proof when
                // encrypting. In the clear it proves nothing, so the
                // Welcome is resent (the client answers with a Finish).
                Ok((Kind::Feedback | Kind::Input | Kind::Arrivals, _, _)) => {
                    if encrypted {
                        break 'hs true;
                    }
                    continue 'hs;
                }
                Ok(_) => add(&stats.unexpected_dropped, 1),
                Err(d) => crate::host::count_drop(stats, d),
            }
        }
    };
    if validated {
        set(&stats.address_validated, 1);
        txs.tx.mark_validated();
    }
    Ok(params)
}

/// The client's side: send the Hello (again on a timer on lossy links,
/// with the host's token after a Retry) until a Welcome or Reject arrives,
/// check the Welcome's parameters and confirmation, set the keys on `txs`
/// and `guard`, and send the Finish. Returns the agreed parameters and the
/// host's random.
pub(crate) async fn client_side<T: LinkTx, R: LinkRx>(
    txs: &mut TxState<T>,
    rx: &mut R,
    guard: &mut Guard,
    config: &ClientConfig,
    caps: LinkCaps,
    stats: &ClientCounters,
) -> Result<(Params, [u8; RANDOM_LEN]), SessionError> {
    let mut client_random = [0u8; RANDOM_LEN];
    random(&mut client_random).map_err(SessionError::Random)?;
    let hello = Hello {
        min_version: VERSION,
        max_version: VERSION,
        random: client_random,
        encryption: config.psk.is_some(),
        max_frame: config.max_frame as u32,
        max_message: caps.max_payload.min(u32::MAX as usize) as u32,
    }
    .to_bytes();
    let start = Instant::now();
    let deadline = start + config.handshake_timeout;
    let mut backoff = Backoff::new(config.retransmit, deadline, caps.reliable);
    // The Hello as sent: with the host's retry token once it asked.
    let mut sent_hello = hello.clone();
    let mut retries = 0;
    let welcome = 'hs: loop {
        txs.send(
            Kind::Hello,
            sent_hello.len(),
            |b| b.copy_from_slice(&sent_hello),
            &stats.messages_sent,
        )
        .await?;
        txs.tx.flush().await?;
        let until = backoff.next_wait();
        loop {
            let Some(r) = with_deadline(rx.recv(), until).await else {
                if Instant::now() >= deadline {
                    return Err(SessionError::HandshakeTimeout {
                        waited: config.handshake_timeout,
                        auth_failures: stats.auth_failures.get(),
                    });
                }
                continue 'hs;
            };
            let Some(msg) = r? else {
                return Err(SessionError::ClosedDuringHandshake);
            };
            let (kind, body) = match guard.open(msg.as_slice()) {
                Ok((k, _, b)) => (k, b.to_vec()),
                Err(d) => {
                    crate::client::count_drop(stats, d);
                    continue;
                }
            };
            match kind {
                Kind::Welcome => match Welcome::read(&body) {
                    Ok(w) if w.client_random == client_random => break 'hs w,
                    Ok(_) => add(&stats.unexpected_dropped, 1),
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                Kind::Reject => match read_reject(&body) {
                    Ok((reason, detail)) => {
                        return Err(SessionError::Rejected { reason, detail });
                    }
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                // r[impl session.handshake.retry]
                // The host wants proof of address: resend the Hello
                // with its token at once (a few times at most, so a
                // forged stream of Retries cannot keep us busy).
                Kind::Retry => match Retry::read(&body) {
                    Ok(r) if r.client_random == client_random && retries < MAX_RETRIES => {
                        retries += 1;
                        add(&stats.retries_followed, 1);
                        sent_hello = hello_with_token(&hello, &r.token);
                        continue 'hs;
                    }
                    Ok(_) => add(&stats.unexpected_dropped, 1),
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                _ => add(&stats.unexpected_dropped, 1),
            }
        }
    };
    check_welcome(&welcome, config, caps)?;
    let p = welcome.params;
    if let Some(psk) = &config.psk {
        let secret = Secret::derive(psk, &client_random, &welcome.host_random);
        let expect = secret.confirm(b"host", &welcome.signed_part());
        if !ct_eq(&expect, &welcome.confirm) {
            return Err(SessionError::AuthFailed);
        }
        txs.sealer = Some(Sealer::new(
            secret.clone(),
            Direction::ClientToHost,
            p.rekey_shift,
        ));
        guard.opener = Some(Opener::new(secret, Direction::HostToClient, p.rekey_shift));
    }
    // r[impl session.handshake.validation]
    // The Finish echoes the host's random: proof that we received the
    // Welcome at our address.
    let host_random = welcome.host_random;
    txs.send(
        Kind::Finish,
        RANDOM_LEN,
        |b| b.copy_from_slice(&host_random),
        &stats.messages_sent,
    )
    .await?;
    txs.tx.flush().await?;
    Ok((p, host_random))
}

/// What one end accepts of agreed parameters: whether the client encrypts,
/// the largest frame the client accepts, and the largest message and kind
/// of the link they travel on.
struct Limits {
    encryption: bool,
    max_frame: usize,
    max_payload: usize,
    stream: bool,
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The one check of agreed parameters, the same on both ends: the host
/// runs it before it sends them (its refusal becomes a Reject with the
/// reason), the client on the Welcome it received.
fn check_params(p: &Params, l: &Limits) -> Result<(), (RejectReason, String)> {
    use RejectReason::*;
    if p.version != VERSION {
        return Err((
            Version,
            format!("wire version {}, this end speaks {VERSION}", p.version),
        ));
    }
    if p.encryption != l.encryption {
        return Err((
            Encryption,
            format!(
                "host encryption {}, client {}",
                on_off(p.encryption),
                on_off(l.encryption)
            ),
        ));
    }
    if p.max_frame as usize > l.max_frame {
        return Err((
            MaxFrame,
            format!(
                "host frames up to {} bytes, client accepts {}",
                p.max_frame, l.max_frame
            ),
        ));
    }
    let m = p.max_message as usize;
    let tag = if p.encryption { TAG_LEN } else { 0 };
    if m > l.max_payload {
        return Err((
            ShardSize,
            format!("messages of {m} bytes exceed the link's {}", l.max_payload),
        ));
    }
    if m < crate::wire::MIN_MESSAGE {
        return Err((
            ShardSize,
            format!(
                "messages of {m} bytes; a session needs {}",
                crate::wire::MIN_MESSAGE
            ),
        ));
    }
    if p.stream {
        if !l.stream {
            return Err((
                ShardSize,
                "frames sent whole need a stream link; this link is lossy".into(),
            ));
        }
        if m <= OUTER_LEN + FRAME_HEADER_LEN + tag {
            return Err((
                ShardSize,
                format!("messages of {m} bytes are too small for a frame part"),
            ));
        }
    } else {
        let s = p.shard_size as usize;
        if s < 64 || !s.is_multiple_of(2) || OUTER_LEN + SHARD_HEADER_LEN + s + tag > m {
            return Err((
                ShardSize,
                format!(
                    "shard size {s} in messages of {m} bytes (at least 64, even, and it must fit)"
                ),
            ));
        }
    }
    Ok(())
}

// r[impl session.handshake.host]
/// The host's answer to a Hello: the parameters it runs, or why not.
fn agree(
    hello: &Hello,
    config: &HostConfig,
    caps: LinkCaps,
) -> Result<Params, (RejectReason, String)> {
    if !hello.speaks_ours() {
        return Err((
            RejectReason::Version,
            format!(
                "host speaks version {VERSION}, client {}..={}",
                hello.min_version, hello.max_version
            ),
        ));
    }
    let max_payload = caps
        .max_payload
        .min(hello.max_message as usize)
        .min(u32::MAX as usize);
    let tag = if config.psk.is_some() { TAG_LEN } else { 0 };
    let stream = caps.is_stream();
    let shard_size = if stream {
        0
    } else {
        let room = max_payload.saturating_sub(OUTER_LEN + SHARD_HEADER_LEN + tag);
        config.shard_size.min(room) & !1
    };
    let p = Params {
        version: VERSION,
        encryption: config.psk.is_some(),
        stream,
        fec: config.fec,
        auto_threshold: AUTO_RS16_ABOVE as u16,
        shard_size: shard_size as u16,
        max_frame: config.max_frame as u32,
        max_message: max_payload as u32,
        parity_pct: config.parity_pct,
        min_parity: config.min_parity,
        rekey_shift: config.rekey_shift,
    };
    check_params(
        &p,
        &Limits {
            encryption: hello.encryption,
            max_frame: hello.max_frame as usize,
            max_payload,
            stream,
        },
    )?;
    Ok(p)
}

/// The longest prefix of `s` of at most `n` bytes that ends on a char boundary.
fn floor_char(s: &str, n: usize) -> usize {
    let mut cut = n.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

// r[impl session.handshake.client]
/// The client's check of a Welcome: the same check as the host's, and the
/// ranges the host's own configuration guarantees.
fn check_welcome(w: &Welcome, config: &ClientConfig, caps: LinkCaps) -> Result<(), SessionError> {
    let p = &w.params;
    let limits = Limits {
        encryption: config.psk.is_some(),
        max_frame: config.max_frame,
        max_payload: caps.max_payload,
        stream: caps.is_stream(),
    };
    check_params(p, &limits).map_err(|(_, detail)| SessionError::Incompatible(detail))?;
    if p.parity_pct > 100
        || p.min_parity as usize > crate::fec::MAX_MIN_PARITY
        || !(10..=40).contains(&p.rekey_shift)
    {
        return Err(SessionError::Incompatible(
            "parity or rekey parameters out of range".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use link_types::{Admission, AdmissionGate};

    fn hello_datagram(token: &[u8]) -> Vec<u8> {
        let h = Hello {
            min_version: VERSION,
            max_version: VERSION,
            random: [3; RANDOM_LEN],
            encryption: false,
            max_frame: 1 << 20,
            max_message: 1472,
        };
        let mut m = vec![0; OUTER_LEN];
        crate::wire::write_outer(&mut m, crate::wire::Kind::Hello, 0);
        m.extend_from_slice(&hello_with_token(&h.to_bytes(), token));
        m
    }

    // r[verify session.handshake.host]
    // r[verify session.handshake.client]
    /// Both ends run one parameter check: what the host agrees the client
    /// accepts, and each parameter the client cannot run is refused with
    /// the same wording the host's Reject would carry.
    #[test]
    fn the_host_and_the_client_check_parameters_alike() {
        let caps = LinkCaps::datagram(1472);
        let hello = Hello {
            min_version: VERSION,
            max_version: VERSION,
            random: [1; RANDOM_LEN],
            encryption: true,
            max_frame: 1 << 20,
            max_message: 1472,
        };
        let host = HostConfig {
            psk: Some(vec![7; 32]),
            max_frame: 1 << 20,
            ..Default::default()
        };
        let client = ClientConfig {
            psk: Some(vec![7; 32]),
            max_frame: 1 << 20,
            ..Default::default()
        };
        let p = agree(&hello, &host, caps).expect("agreed");
        let welcome = |p: Params| Welcome {
            client_random: [1; RANDOM_LEN],
            host_random: [2; RANDOM_LEN],
            params: p,
            confirm: [0; 16],
        };
        check_welcome(&welcome(p), &client, caps).expect("the client runs what the host agreed");
        let refused =
            |q: Params, c: &ClientConfig, caps: LinkCaps| match check_welcome(&welcome(q), c, caps)
            {
                Err(SessionError::Incompatible(s)) => s,
                other => panic!("expected Incompatible, got {other:?}"),
            };
        assert!(refused(Params { version: 9, ..p }, &client, caps).contains("version 9"));
        assert!(refused(p, &ClientConfig::default(), caps).contains("encryption on, client off"));
        let small = ClientConfig {
            max_frame: 1000,
            ..client.clone()
        };
        let host_said = agree(
            &Hello {
                max_frame: 1000,
                ..hello.clone()
            },
            &host,
            caps,
        )
        .unwrap_err();
        assert_eq!(host_said.0, RejectReason::MaxFrame);
        assert_eq!(
            refused(p, &small, caps),
            host_said.1,
            "one check, one wording"
        );
        for shard_size in [62, 65, 1460] {
            let s = refused(Params { shard_size, ..p }, &client, caps);
            assert!(s.contains("shard size"), "{shard_size}: {s}");
        }
        assert!(refused(Params { stream: true, ..p }, &client, caps).contains("stream link"));
        assert!(refused(p, &client, LinkCaps::datagram(1200)).contains("exceed the link"));
        assert!(
            refused(
                Params {
                    rekey_shift: 50,
                    ..p
                },
                &client,
                caps
            )
            .contains("rekey")
        );
    }

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
    fn tokens_bind_the_address_and_expire_after_two_periods() {
        let g = RetryGate::new().unwrap();
        let a: std::net::SocketAddr = "198.18.0.1:4000".parse().unwrap();
        let t = g.token_at(a, 5);
        assert!(g.verify_at(a, &t, 5));
        assert!(
            !g.verify_at("198.18.0.1:4001".parse().unwrap(), &t, 5),
            "other port"
        );
        assert!(
            !g.verify_at("198.18.0.2:4000".parse().unwrap(), &t, 5),
            "other address"
        );
        assert!(
            !g.verify_at("[::1]:4000".parse().unwrap(), &t, 5),
            "other family"
        );
        for i in 0..TOKEN_LEN {
            let mut bad = t;
            bad[i] ^= 1;
            assert!(!g.verify_at(a, &bad, 5), "byte {i} flipped");
        }
        assert!(!g.verify_at(a, &t[..TOKEN_LEN - 1], 5));
        // Another gate's keys do not verify it.
        let other = RetryGate::new().unwrap();
        assert!(!other.verify_at(a, &t, 5));
        // The previous key still verifies; two periods later it is gone
        // (the keys rotated: a new key for every bucket).
        assert!(g.verify_at(a, &t, 6), "one period later");
        let t6 = g.token_at(a, 6);
        assert_ne!(t6[4..], t[4..], "a new key each period");
        assert!(!g.verify_at(a, &t, 7), "two periods later");
        assert!(g.verify_at(a, &t6, 7));
        assert!(!g.verify_at(a, &t6, 9), "after a gap both keys are new");
        // Now-based tokens verify now.
        assert!(g.verify(a, &g.token(a)));
    }

    // r[verify session.handshake.retry]
    #[test]
    fn the_gate_answers_a_hello_with_a_small_retry_and_admits_the_token() {
        let g = RetryGate::new().unwrap();
        let a: std::net::SocketAddr = "198.18.0.9:5000".parse().unwrap();
        let hello = hello_datagram(&[]);
        let mut reply = Vec::new();
        assert_eq!(g.admit(a, &hello, false, &mut reply), Admission::Admit);
        assert!(reply.is_empty());
        assert_eq!(g.admit(a, &hello, true, &mut reply), Admission::Reply);
        assert!(
            reply.len() <= 3 * hello.len(),
            "{} for {}",
            reply.len(),
            hello.len()
        );
        assert_eq!(reply.len(), 63);
        let o = crate::wire::read_outer(&reply).unwrap();
        assert_eq!(o.kind, crate::wire::Kind::Retry);
        let r = Retry::read(&reply[OUTER_LEN..]).unwrap();
        assert_eq!(r.client_random, [3; RANDOM_LEN]);
        let with = hello_datagram(&r.token);
        let mut reply2 = Vec::new();
        assert_eq!(
            g.admit(a, &with, true, &mut reply2),
            Admission::AdmitValidated
        );
        assert!(reply2.is_empty());
        // From another address the token is worthless.
        let b: std::net::SocketAddr = "198.18.0.10:5000".parse().unwrap();
        assert_eq!(g.admit(b, &with, true, &mut reply2), Admission::Reply);
        assert_eq!(g.admit(b, &with, false, &mut Vec::new()), Admission::Admit);
        // Not a Hello: dropped under load, admitted otherwise.
        assert_eq!(g.admit(a, b"junk", true, &mut Vec::new()), Admission::Drop);
        assert_eq!(
            g.admit(a, b"junk", false, &mut Vec::new()),
            Admission::Admit
        );
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

    // r[verify session.handshake.amplification]
    #[test]
    fn the_budget_is_three_times_what_arrived() {
        let mut b = Budget::new(3, false);
        assert!(!b.spend(1), "nothing received, nothing sent");
        b.received(53);
        assert!(b.spend(109));
        assert!(!b.spend(109), "a second Welcome needs a second Hello");
        assert_eq!(b.room(), 50);
        b.received(53);
        assert!(b.spend(109));
        let mut s = Budget::new(3, true);
        assert!(s.spend(1 << 20), "stream links are exempt");
    }
}
