//! The host: handshake, frames out, input and loss reports in.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::lock::Mutex as AsyncMutex;
use link_types::{Link, LinkRx, LinkTx};
use web_time::Instant;

use crate::SessionError;
use crate::bwe::Bwe;
use crate::config::HostConfig;
use crate::fec::{FecEncoder, Layout, max_data, parity_for};
use crate::frame::FrameFlags;
use crate::handshake::{Params, host_side};
use crate::input::{InputEvent, InputReceiver};
use crate::open::{Guard, with_deadline};
use crate::pacer::{Pacer, PacingConfig, Release};
use crate::stats::{HostCounters, HostStats, add, set};
use crate::stream_rate::StreamRate;
use crate::tx::TxState;
use crate::wire::{
    FRAME_HEADER_LEN, Feedback, FrameHeader, Kind, SHARD_HEADER_LEN, ShardHeader, Writer,
};

/// A paced datagram: its kind and body, sealed when it leaves.
type Queued = (Kind, Vec<u8>);

/// The host's sending half: the link, the pacer's queue and what was sent
/// since the estimator last heard of it.
pub(crate) struct HostTx<T> {
    s: TxState<T>,
    pacer: Pacer<Queued>,
    pool: Vec<Vec<u8>>,
    sent: Vec<(u64, usize, Option<u32>)>,
    /// Rate that drains the queue within the latency budget, set when a
    /// frame overran it, until the queue is empty.
    floor_bps: u64,
    /// Stream links whose link reports its path: the rate controller.
    stream_rate: StreamRate,
}

impl<T> std::ops::Deref for HostTx<T> {
    type Target = TxState<T>;
    fn deref(&self) -> &TxState<T> {
        &self.s
    }
}

impl<T> std::ops::DerefMut for HostTx<T> {
    fn deref_mut(&mut self) -> &mut TxState<T> {
        &mut self.s
    }
}

/// Waits at most this short are not slept: the batch leaves at once (the
/// timer's resolution is about a millisecond; the bucket keeps the
/// average rate exact).
const SPIN_US: u64 = 250;

/// On stream links, how often `next_event` looks for a changed target
/// while nothing arrives from the client.
const STREAM_EVENT_POLL: Duration = Duration::from_millis(100);

struct Shared<T> {
    tx: AsyncMutex<HostTx<T>>,
    ack: Mutex<Option<u64>>,
    stats: HostCounters,
    params: Params,
    bwe: Mutex<Bwe>,
    pacing: PacingConfig,
    epoch: Instant,
    /// Parity percentage in use (a control input; the stat mirrors it).
    parity_pct: AtomicU64,
    target: AtomicU64,
    /// Events raised on the sending side, handed out by `next_event`.
    pending: Mutex<Vec<HostEvent>>,
}

impl<T> Shared<T> {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The application's target from an estimate: 10% headroom, less
    /// parity on lossy links.
    fn target_from(&self, estimate: u64) -> u64 {
        let parity = if self.params.stream {
            0
        } else {
            self.parity_pct.load(Relaxed)
        };
        estimate * 9 / 10 * 100 / (100 + parity)
    }

    /// Tell the estimator what left and refresh the stats.
    fn record(&self, sent: &mut Vec<(u64, usize, Option<u32>)>, now: u64) {
        let mut bwe = self.bwe.lock().expect("bwe lock");
        for (pn, len, probe) in sent.drain(..) {
            bwe.on_sent(pn, len, now, probe);
        }
    }

    fn publish(&self, bwe: &Bwe) {
        let st = &self.stats;
        let est = bwe.estimate_bps();
        set(&st.estimate_bps, est);
        set(
            &st.pacing_bps,
            if self.pacing.enabled {
                bwe.pacing_bps(self.now_us())
            } else {
                0
            },
        );
        set(&st.overuses, bwe.stats().overuses);
        let target = self.target_from(est);
        self.target.store(target, Relaxed);
        set(&st.target_bps, target);
    }
}

