//! The client: handshake, frames in, input out.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, select};
use futures::lock::Mutex as AsyncMutex;
use futures_timer::Delay;
use link_types::{Backing, Link, LinkRx, LinkTx};
use web_time::Instant;

use crate::SessionError;
use crate::config::ClientConfig;
use crate::frame::{ClientEvent, Frame};
use crate::handshake::{Params, client_side};
use crate::input::{InputEvent, InputSender};
use crate::open::Guard;
use crate::reassembly::{Output, Reassembler, Reject};
use crate::stats::{ClientCounters, ClientStats, add, set};
use crate::tx::TxState;
use crate::wire::{
    FRAME_HEADER_LEN, FrameHeader, Kind, OUTER_LEN, RANDOM_LEN, Reader, ShardHeader,
};

/// Arrival records kept for the next report at most (beyond, counted
/// as `arrivals_dropped`).
const MAX_ARRIVALS: usize = 1 << 16;

struct Shared<T> {
    tx: AsyncMutex<TxState<T>>,
    input: Mutex<InputSender>,
    stats: ClientCounters,
    params: Params,
    /// Input needs no retransmission (stream link).
    stream: bool,
}

/// The client's receiving side: [`next_frame`](Client::next_frame).
///
/// Keep calling `next_frame`: besides frames it processes input
/// acknowledgements, retransmits input and sends loss reports.
pub struct Client<T: LinkTx, R: LinkRx> {
    shared: Arc<Shared<T>>,
    rx: R,
    guard: Guard,
    reasm: Option<Reassembler>,
    part: Option<(FrameHeader, Vec<u8>)>,
    next_stream_frame: u32,
    events: VecDeque<ClientEvent>,
    outputs: Vec<Output>,
    config: ClientConfig,
    feedback_at: Instant,
    feedback_due: bool,
    finish_due: bool,
    /// The host's random, which the Finish echoes (proof of address).
    host_random: [u8; RANDOM_LEN],
    last_lost: Option<u32>,
    fb_base: (u64, u64),
    /// (packet number, arrival µs) since the last arrival report.
    arrivals: Vec<(u64, u64)>,
    arrivals_at: Instant,
    next_report_pn: u64,
    epoch: Instant,
    timer: Option<(Instant, Delay)>,
    since_housekeeping: u32,
    /// The host's `Bye`: its frame count and when to stop waiting.
    bye: Option<(u32, Instant)>,
    /// When every frame was handed out or reported after the `Bye`.
    frames_done_at: Option<Instant>,
    last_rx: Instant,
    ended: bool,
}

/// The client's sending side: input events to the host.
pub struct ClientInput<T: LinkTx> {
    shared: Arc<Shared<T>>,
}

impl<T: LinkTx, R: LinkRx> Client<T, R> {
    /// Run the handshake over `link` and return the frame receiver and the
    /// input sender.
    ///
    /// Sends `Hello` (again every `retransmit`, doubling, on lossy links)
    /// until the host answers or `handshake_timeout` passes.
    pub async fn connect<L>(
        link: L,
        config: ClientConfig,
    ) -> Result<(Client<T, R>, ClientInput<T>), SessionError>
    where
        L: Link<Tx = T, Rx = R>,
    {
        config.validate()?;
        let caps = link.caps();
        let (tx, mut rx) = link.split();
        let mut txs = TxState::new(tx);
        let stats = ClientCounters::default();
        let mut guard = Guard::new();
        let (p, host_random) =
            client_side(&mut txs, &mut rx, &mut guard, &config, caps, &stats).await?;
        tracing::debug!(?p, "client session established");
        let reasm = (!p.stream).then(|| {
            Reassembler::new(
                p.shard_size as usize,
                p.max_frame as usize,
                config.max_pending_bytes,
                config.frame_timeout,
                config.reorder_grace,
            )
        });
        let shared = Arc::new(Shared {
            tx: AsyncMutex::new(txs),
            input: Mutex::new(InputSender::new(config.max_input_queue, config.min_rto)),
            stats,
            params: p,
            stream: p.stream,
        });
        let now = Instant::now();
        Ok((
            Client {
                shared: shared.clone(),
                rx,
                guard,
                reasm,
                part: None,
                next_stream_frame: 0,
                events: VecDeque::new(),
                outputs: Vec::new(),
                feedback_at: now + config.feedback_interval,
                feedback_due: false,
                finish_due: false,
                host_random,
                last_lost: None,
                fb_base: (0, 0),
                arrivals: Vec::new(),
                arrivals_at: now + config.arrival_interval,
                next_report_pn: 0,
                epoch: now,
                config,
                timer: None,
                since_housekeeping: 0,
                bye: None,
                frames_done_at: None,
                last_rx: now,
                ended: false,
            },
            ClientInput { shared },
        ))
    }

