//! The host: handshake, frames out, input and loss reports in.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::lock::Mutex as AsyncMutex;
use link_types::{Link, LinkRx, LinkTx};
use web_time::Instant;

use crate::SessionError;
use crate::client::{FEEDBACK_LEN, with_deadline};
use crate::config::{AUTO_RS16_ABOVE, HostConfig};
use crate::crypto::{Direction, Opener, Sealer, Secret, random};
use crate::error::RejectReason;
use crate::fec::{FecEncoder, Layout, max_data, parity_for};
use crate::frame::FrameFlags;
use crate::handshake::{Backoff, Hello, Params, WELCOME_LEN, Welcome, reject_body};
use crate::input::{InputEvent, InputReceiver};
use crate::open::{Dropped, Guard};
use crate::stats::{HostCounters, HostStats, add, set};
use crate::tx::TxState;
use crate::wire::{
    FRAME_HEADER_LEN, FrameHeader, Kind, OUTER_LEN, RANDOM_LEN, Reader, SHARD_HEADER_LEN,
    ShardHeader, TAG_LEN, VERSION, Writer,
};

struct Shared<T> {
    tx: AsyncMutex<TxState<T>>,
    ack: Mutex<Option<u64>>,
    stats: HostCounters,
    params: Params,
}

impl<T: LinkTx> Shared<T> {
    /// Send a pending input acknowledgement if the link takes it now.
    fn flush_ack(&self, tx: &mut TxState<T>) -> Result<(), SessionError> {
        let pending = *self.ack.lock().expect("ack lock");
        if let Some(next) = pending {
            match tx.try_send(
                Kind::InputAck,
                8,
                |b| b.copy_from_slice(&next.to_le_bytes()),
                &self.stats.messages_sent,
            ) {
                Some(Ok(())) => {
                    let mut a = self.ack.lock().expect("ack lock");
                    if *a == Some(next) {
                        *a = None;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            tx.try_flush()?;
        }
        Ok(())
    }
}

fn count_drop(stats: &HostCounters, d: Dropped) {
    match d {
        Dropped::Malformed => add(&stats.malformed_dropped, 1),
        Dropped::Auth => add(&stats.auth_failures, 1),
        Dropped::Replay => add(&stats.replays_dropped, 1),
    }
}

/// The host's sending side: frames to the client.
pub struct Host<T: LinkTx> {
    shared: Arc<Shared<T>>,
    encoder: FecEncoder,
    frame: u32,
    scratch: Vec<u8>,
    closed: bool,
}

/// What the host's [`next_event`](HostEvents::next_event) yields.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent {
    /// An input event, exactly once and in the order the client sent it.
    Input(InputEvent),
    /// The client lost a frame: send a keyframe.
    KeyframeRequest {
        /// The newest frame the client reported lost.
        lost_frame: u32,
    },
    /// A periodic loss report.
    LossReport(LossReport),
}

/// The client's periodic loss report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossReport {
    /// Frames the client delivered so far.
    pub frames_delivered: u64,
    /// Frames the client lost so far.
    pub frames_lost: u64,
    /// Frames parity rebuilt so far.
    pub frames_recovered: u64,
    /// Messages lost over the last interval, in parts per million.
    pub loss_ppm: u32,
}

/// The host's receiving side: input events and loss reports.
///
/// Keep calling `next_event`: it also acknowledges input.
pub struct HostEvents<T: LinkTx, R: LinkRx> {
    shared: Arc<Shared<T>>,
    rx: R,
    guard: Guard,
    input: InputReceiver,
    events: VecDeque<HostEvent>,
    last_lost: u32,
    base_parity: u8,
    adaptive: bool,
    idle_timeout: Duration,
    ended: bool,
}

// r[impl session.handshake.host]
fn agree(
    hello: &Hello,
    config: &HostConfig,
    caps: link_types::LinkCaps,
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
    if hello.encryption != config.psk.is_some() {
        return Err((
            RejectReason::Encryption,
            format!(
                "host encryption {}, client {}",
                if config.psk.is_some() { "on" } else { "off" },
                if hello.encryption { "on" } else { "off" }
            ),
        ));
    }
    if (hello.max_frame as usize) < config.max_frame {
        return Err((
            RejectReason::MaxFrame,
            format!(
                "host frames up to {} bytes, client accepts {}",
                config.max_frame, hello.max_frame
            ),
        ));
    }
    let max_message = caps
        .max_payload
        .min(hello.max_message as usize)
        .min(u32::MAX as usize);
    let tag = if config.psk.is_some() { TAG_LEN } else { 0 };
    let stream = caps.is_stream();
    if max_message < crate::wire::MIN_MESSAGE {
        return Err((
            RejectReason::ShardSize,
            format!(
                "messages of {max_message} bytes; a session needs {}",
                crate::wire::MIN_MESSAGE
            ),
        ));
    }
    let mut shard_size = 0;
    if stream {
        if max_message <= OUTER_LEN + FRAME_HEADER_LEN + tag {
            return Err((
                RejectReason::ShardSize,
                format!("messages of {max_message} bytes"),
            ));
        }
    } else {
        let room = max_message.saturating_sub(OUTER_LEN + SHARD_HEADER_LEN + tag);
        shard_size = config.shard_size.min(room) & !1;
        if shard_size < 64 {
            return Err((
                RejectReason::ShardSize,
                format!("messages of {max_message} bytes leave {room} for a shard"),
            ));
        }
    }
    Ok(Params {
        version: VERSION,
        encryption: config.psk.is_some(),
        stream,
        fec: config.fec,
        auto_threshold: AUTO_RS16_ABOVE as u16,
        shard_size: shard_size as u16,
        max_frame: config.max_frame as u32,
        max_message: max_message as u32,
        parity_pct: config.parity_pct,
        min_parity: config.min_parity,
        rekey_shift: config.rekey_shift,
    })
}

impl<T: LinkTx> Host<T> {
    /// Wait for a client's handshake over `link` and return the frame sender
    /// and the event receiver.
    ///
    /// Refuses (with a `Reject` the client sees, and an error here) a client
    /// of another version, with the other encryption setting, accepting
    /// smaller frames than `max_frame`, or on a link too small for a shard.
    /// Resends the `Welcome` on lossy links until the client's `Finish`
    /// arrives; gives up after `handshake_timeout`.
    // r[impl session.links]
    pub async fn accept<L, R>(
        link: L,
        config: HostConfig,
    ) -> Result<(Host<T>, HostEvents<T, R>), SessionError>
    where
        L: Link<Tx = T, Rx = R>,
        R: LinkRx,
    {
        config.validate()?;
        let caps = link.caps();
        let (tx, mut rx) = link.split();
        let mut txs = TxState::new(tx);
        let stats = HostCounters::default();
        let mut guard = Guard::new();
        let start = Instant::now();
        let deadline = start + config.handshake_timeout;
        let timeout = |stats: &HostCounters| SessionError::HandshakeTimeout {
            waited: config.handshake_timeout,
            auth_failures: stats.auth_failures.load(Relaxed),
        };
        // Wait for a Hello.
        let hello = loop {
            let Some(r) = with_deadline(rx.recv(), deadline).await else {
                return Err(timeout(&stats));
            };
            let Some(msg) = r? else {
                return Err(SessionError::ClosedDuringHandshake);
            };
            match guard.open(msg.as_slice()) {
                Ok((Kind::Hello, _, body)) => match Hello::read(body) {
                    Ok(h) => break h,
                    Err(_) => add(&stats.malformed_dropped, 1),
                },
                Ok(_) => add(&stats.unexpected_dropped, 1),
                Err(d) => count_drop(&stats, d),
            }
        };
        let params = match agree(&hello, &config, caps) {
            Ok(p) => p,
            Err((reason, detail)) => {
                let body = reject_body(reason, &detail);
                txs.send(
                    Kind::Reject,
                    body.len(),
                    |b| b.copy_from_slice(&body),
                    &stats.messages_sent,
                )
                .await?;
                txs.tx.flush().await?;
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
        let mut backoff = Backoff::new(config.retransmit, deadline, caps.reliable);
        'hs: loop {
            txs.send(
                Kind::Welcome,
                WELCOME_LEN,
                |b| b.copy_from_slice(&welcome),
                &stats.messages_sent,
            )
            .await?;
            txs.tx.flush().await?;
            let until = backoff.next_wait();
            loop {
                let Some(r) = with_deadline(rx.recv(), until).await else {
                    if Instant::now() >= deadline {
                        return Err(timeout(&stats));
                    }
                    continue 'hs;
                };
                let Some(msg) = r? else {
                    return Err(SessionError::ClosedDuringHandshake);
                };
                match guard.open(msg.as_slice()) {
                    // The client did not hear the Welcome: answer at once.
                    Ok((Kind::Hello, _, body)) => {
                        if Hello::read(body).is_ok_and(|h| h.random == hello.random) {
                            continue 'hs;
                        }
                        add(&stats.unexpected_dropped, 1);
                    }
                    // Finish, or anything authentic from the client after it.
                    Ok((Kind::Finish | Kind::Feedback | Kind::Input, _, _)) => break 'hs,
                    Ok(_) => add(&stats.unexpected_dropped, 1),
                    Err(d) => count_drop(&stats, d),
                }
            }
        }
        tracing::debug!(?params, "host session established");
        set(&stats.parity_pct, params.parity_pct as u64);
        let shared = Arc::new(Shared {
            tx: AsyncMutex::new(txs),
            ack: Mutex::new(None),
            stats,
            params,
        });
        Ok((
            Host {
                shared: shared.clone(),
                encoder: FecEncoder::new(),
                frame: 0,
                scratch: Vec::new(),
                closed: false,
            },
            HostEvents {
                shared,
                rx,
                guard,
                input: InputReceiver::default(),
                events: VecDeque::new(),
                last_lost: 0,
                base_parity: config.parity_pct,
                adaptive: config.adaptive_parity,
                idle_timeout: config.idle_timeout,
                ended: false,
            },
        ))
    }

    /// The agreed parameters.
    pub fn params(&self) -> Params {
        self.shared.params
    }

    /// A snapshot of the host's counters.
    pub fn stats(&self) -> HostStats {
        self.shared.stats.snapshot()
    }

    /// The index the next frame will get.
    pub fn next_index(&self) -> u32 {
        self.frame
    }

    // r[impl session.host.send]
    /// Send one encoded access unit. Waits only for link capacity.
    pub async fn send_frame(
        &mut self,
        data: &[u8],
        pts: u64,
        flags: FrameFlags,
    ) -> Result<(), SessionError> {
        self.check_len(data.len())?;
        let shared = self.shared.clone();
        let mut tx = shared.tx.lock().await;
        if shared.params.stream {
            self.send_parts(&mut tx, data, pts, flags).await?;
        } else {
            self.send_shards(&mut tx, data, pts, flags).await?;
        }
        self.finish_frame(&mut tx, data.len()).await
    }

    // r[impl session.host.zero-copy]
    /// Send one access unit that `fill` writes. On a stream link where the
    /// frame fits one message, `fill` writes straight into the link's slot
    /// (on shared memory: the memory the client will read, no copy at all);
    /// otherwise it writes into a reused buffer that is then packetized.
    pub async fn send_frame_with(
        &mut self,
        len: usize,
        pts: u64,
        flags: FrameFlags,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), SessionError> {
        self.check_len(len)?;
        let shared = self.shared.clone();
        let mut tx = shared.tx.lock().await;
        if shared.params.stream && len <= shared.params.part_size() {
            let h = FrameHeader {
                frame: self.frame,
                frame_len: len as u32,
                pts,
                flags: flags.0,
                part: 0,
                parts: 1,
            };
            tx.send(
                Kind::Frame,
                FRAME_HEADER_LEN + len,
                |b| {
                    h.write(&mut Writer::new(&mut b[..FRAME_HEADER_LEN]));
                    fill(&mut b[FRAME_HEADER_LEN..]);
                },
                &shared.stats.messages_sent,
            )
            .await?;
        } else {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            buf.resize(len, 0);
            fill(&mut buf);
            let r = if shared.params.stream {
                self.send_parts(&mut tx, &buf, pts, flags).await
            } else {
                self.send_shards(&mut tx, &buf, pts, flags).await
            };
            self.scratch = buf;
            r?;
        }
        self.finish_frame(&mut tx, len).await
    }

    fn check_len(&self, len: usize) -> Result<(), SessionError> {
        if self.closed {
            return Err(SessionError::Link(link_types::LinkError::Closed));
        }
        if self.frame > crate::wire::MAX_FRAME_INDEX {
            return Err(SessionError::CounterExhausted);
        }
        let max = self.shared.params.max_frame as usize;
        if len > max {
            return Err(SessionError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    async fn finish_frame(&mut self, tx: &mut TxState<T>, len: usize) -> Result<(), SessionError> {
        self.frame += 1;
        let st = &self.shared.stats;
        add(&st.frames_sent, 1);
        add(&st.frame_bytes_sent, len as u64);
        if let Some(s) = &tx.sealer {
            set(&st.rekeys, s.rekeys());
        }
        self.shared.flush_ack(tx)?;
        tx.tx.flush().await?;
        Ok(())
    }

    async fn send_parts(
        &mut self,
        tx: &mut TxState<T>,
        data: &[u8],
        pts: u64,
        flags: FrameFlags,
    ) -> Result<(), SessionError> {
        let ps = self.shared.params.part_size();
        let parts = data.len().div_ceil(ps).max(1);
        for part in 0..parts {
            let chunk = &data[(part * ps).min(data.len())..((part + 1) * ps).min(data.len())];
            let h = FrameHeader {
                frame: self.frame,
                frame_len: data.len() as u32,
                pts,
                flags: flags.0,
                part: part as u16,
                parts: parts as u16,
            };
            tx.send(
                Kind::Frame,
                FRAME_HEADER_LEN + chunk.len(),
                |b| {
                    h.write(&mut Writer::new(&mut b[..FRAME_HEADER_LEN]));
                    b[FRAME_HEADER_LEN..].copy_from_slice(chunk);
                },
                &self.shared.stats.messages_sent,
            )
            .await?;
        }
        Ok(())
    }

    // r[impl session.fec.parity]
    async fn send_shards(
        &mut self,
        tx: &mut TxState<T>,
        data: &[u8],
        pts: u64,
        flags: FrameFlags,
    ) -> Result<(), SessionError> {
        let p = self.shared.params;
        let st = &self.shared.stats;
        let s = p.shard_size as usize;
        let pct = st.parity_pct.load(Relaxed).min(100) as u8;
        let n = Layout::new(data.len(), s, usize::MAX).n;
        let coder = p.fec.coder_for(n, p.auto_threshold as usize);
        let layout = Layout::new(data.len(), s, max_data(coder));
        for b in 0..layout.blocks {
            let (start, k) = layout.block(b);
            let m = parity_for(coder, k, pct, p.min_parity);
            let lo = (start * s).min(data.len());
            let hi = ((start + k) * s).min(data.len());
            let block = &data[lo..hi];
            let parity = self
                .encoder
                .encode(coder, block, k, m, s)
                .map_err(|e| SessionError::InvalidConfig(e.to_string()))?;
            let mut h = ShardHeader {
                frame: self.frame,
                frame_len: data.len() as u32,
                pts,
                flags: flags.0,
                coder,
                block: b as u16,
                blocks: layout.blocks as u16,
                index: 0,
                k: k as u16,
                m: m as u16,
                shard_size: s as u16,
            };
            // r[impl session.wire.data-first]
            for i in 0..k + m {
                let payload: &[u8] = if i < k {
                    &block[(i * s).min(block.len())..((i + 1) * s).min(block.len())]
                } else {
                    &parity[i - k]
                };
                h.index = i as u16;
                tx.send(
                    Kind::Shard,
                    SHARD_HEADER_LEN + payload.len(),
                    |buf| {
                        h.write(&mut Writer::new(&mut buf[..SHARD_HEADER_LEN]));
                        buf[SHARD_HEADER_LEN..].copy_from_slice(payload);
                    },
                    &st.messages_sent,
                )
                .await?;
            }
            add(&st.data_shards_sent, k as u64);
            add(&st.parity_shards_sent, m as u64);
        }
        Ok(())
    }

    // r[impl session.close]
    /// End the stream: a `Bye` carrying the number of frames sent (three
    /// copies on a lossy link). The client hands out or reports every
    /// earlier frame, then `Ok(None)`. The link stays open so that
    /// [`HostEvents`] still receives (and acknowledges) the client's last
    /// input until the client's own `Bye`; it closes when both halves are
    /// dropped. Sending after `close` fails with `LinkError::Closed`.
    pub async fn close(&mut self) -> Result<(), SessionError> {
        let shared = &self.shared;
        let mut tx = shared.tx.lock().await;
        if self.closed {
            return Ok(());
        }
        crate::tx::send_bye(
            &mut tx,
            self.frame,
            shared.params.stream,
            &shared.stats.messages_sent,
        )
        .await?;
        self.closed = true;
        Ok(())
    }
}

impl<T: LinkTx, R: LinkRx> HostEvents<T, R> {
    /// A snapshot of the host's counters.
    pub fn stats(&self) -> HostStats {
        self.shared.stats.snapshot()
    }

    /// The next input event, keyframe request or loss report; `Ok(None)`
    /// once the client closed the link. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Option<HostEvent>, SessionError> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            if let Some(mut tx) = self.shared.tx.try_lock() {
                self.shared.flush_ack(&mut tx)?;
            }
            let got = if self.shared.params.stream {
                self.rx.recv().await
            } else {
                let until = Instant::now() + self.idle_timeout;
                match with_deadline(self.rx.recv(), until).await {
                    Some(r) => r,
                    None => return Err(SessionError::IdleTimeout(self.idle_timeout)),
                }
            };
            match got? {
                None => self.ended = true,
                Some(msg) => self.handle(msg.as_slice()),
            }
        }
    }

    fn handle(&mut self, msg: &[u8]) {
        let shared = self.shared.clone();
        let st = &shared.stats;
        let (kind, body) = match self.guard.open(msg) {
            Ok((k, _, b)) => (k, b),
            Err(d) => {
                count_drop(st, d);
                return;
            }
        };
        match kind {
            Kind::Input => {
                let events = &mut self.events;
                let before = (self.input.duplicates, self.input.gaps);
                let mut n = 0;
                let r = self.input.receive(body, |e| {
                    n += 1;
                    events.push_back(HostEvent::Input(e));
                });
                add(&st.input_events, n);
                add(&st.input_duplicates, self.input.duplicates - before.0);
                add(&st.input_gaps, self.input.gaps - before.1);
                match r {
                    Ok(()) => {
                        *shared.ack.lock().expect("ack lock") = Some(self.input.next_expected())
                    }
                    Err(_) => add(&st.malformed_dropped, 1),
                }
            }
            // r[impl session.feedback.keyframe]
            Kind::Feedback => {
                let mut r = Reader::new(body);
                let parsed = (|| {
                    Ok::<_, crate::wire::WireError>((
                        r.u64()?,
                        r.u64()?,
                        r.u32()?,
                        r.u32()?,
                        r.u64()?,
                    ))
                })();
                let Ok((delivered, lost, last_lost, ppm, recovered)) = parsed else {
                    add(&st.malformed_dropped, 1);
                    return;
                };
                if body.len() != FEEDBACK_LEN || ppm > 1_000_000 {
                    add(&st.malformed_dropped, 1);
                    return;
                }
                add(&st.feedback_received, 1);
                set(&st.reported_loss_ppm, ppm as u64);
                set(&st.reported_frames_lost, lost);
                if last_lost > self.last_lost {
                    self.last_lost = last_lost;
                    add(&st.keyframe_requests, 1);
                    self.events.push_back(HostEvent::KeyframeRequest {
                        lost_frame: last_lost - 1,
                    });
                }
                // r[impl session.feedback.adaptive]
                if self.adaptive {
                    let want = (ppm as u64 * 3).div_ceil(10_000) + 1;
                    let pct = want.max(self.base_parity as u64).min(100);
                    set(&st.parity_pct, pct);
                }
                self.events.push_back(HostEvent::LossReport(LossReport {
                    frames_delivered: delivered,
                    frames_lost: lost,
                    frames_recovered: recovered,
                    loss_ppm: ppm,
                }));
            }
            // A repeated Finish (the client heard a resent Welcome).
            Kind::Finish => {}
            Kind::Bye => self.ended = true,
            _ => add(&st.unexpected_dropped, 1),
        }
    }
}