impl<T: LinkTx> Shared<T> {
    /// Send a pending input acknowledgement if the link takes it now.
    fn flush_ack(&self, tx: &mut TxState<T>) -> Result<(), SessionError> {
        let pending = *self.ack.lock().expect("ack lock");
        if let Some(next) = pending {
            match tx.try_send(
                Kind::InputAck,
                8,
                |b| b.copy_from_slice(&crate::wire::u64_body(next)),
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
    /// The target bitrate changed (by 5% or more since the last event):
    /// the encoder should follow it (see [`Host::target_bitrate`]).
    TargetBitrate {
        /// Bits per second.
        bps: u64,
    },
    /// A frame was submitted while the pacer's queue held more than the
    /// latency budget: the application sends faster than the path
    /// carries (lower the bitrate to the target).
    PacingOverrun {
        /// The queue's delay at the pacing rate, µs.
        queue_delay_us: u64,
    },
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
    restart_grace: Duration,
    /// When the last authentic session message from the client arrived.
    last_heard: Instant,
    /// A Hello ended the session (the client restarted).
    restarted: bool,
    last_target_event: u64,
    ended: bool,
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
        let params = host_side(
            &mut txs, &mut rx, &mut guard, &config, caps, &stats, deadline,
        )
        .await?;
        tracing::debug!(?params, "host session established");
        set(&stats.parity_pct, params.parity_pct as u64);
        let mut bwe = Bwe::new(config.bwe);
        bwe.set_probe_ceiling(config.pacing.ceiling_bps);
        // Padding datagrams are as large as shards.
        let padding = txs.wire_len(Kind::Padding, SHARD_HEADER_LEN + params.shard_size as usize);
        let pacer = Pacer::new(config.pacing, bwe.pacing_bps(0), padding);
        let shared = Arc::new(Shared {
            tx: AsyncMutex::new(HostTx {
                s: txs,
                pacer,
                pool: Vec::new(),
                sent: Vec::new(),
                floor_bps: 0,
                stream_rate: StreamRate::new(
                    config.bwe.start_bps,
                    config.bwe.min_bps,
                    config.bwe.max_bps,
                ),
            }),
            ack: Mutex::new(None),
            stats,
            params,
            bwe: Mutex::new(bwe),
            pacing: config.pacing,
            epoch: start,
            parity_pct: AtomicU64::new(params.parity_pct as u64),
            target: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
        });
        {
            let bwe = shared.bwe.lock().expect("bwe lock");
            shared.publish(&bwe);
        }
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
                last_target_event: 0,
                base_parity: config.parity_pct,
                adaptive: config.adaptive_parity,
                idle_timeout: config.idle_timeout,
                restart_grace: config.restart_grace,
                last_heard: Instant::now(),
                restarted: false,
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

    // r[impl session.bwe.target]
    /// The target bitrate for the encoder, bits per second: on a lossy
    /// link the bandwidth estimate less 10% headroom and the parity
    /// overhead; on a stream link derived from how fast the link drains.
    /// [`HostEvent::TargetBitrate`] reports changes.
    pub fn target_bitrate(&self) -> u64 {
        self.shared.target.load(Relaxed)
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
        let started = Instant::now();
        let sampled = shared.params.stream && self.sample_path(&mut tx);
        if shared.params.stream {
            self.send_parts(&mut tx, data, pts, flags).await?;
        } else {
            self.send_shards(&mut tx, data, pts, flags).await?;
        }
        self.finish_frame(&mut tx, data.len(), started, sampled)
            .await
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
        let started = Instant::now();
        let sampled = shared.params.stream && self.sample_path(&mut tx);
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
        self.finish_frame(&mut tx, len, started, sampled).await
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

    async fn finish_frame(
        &mut self,
        tx: &mut HostTx<T>,
        len: usize,
        started: Instant,
        sampled: bool,
    ) -> Result<(), SessionError> {
        let shared = self.shared.clone();
        if shared.params.stream {
            if !sampled {
                self.stream_target(len, started);
            }
        } else {
            // r[impl session.pacing.frames]
            let now = shared.now_us();
            let delay = tx.pacer.queue_delay_us();
            set(&shared.stats.pacing_queue_delay_us, delay);
            crate::stats::max(&shared.stats.pacing_queue_delay_max_us, delay);
            // r[impl session.pacing.budget]
            if delay > tx.pacer.budget_us() {
                add(&shared.stats.pacing_overruns, 1);
                tx.floor_bps = tx.pacer.queued_bytes() * 8_000_000 / tx.pacer.budget_us().max(1);
                shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .push(HostEvent::PacingOverrun {
                        queue_delay_us: delay,
                    });
                tracing::debug!(delay, "pacing queue over its latency budget");
            }
            let first = now;
            pump(&shared, tx, true).await?;
            let spread = shared.now_us().saturating_sub(first);
            set(&shared.stats.frame_send_spread_us, spread);
            crate::stats::max(&shared.stats.frame_send_spread_max_us, spread);
        }
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

    // r[impl session.bwe.stream.path]
    /// On a stream link whose link reports its path: one sample as the
    /// frame starts (it shows the backlog the frame joins) drives the
    /// stream controller, whose target is published. Returns whether the
    /// link gave a sample.
    fn sample_path(&self, tx: &mut HostTx<T>) -> bool {
        let Some(sample) = tx.s.tx.path_sample() else {
            return false;
        };
        let shared = &self.shared;
        let target = tx.stream_rate.on_sample(shared.now_us(), &sample);
        let st = &shared.stats;
        let c = tx.stream_rate.stats();
        set(&st.path_delivered_bps, c.delivered_bps);
        set(&st.path_queue_delay_us, c.queue_delay_us);
        set(&st.path_standing_queue_us, c.standing_queue_us);
        set(&st.path_decreases, c.decreases);
        shared.target.store(target, Relaxed);
        set(&st.target_bps, target);
        set(&st.estimate_bps, target);
        true
    }

    // r[impl session.bwe.stream]
    /// On a stream link that reports no path samples the target follows
    /// how fast the link drains: a frame whose sending waited for capacity
    /// measures the drain rate.
    fn stream_target(&self, len: usize, started: Instant) {
        let shared = &self.shared;
        let waited = started.elapsed();
        let bwe = shared.bwe.lock().expect("bwe lock");
        let cfg = *bwe.config();
        drop(bwe);
        let old = shared.target.load(Relaxed);
        let old = if old == 0 { cfg.start_bps } else { old };
        let new = if waited >= Duration::from_millis(2) {
            let rate = (len as f64 * 8.0 / waited.as_secs_f64()) as u64;
            (old / 2 + rate * 9 / 10 / 2).max(1)
        } else {
            old + old / 20
        };
        let new = new.clamp(cfg.min_bps, cfg.max_bps);
        shared.target.store(new, Relaxed);
        set(&shared.stats.target_bps, new);
        set(&shared.stats.estimate_bps, new);
    }

    async fn send_parts(
        &mut self,
        tx: &mut HostTx<T>,
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
        tx: &mut HostTx<T>,
        data: &[u8],
        pts: u64,
        flags: FrameFlags,
    ) -> Result<(), SessionError> {
        let p = self.shared.params;
        let st = &self.shared.stats;
        let s = p.shard_size as usize;
        let pct = self.shared.parity_pct.load(Relaxed).min(100) as u8;
        let paced = self.shared.pacing.enabled;
        let now = self.shared.now_us();
        if paced {
            // Leftovers of a cancelled call go first.
            pump(&self.shared, tx, true).await?;
        }
        let queued_before = tx.pacer.queued_bytes();
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
                .map_err(SessionError::Fec)?;
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
                let fill = |buf: &mut [u8]| {
                    h.write(&mut Writer::new(&mut buf[..SHARD_HEADER_LEN]));
                    buf[SHARD_HEADER_LEN..].copy_from_slice(payload);
                };
                let body_len = SHARD_HEADER_LEN + payload.len();
                // r[impl session.pacing.keyframes]
                if paced {
                    let mut body = tx.pool.pop().unwrap_or_default();
                    body.clear();
                    body.resize(body_len, 0);
                    fill(&mut body);
                    let wire = tx.wire_len(Kind::Shard, body_len);
                    tx.pacer.push((Kind::Shard, body), wire, now);
                } else {
                    tx.s.send(Kind::Shard, body_len, fill, &st.messages_sent)
                        .await?;
                    let wire = tx.wire_len(Kind::Shard, body_len);
                    let pn = tx.pn - 1;
                    tx.sent.push((pn, wire, None));
                }
            }
            add(&st.data_shards_sent, k as u64);
            add(&st.parity_shards_sent, m as u64);
        }
        if paced {
            let now = self.shared.now_us();
            self.shared.bwe.lock().expect("bwe lock").on_frame(now);
        }
        if paced && flags.is_keyframe() {
            // r[impl session.bwe.probe-keyframe]
            let bytes = tx.pacer.queued_bytes().saturating_sub(queued_before);
            let mut bwe = self.shared.bwe.lock().expect("bwe lock");
            bwe.on_keyframe(bytes, queued_before);
        }
        if !paced {
            let mut sent = std::mem::take(&mut tx.sent);
            self.shared.record(&mut sent, self.shared.now_us());
            tx.sent = sent;
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
        if !shared.params.stream {
            pump(shared, &mut tx, true).await?;
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
            self.raise_events();
            if !self.events.is_empty() {
                continue;
            }
            if self.restarted {
                return Err(SessionError::ClientRestarted);
            }
            if self.ended {
                return Ok(None);
            }
            if let Some(mut tx) = self.shared.tx.try_lock() {
                self.shared.flush_ack(&mut tx)?;
            }
            let got = if self.shared.params.stream {
                // The target changes as frames are sent, with nothing from
                // the client: look again every 100 ms (`recv` is
                // cancel-safe) so that `TargetBitrate` is raised promptly.
                match with_deadline(self.rx.recv(), Instant::now() + STREAM_EVENT_POLL).await {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                // r[impl session.host.idle]
                let until = self.last_heard + self.idle_timeout;
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

    /// Events raised elsewhere (pacing overruns, a changed target).
    fn raise_events(&mut self) {
        let pending = std::mem::take(&mut *self.shared.pending.lock().expect("pending lock"));
        self.events.extend(pending);
        let target = self.shared.target.load(Relaxed);
        let last = self.last_target_event;
        // r[impl session.bwe.event]
        if target != last && (last == 0 || target.abs_diff(last) * 20 >= last) {
            self.last_target_event = target;
            self.events
                .push_back(HostEvent::TargetBitrate { bps: target });
        }
    }

    fn handle(&mut self, msg: &[u8]) {
        let shared = self.shared.clone();
        let st = &shared.stats;
        let (kind, body) = match self.guard.open(msg) {
            Ok((k, _, b)) => (k, b),
            Err(d) => {
                st.count_drop(d);
                return;
            }
        };
        // r[impl session.host.restart]
        if kind == Kind::Hello {
            add(&st.hellos_on_session, 1);
            if !shared.params.stream && self.last_heard.elapsed() >= self.restart_grace {
                tracing::debug!(
                    "a Hello after {:?} of silence: the client restarted",
                    self.last_heard.elapsed()
                );
                self.restarted = true;
            }
            return;
        }
        // Only what a client sends keeps the session alive.
        if matches!(
            kind,
            Kind::Finish | Kind::Input | Kind::Feedback | Kind::Bye | Kind::Arrivals
        ) {
            self.last_heard = Instant::now();
        }
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
            Kind::Arrivals => {
                let Ok(arrivals) = crate::wire::read_arrivals(body) else {
                    add(&st.malformed_dropped, 1);
                    return;
                };
                add(&st.arrivals_received, 1);
                let now = shared.now_us();
                let mut bwe = shared.bwe.lock().expect("bwe lock");
                bwe.on_feedback(&arrivals, now);
                shared.publish(&bwe);
            }
            Kind::Feedback => {
                let Ok(Feedback {
                    delivered,
                    lost,
                    last_lost,
                    loss_ppm: ppm,
                    recovered,
                }) = Feedback::read(body)
                else {
                    add(&st.malformed_dropped, 1);
                    return;
                };
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
                    shared.parity_pct.store(pct, Relaxed);
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

// r[impl session.pacing.drive]
// r[impl session.pacing.release]
/// Release queued datagrams on the pacer's schedule: at each wake-up all
/// that is due, flushed once, then a sleep until the next release is due
/// (waits shorter than [`SPIN_US`] are not slept). With `until_empty`,
/// returns once the queue (and a probe cluster started when it emptied) is
/// out.
async fn pump<T: LinkTx>(
    shared: &Shared<T>,
    tx: &mut HostTx<T>,
    until_empty: bool,
) -> Result<(), SessionError> {
    let st = &shared.stats;
    // One timer for the whole call, re-armed for each sleep: each new
    // `Delay`, and each dropped one, wakes the timer's thread.
    let mut timer: Option<futures_timer::Delay> = None;
    loop {
        let mut now = shared.now_us();
        {
            let mut bwe = shared.bwe.lock().expect("bwe lock");
            if tx.pacer.is_empty() {
                tx.floor_bps = 0;
            }
            tx.pacer
                .set_rate(now, bwe.pacing_bps(now).max(tx.floor_bps));
            if tx.pacer.is_empty()
                && tx.pacer.probing().is_none()
                && let Some(c) = bwe.poll_probe(now)
            {
                if tx.pacer.start_probe(c, now) {
                    add(&st.probes, 1);
                } else {
                    bwe.probe_sent(c.id);
                }
            }
        }
        match tx.pacer.next_at(now) {
            None => return Ok(()),
            Some(at) if at > now + SPIN_US => {
                if !until_empty {
                    return Ok(());
                }
                let wait = Duration::from_micros(at - now);
                let delay = match &mut timer {
                    Some(d) => {
                        d.reset(wait);
                        d
                    }
                    None => timer.insert(futures_timer::Delay::new(wait)),
                };
                delay.await;
                continue;
            }
            Some(at) => now = now.max(at),
        }
        let mut ended = None;
        while let Some(release) = tx.pacer.pop(now, &mut ended) {
            let (release, carried) = match release {
                Release::Carried { item, probe } => (Release::Item(item), Some(probe)),
                r => (r, None),
            };
            match release {
                Release::Item((kind, body))
                | Release::Carried {
                    item: (kind, body), ..
                } => {
                    let wire = tx.wire_len(kind, body.len());
                    tx.s.send(
                        kind,
                        body.len(),
                        |b| b.copy_from_slice(&body),
                        &st.messages_sent,
                    )
                    .await?;
                    let pn = tx.pn - 1;
                    tx.sent.push((pn, wire, carried));
                    tx.pool.push(body);
                }
                Release::Padding { size, probe } => {
                    let body_len = size.saturating_sub(tx.wire_len(Kind::Padding, 0));
                    tx.s.send(Kind::Padding, body_len, |b| b.fill(0), &st.messages_sent)
                        .await?;
                    let pn = tx.pn - 1;
                    tx.sent.push((pn, size, Some(probe)));
                    add(&st.padding_sent, 1);
                }
            }
        }
        tx.s.tx.flush().await?;
        let mut sent = std::mem::take(&mut tx.sent);
        shared.record(&mut sent, now);
        tx.sent = sent;
        if let Some(id) = ended {
            shared.bwe.lock().expect("bwe lock").probe_sent(id);
        }
        tx.pool.truncate(4096);
    }
}