    /// The agreed parameters.
    pub fn params(&self) -> Params {
        self.shared.params
    }

    /// A snapshot of the client's counters.
    pub fn stats(&self) -> ClientStats {
        self.shared.stats.snapshot()
    }

    // r[impl session.feedback.keyframe-request]
    /// Ask the host for a keyframe because frame `frame` could not be used
    /// (its decoder failed, say): the next loss report, sent by the next
    /// `next_frame` call, names it as the newest lost frame, so the host's
    /// `next_event` yields one `KeyframeRequest` (none if a newer frame was
    /// named already). No loss counter changes.
    pub fn request_keyframe(&mut self, frame: u32) {
        self.last_lost = Some(self.last_lost.map_or(frame, |l| l.max(frame)));
        self.feedback_due = true;
        // Send it at the next call rather than after up to 64 messages.
        self.since_housekeeping = 64;
    }

    // r[impl session.client.next-frame]
    /// The next whole frame, in index order, or a report of lost frames.
    /// `Ok(None)` once the host closed the link (after every frame that
    /// could be completed). Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<ClientEvent>, SessionError> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            // Messages already waiting come first: timeouts are judged only
            // once the link has nothing ready (or every 64 messages, so that
            // input and loss reports still flow under a flood).
            if self.since_housekeeping < 64
                && let Some(r) = self.rx.recv().now_or_never()
            {
                self.since_housekeeping += 1;
                self.received(r)?;
                continue;
            }
            self.since_housekeeping = 0;
            let now = Instant::now();
            self.housekeeping(now)?;
            if !self.events.is_empty() {
                continue;
            }
            let deadline = self.deadline(now);
            let timer = match &mut self.timer {
                Some((at, d)) if *at == deadline => d,
                slot => {
                    let d = Delay::new(deadline.saturating_duration_since(now));
                    &mut slot.insert((deadline, d)).1
                }
            };
            let got = match select(pin!(self.rx.recv()), timer).await {
                Either::Left((r, _)) => Some(r),
                Either::Right(_) => None,
            };
            match got {
                Some(r) => self.received(r)?,
                None => self.timer = None,
            }
        }
    }

    fn received(
        &mut self,
        r: Result<Option<Backing>, link_types::LinkError>,
    ) -> Result<(), SessionError> {
        match r {
            Ok(Some(msg)) => {
                let now = Instant::now();
                self.last_rx = now;
                self.handle(msg, now)
            }
            Ok(None) => self.end(),
            // After the host's Bye its link may go away: that is the end.
            Err(_) if self.bye.is_some() => self.end(),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    // r[impl session.close]
    /// The stream ended: deliver what is whole, report the rest lost.
    fn end(&mut self) {
        self.finish_frames(Instant::now());
        self.ended = true;
        // Input the host never acknowledged is lost with the link: count it.
        let unacked = self.shared.input.lock().expect("input lock").unacked();
        if !self.shared.stream {
            add(&self.shared.stats.input_abandoned, unacked as u64);
            // A last loss report, so that the host's view ends complete.
            self.feedback_due = true;
            let _ = self.flush_control(Instant::now());
        }
    }

    /// Hand out or report every frame up to the host's count (once).
    fn finish_frames(&mut self, now: Instant) {
        if self.frames_done_at.is_some() {
            return;
        }
        if let Some(r) = &mut self.reasm {
            r.finish(
                self.bye.map(|(end, _)| end),
                &self.shared.stats,
                &mut self.outputs,
            );
        }
        self.drain_outputs();
        self.frames_done_at = Some(now);
    }

    fn deadline(&self, now: Instant) -> Instant {
        let mut d = now + Duration::from_secs(1);
        if !self.shared.stream {
            d = d.min(self.feedback_at);
            if !self.arrivals.is_empty() {
                d = d.min(self.arrivals_at);
            }
        }
        if let Some(r) = &self.reasm
            && let Some(t) = r.deadline()
        {
            d = d.min(t);
        }
        if let Some((_, t)) = self.bye {
            d = d.min(t);
        }
        if let Some(t) = self.frames_done_at {
            d = d.min(t + self.config.idle_timeout);
        }
        if !self.shared.stream {
            d = d.min(self.last_rx + self.config.idle_timeout);
        }
        if !self.shared.stream
            && let Some(t) = self.shared.input.lock().expect("input lock").deadline()
        {
            d = d.min(t);
        }
        d.max(now)
    }

    fn housekeeping(&mut self, now: Instant) -> Result<(), SessionError> {
        if let Some(r) = &mut self.reasm {
            r.poll(now, &self.shared.stats, &mut self.outputs);
        }
        self.drain_outputs();
        if let Some((end, deadline)) = self.bye {
            let done = self.reasm.as_ref().is_none_or(|r| r.next() >= end);
            if done || now >= deadline {
                self.finish_frames(now);
                // On a lossy link, input still waiting for acknowledgement
                // keeps the session open (retransmitting) until the host
                // acknowledged it, or for at most `idle_timeout`.
                let waiting = !self.shared.stream
                    && self.shared.input.lock().expect("input lock").unacked() > 0;
                let since = self.frames_done_at.unwrap_or(now);
                if !waiting || now >= since + self.config.idle_timeout {
                    self.end();
                    return Ok(());
                }
            }
        }
        if !self.shared.stream && now >= self.last_rx + self.config.idle_timeout {
            return Err(SessionError::IdleTimeout(self.config.idle_timeout));
        }
        if !self.shared.stream && now >= self.feedback_at {
            self.feedback_due = true;
        }
        self.flush_control(now)
    }

    // r[impl session.feedback.report]
    fn feedback_body(&mut self) -> [u8; crate::wire::FEEDBACK_LEN] {
        let st = &self.shared.stats;
        let highest = self.guard.highest.map_or(0, |h| h + 1);
        let (acc0, hi0) = self.fb_base;
        let expected = highest.saturating_sub(hi0);
        let got = self.guard.accepted.saturating_sub(acc0);
        let ppm = (expected.saturating_sub(got) * 1_000_000)
            .checked_div(expected)
            .unwrap_or(0)
            .min(1_000_000);
        self.fb_base = (self.guard.accepted, highest);
        set(&st.loss_ppm, ppm);
        crate::wire::Feedback {
            delivered: st.frames_delivered.get(),
            lost: st.frames_lost.get(),
            last_lost: self.last_lost.map_or(0, |l| l.wrapping_add(1)),
            loss_ppm: ppm as u32,
            recovered: st.frames_recovered.get(),
        }
        .to_bytes()
    }

    // r[impl session.bwe.arrivals]
    /// Send what arrived since the last report (as many Arrivals messages
    /// as it takes). Returns false when the link was full.
    fn send_arrivals(&mut self, tx: &mut TxState<T>, now: Instant) -> Result<bool, SessionError> {
        let st = &self.shared.stats;
        self.arrivals.sort_unstable_by_key(|a| a.0);
        let next = self.next_report_pn;
        // Late arrivals of numbers already reported lost stay reported.
        self.arrivals.retain(|a| a.0 >= next);
        let max_entries = (self.shared.params.max_body() - crate::wire::ARRIVALS_HEADER_LEN) / 2;
        let mut done = 0;
        let mut full = false;
        while done < self.arrivals.len() {
            let (body, used) = crate::wire::write_arrivals(
                self.next_report_pn,
                &self.arrivals[done..],
                max_entries,
            );
            if used == 0 {
                // A gap wider than one message: skip ahead, reporting nothing
                // for the numbers between (the host treats them as unreported).
                self.next_report_pn = self.arrivals[done].0;
                continue;
            }
            match tx.try_send(
                Kind::Arrivals,
                body.len(),
                |b| b.copy_from_slice(&body),
                &st.messages_sent,
            ) {
                Some(Ok(())) => {
                    add(&st.arrivals_sent, 1);
                    done += used;
                    self.next_report_pn = self.arrivals[done - 1].0 + 1;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    full = true;
                    break;
                }
            }
        }
        self.arrivals.drain(..done);
        if !full {
            self.arrivals_at = now + self.config.arrival_interval;
        }
        Ok(!full)
    }

    fn flush_control(&mut self, now: Instant) -> Result<(), SessionError> {
        let want_input =
            !self.shared.stream && self.shared.input.lock().expect("input lock").due(now);
        let want_arrivals = !self.arrivals.is_empty()
            && (now >= self.arrivals_at || self.arrivals.len() >= MAX_ARRIVALS / 4);
        if !(self.feedback_due || self.finish_due || want_input || want_arrivals) {
            return Ok(());
        }
        let shared = self.shared.clone();
        let Some(mut tx) = shared.tx.try_lock() else {
            return Ok(());
        };
        let st = &shared.stats;
        if self.finish_due {
            let hr = self.host_random;
            match tx.try_send(
                Kind::Finish,
                RANDOM_LEN,
                |b| b.copy_from_slice(&hr),
                &st.messages_sent,
            ) {
                Some(Ok(())) => self.finish_due = false,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
        if want_arrivals && !self.send_arrivals(&mut tx, now)? {
            return tx.try_flush();
        }
        if self.feedback_due {
            let body = self.feedback_body();
            match tx.try_send(
                Kind::Feedback,
                crate::wire::FEEDBACK_LEN,
                |b| b.copy_from_slice(&body),
                &st.messages_sent,
            ) {
                Some(Ok(())) => {
                    add(&st.feedback_sent, 1);
                    self.feedback_due = false;
                    self.feedback_at = now + self.config.feedback_interval;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
        if want_input {
            let max_body = shared.params.max_body();
            let mut input = shared.input.lock().expect("input lock");
            let before = input.retransmits;
            if let Some(body) = input.batch(now, max_body, false) {
                add(&st.input_retransmits, input.retransmits - before);
                drop(input);
                if let Some(Err(e)) = tx.try_send(
                    Kind::Input,
                    body.len(),
                    |b| b.copy_from_slice(&body),
                    &st.messages_sent,
                ) {
                    // (When not sent, the events stay queued for the next batch.)
                    return Err(e);
                }
            }
        }
        tx.try_flush()
    }

    fn drain_outputs(&mut self) {
        for o in self.outputs.drain(..) {
            match o {
                Output::Frame {
                    index,
                    pts,
                    flags,
                    data,
                    recovered,
                } => self.events.push_back(ClientEvent::Frame(Frame::owned(
                    index, pts, flags, data, recovered,
                ))),
                Output::Lost(i, n) => {
                    let last = i + (n - 1);
                    self.last_lost = Some(self.last_lost.map_or(last, |l| l.max(last)));
                    self.feedback_due = true;
                    match self.events.back_mut() {
                        Some(ClientEvent::Lost { first, count }) if *first + *count == i => {
                            *count += n;
                        }
                        _ => self
                            .events
                            .push_back(ClientEvent::Lost { first: i, count: n }),
                    }
                }
            }
        }
    }

    fn handle(&mut self, msg: Backing, now: Instant) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let encrypted = self.shared.params.encryption;
        let (kind, pn, body) = match self.guard.open(msg.as_slice()) {
            Ok(x) => x,
            Err(d) => {
                stats.count_drop(d);
                return;
            }
        };
        if self.reasm.is_some() && !kind.is_handshake() {
            if self.arrivals.len() < MAX_ARRIVALS {
                let at = now.saturating_duration_since(self.epoch).as_micros() as u64;
                self.arrivals.push((pn, at));
            } else {
                add(&stats.arrivals_dropped, 1);
            }
        }
        match kind {
            Kind::Padding => add(&stats.padding_received, 1),
            // r[impl session.reassembly.shards]
            Kind::Shard if self.reasm.is_some() => {
                let mut r = Reader::new(body);
                let Ok(h) = ShardHeader::read(&mut r) else {
                    add(&stats.malformed_dropped, 1);
                    return;
                };
                let payload = r.rest();
                let reasm = self.reasm.as_mut().expect("checked");
                if let Err(e) = reasm.shard(&h, payload, now, stats, &mut self.outputs) {
                    add(
                        match e {
                            Reject::Malformed => &stats.malformed_dropped,
                            Reject::Late => &stats.late_shards,
                            Reject::Redundant => &stats.redundant_shards,
                            Reject::Duplicate => &stats.duplicate_shards,
                        },
                        1,
                    );
                }
            }
            Kind::Frame if self.reasm.is_none() => {
                let mut r = Reader::new(body);
                let Ok(h) = FrameHeader::read(&mut r) else {
                    add(&stats.malformed_dropped, 1);
                    return;
                };
                let payload_len = r.remaining();
                let zero_copy = !encrypted;
                let payload = r.rest().to_owned_if(!zero_copy);
                self.stream_part(h, msg, payload, payload_len);
            }
            Kind::InputAck => {
                let Ok(next) = crate::wire::read_u64_body(body) else {
                    add(&stats.malformed_dropped, 1);
                    return;
                };
                let mut input = self.shared.input.lock().expect("input lock");
                let before = input.acked;
                input.ack(next, now);
                add(&stats.input_acked, input.acked - before);
                if let Some(rtt) = input.srtt() {
                    set(&stats.input_rtt_us, rtt.as_micros() as u64);
                }
            }
            // The host did not hear our Finish: say it again.
            Kind::Welcome => self.finish_due = true,
            Kind::Bye => match crate::wire::read_u32_body(body) {
                Ok(end) => {
                    if self.bye.is_none() {
                        self.bye = Some((end, now + self.config.frame_timeout));
                    }
                }
                Err(_) => add(&stats.malformed_dropped, 1),
            },
            _ => add(&stats.unexpected_dropped, 1),
        }
        self.drain_outputs();
    }

    // r[impl session.wire.stream-frames]
    fn stream_part(
        &mut self,
        h: FrameHeader,
        msg: Backing,
        copied: Option<Vec<u8>>,
        payload_len: usize,
    ) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let p = shared.params;
        let part_size = p.part_size();
        let len = h.frame_len as usize;
        let parts = len.div_ceil(part_size).max(1);
        let expect = len
            .saturating_sub(h.part as usize * part_size)
            .min(part_size);
        if len > p.max_frame as usize
            || h.parts as usize != parts
            || h.part >= h.parts
            || payload_len != expect
            || h.frame < self.next_stream_frame
            || h.frame > crate::wire::MAX_FRAME_INDEX
        {
            add(&stats.malformed_dropped, 1);
            return;
        }
        // Frames skipped by the host (it failed mid-frame) are reported lost.
        if h.frame > self.next_stream_frame && h.part == 0 {
            let n = h.frame - self.next_stream_frame;
            self.outputs.push(Output::Lost(self.next_stream_frame, n));
            add(&stats.frames_lost, n as u64);
            self.next_stream_frame = h.frame;
            self.part = None;
        }
        let bytes = |copied: &Option<Vec<u8>>, msg: &Backing| -> Vec<u8> {
            match copied {
                Some(v) => v.clone(),
                None => msg.as_slice()[OUTER_LEN + FRAME_HEADER_LEN..].to_vec(),
            }
        };
        let done = |this: &mut Self, frame: Frame| {
            add(&stats.frames_delivered, 1);
            add(&stats.frame_bytes_delivered, frame.data().len() as u64);
            this.next_stream_frame = h.frame + 1;
            this.events.push_back(ClientEvent::Frame(frame));
        };
        if parts == 1 {
            let frame = match copied {
                Some(v) => Frame::owned(h.frame, h.pts, h.flags, v, false),
                None => Frame::shared(
                    h.frame,
                    h.pts,
                    h.flags,
                    msg,
                    OUTER_LEN + FRAME_HEADER_LEN,
                    len,
                ),
            };
            done(self, frame);
            return;
        }
        match (&mut self.part, h.part) {
            (_, 0) => {
                let mut buf = Vec::with_capacity(len);
                buf.extend_from_slice(&bytes(&copied, &msg));
                self.part = Some((h, buf));
            }
            (Some((first, buf)), n)
                if first.frame == h.frame
                    && first.frame_len == h.frame_len
                    && buf.len() == n as usize * part_size =>
            {
                buf.extend_from_slice(&bytes(&copied, &msg));
                if n + 1 == h.parts {
                    let (first, buf) = self.part.take().expect("present");
                    done(
                        self,
                        Frame::owned(first.frame, first.pts, first.flags, buf, false),
                    );
                }
            }
            _ => {
                add(&stats.malformed_dropped, 1);
            }
        }
    }
}

trait ToOwnedIf {
    fn to_owned_if(&self, yes: bool) -> Option<Vec<u8>>;
}

impl ToOwnedIf for [u8] {
    fn to_owned_if(&self, yes: bool) -> Option<Vec<u8>> {
        yes.then(|| self.to_vec())
    }
}

impl<T: LinkTx> ClientInput<T> {
    // r[impl session.input.send]
    /// Send one input event to the host. It is delivered exactly once and
    /// in order, also over lossy links (retransmitted by
    /// [`Client::next_frame`], which must keep running). Fails with
    /// [`SessionError::InputBacklog`] when `max_input_queue` events wait for
    /// acknowledgement.
    pub async fn send_input(&mut self, event: InputEvent) -> Result<(), SessionError> {
        event.validate().map_err(SessionError::InvalidInput)?;
        let shared = &self.shared;
        {
            let mut input = shared.input.lock().expect("input lock");
            if !input.push(event) {
                return Err(SessionError::InputBacklog {
                    max: input.unacked(),
                });
            }
        }
        add(&shared.stats.input_sent, 1);
        let mut tx = shared.tx.lock().await;
        let max_body = shared.params.max_body();
        let body = {
            let mut input = shared.input.lock().expect("input lock");
            let before = input.retransmits;
            // On a stream link nothing is lost: send only what was never sent.
            let b = input.batch(Instant::now(), max_body, shared.stream);
            add(&shared.stats.input_retransmits, input.retransmits - before);
            b
        };
        if let Some(body) = body {
            tx.send(
                Kind::Input,
                body.len(),
                |b| b.copy_from_slice(&body),
                &shared.stats.messages_sent,
            )
            .await?;
        }
        tx.tx.flush().await?;
        Ok(())
    }

    /// A snapshot of the client's counters.
    pub fn stats(&self) -> ClientStats {
        self.shared.stats.snapshot()
    }

    /// End the session from the client's side: a `Bye` (three copies on a
    /// lossy link), then the link's graceful close. The host's
    /// `next_event` returns `Ok(None)` after the input sent before it.
    pub async fn close(&mut self) -> Result<(), SessionError> {
        let shared = &self.shared;
        let mut tx = shared.tx.lock().await;
        crate::tx::send_bye(&mut tx, 0, shared.stream, &shared.stats.messages_sent).await?;
        tx.tx.close().await?;
        Ok(())
    }
}
