//! Input events and the reliable, ordered input channel (`session.input.*`).
//!
//! The client numbers every event. An `Input` message carries a run of
//! consecutive events starting at the oldest one not yet acknowledged; the
//! host delivers an event only when it is the next number it expects, ignores
//! numbers it already delivered, and answers with a cumulative `InputAck`
//! (the next number it expects). The client retransmits its unacknowledged
//! run when the retransmission timeout passes; the timeout follows the
//! measured round trip (RFC 6298: SRTT + 4·RTTVAR, doubled on each
//! retransmission). Every input event is delivered reliably; there is no
//! "latest state wins" mode.

use std::collections::VecDeque;
use std::time::Duration;

use facet::Facet;
use web_time::Instant;

use crate::wire::{MAX_TEXT, Reader, WireError, Writer};

/// Phase of a touch contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Facet)]
#[repr(u8)]
pub enum TouchPhase {
    /// The contact began.
    Start,
    /// The contact moved.
    Move,
    /// The contact lifted.
    End,
    /// The contact was cancelled.
    Cancel,
}

/// One input event from the client's user.
#[derive(Debug, Clone, PartialEq, Facet)]
#[repr(u8)]
pub enum InputEvent {
    /// A key went down or up.
    Key {
        /// Platform-neutral key code (e.g. a USB HID usage).
        code: u32,
        /// Pressed (`true`) or released.
        down: bool,
        /// Modifier bits held at the time.
        mods: u16,
    },
    /// Relative mouse motion.
    MouseMove {
        /// Horizontal motion.
        dx: i32,
        /// Vertical motion.
        dy: i32,
    },
    /// Absolute pointer position.
    MouseAbs {
        /// Horizontal position.
        x: i32,
        /// Vertical position.
        y: i32,
    },
    /// A mouse button went down or up.
    MouseButton {
        /// Button number (0 left, 1 right, 2 middle, ...).
        button: u8,
        /// Pressed (`true`) or released.
        down: bool,
    },
    /// Scroll wheel.
    Wheel {
        /// Horizontal scroll.
        dx: i32,
        /// Vertical scroll.
        dy: i32,
    },
    /// Full state of one gamepad.
    Gamepad {
        /// Which pad.
        pad: u8,
        /// Button bits.
        buttons: u32,
        /// Left stick x.
        lx: i16,
        /// Left stick y.
        ly: i16,
        /// Right stick x.
        rx: i16,
        /// Right stick y.
        ry: i16,
        /// Left trigger.
        lt: u8,
        /// Right trigger.
        rt: u8,
    },
    /// A touch contact.
    Touch {
        /// Contact id.
        id: u32,
        /// What happened.
        phase: TouchPhase,
        /// Horizontal position, 0..1.
        x: f32,
        /// Vertical position, 0..1.
        y: f32,
    },
    /// Committed text (at most 255 bytes of UTF-8).
    Text(String),
}

// r[impl session.input.encoding]
impl InputEvent {
    /// Bytes this event takes on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            InputEvent::Key { .. } => 7,
            InputEvent::MouseMove { .. } | InputEvent::MouseAbs { .. } => 8,
            InputEvent::MouseButton { .. } => 2,
            InputEvent::Wheel { .. } => 8,
            InputEvent::Gamepad { .. } => 15,
            InputEvent::Touch { .. } => 13,
            InputEvent::Text(t) => 1 + t.len(),
        }
    }

    /// Check what the wire cannot carry (text over 255 bytes).
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            InputEvent::Text(t) if t.len() > MAX_TEXT => Err("text longer than 255 bytes"),
            _ => Ok(()),
        }
    }

    /// Encode (the buffer has `encoded_len` bytes free; `validate` passed).
    pub fn write(&self, w: &mut Writer<'_>) {
        match self {
            InputEvent::Key { code, down, mods } => {
                w.u8(1);
                w.u32(*code);
                w.u8(*down as u8);
                w.u16(*mods);
            }
            InputEvent::MouseMove { dx, dy } => {
                w.u8(2);
                w.i32(*dx);
                w.i32(*dy);
            }
            InputEvent::MouseAbs { x, y } => {
                w.u8(3);
                w.i32(*x);
                w.i32(*y);
            }
            InputEvent::MouseButton { button, down } => {
                w.u8(4);
                w.u8(*button);
                w.u8(*down as u8);
            }
            InputEvent::Wheel { dx, dy } => {
                w.u8(5);
                w.i32(*dx);
                w.i32(*dy);
            }
            InputEvent::Gamepad {
                pad,
                buttons,
                lx,
                ly,
                rx,
                ry,
                lt,
                rt,
            } => {
                w.u8(6);
                w.u8(*pad);
                w.u32(*buttons);
                for v in [lx, ly, rx, ry] {
                    w.i16(*v);
                }
                w.u8(*lt);
                w.u8(*rt);
            }
            InputEvent::Touch { id, phase, x, y } => {
                w.u8(7);
                w.u32(*id);
                w.u8(*phase as u8);
                w.f32(*x);
                w.f32(*y);
            }
            InputEvent::Text(t) => {
                w.u8(8);
                w.u8(t.len() as u8);
                w.bytes(t.as_bytes());
            }
        }
    }

    /// Decode one event.
    pub fn read(r: &mut Reader<'_>) -> Result<InputEvent, WireError> {
        let bool_ = |b: u8| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("input: boolean not 0 or 1")),
        };
        Ok(match r.u8()? {
            1 => InputEvent::Key {
                code: r.u32()?,
                down: bool_(r.u8()?)?,
                mods: r.u16()?,
            },
            2 => InputEvent::MouseMove {
                dx: r.i32()?,
                dy: r.i32()?,
            },
            3 => InputEvent::MouseAbs {
                x: r.i32()?,
                y: r.i32()?,
            },
            4 => InputEvent::MouseButton {
                button: r.u8()?,
                down: bool_(r.u8()?)?,
            },
            5 => InputEvent::Wheel {
                dx: r.i32()?,
                dy: r.i32()?,
            },
            6 => InputEvent::Gamepad {
                pad: r.u8()?,
                buttons: r.u32()?,
                lx: r.i16()?,
                ly: r.i16()?,
                rx: r.i16()?,
                ry: r.i16()?,
                lt: r.u8()?,
                rt: r.u8()?,
            },
            7 => InputEvent::Touch {
                id: r.u32()?,
                phase: match r.u8()? {
                    0 => TouchPhase::Start,
                    1 => TouchPhase::Move,
                    2 => TouchPhase::End,
                    3 => TouchPhase::Cancel,
                    _ => return Err(WireError("input: unknown touch phase")),
                },
                x: r.f32()?,
                y: r.f32()?,
            },
            8 => {
                let n = r.u8()? as usize;
                let b = r.bytes(n)?;
                InputEvent::Text(
                    std::str::from_utf8(b)
                        .map_err(|_| WireError("input: text is not UTF-8"))?
                        .to_owned(),
                )
            }
            _ => return Err(WireError("input: unknown event type")),
        })
    }
}

struct Pending {
    seq: u64,
    event: InputEvent,
    first_sent: Option<Instant>,
    sends: u32,
}

/// Most events one `Input` message carries.
pub const MAX_BATCH: usize = 256;

// r[impl session.input.retransmit]
/// The client's side of the input channel.
pub struct InputSender {
    next_seq: u64,
    queue: VecDeque<Pending>,
    max_queue: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    last_sent: Option<Instant>,
    /// Events retransmitted.
    pub retransmits: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Round-trip samples taken.
    pub rtt_samples: u64,
}

/// Most a retransmission timeout grows to.
pub const MAX_RTO: Duration = Duration::from_secs(1);

impl InputSender {
    /// An empty sender holding at most `max_queue` unacknowledged events.
    pub fn new(max_queue: usize, min_rto: Duration) -> Self {
        InputSender {
            next_seq: 0,
            queue: VecDeque::new(),
            max_queue,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: Duration::from_millis(200).max(min_rto),
            min_rto,
            last_sent: None,
            retransmits: 0,
            acked: 0,
            rtt_samples: 0,
        }
    }

    /// Queue an event; `false` when the queue is full.
    pub fn push(&mut self, event: InputEvent) -> bool {
        if self.queue.len() >= self.max_queue {
            return false;
        }
        self.queue.push_back(Pending {
            seq: self.next_seq,
            event,
            first_sent: None,
            sends: 0,
        });
        self.next_seq += 1;
        true
    }

    /// Unacknowledged events.
    pub fn unacked(&self) -> usize {
        self.queue.len()
    }

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Whether something should be (re)sent now: new events never sent, or
    /// the timeout passed since the last transmission.
    pub fn due(&self, now: Instant) -> bool {
        match self.queue.front() {
            None => false,
            Some(_) if self.queue.iter().any(|p| p.sends == 0) => true,
            Some(_) => self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= self.rto),
        }
    }

    /// When the next retransmission is due, if any event waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.queue.front()?;
        Some(self.last_sent? + self.rto)
    }

    /// Encode the run to (re)send into a body: first seq, count, events,
    /// bounded by `max_body` bytes. Marks the events sent.
    /// With `only_new`, the run starts at the first event never sent (for
    /// stream links, where nothing needs resending).
    pub fn batch(&mut self, now: Instant, max_body: usize, only_new: bool) -> Option<Vec<u8>> {
        let skip = if only_new {
            self.queue.iter().take_while(|p| p.sends > 0).count()
        } else {
            0
        };
        let first = self.queue.get(skip)?.seq;
        let mut len = 10;
        let mut count = 0;
        for p in self.queue.iter().skip(skip).take(MAX_BATCH) {
            if len + p.event.encoded_len() > max_body {
                break;
            }
            len += p.event.encoded_len();
            count += 1;
        }
        if count == 0 {
            return None;
        }
        let mut body = vec![0u8; len];
        let mut w = Writer::new(&mut body);
        w.u64(first);
        w.u16(count as u16);
        let retransmission = self
            .queue
            .iter()
            .skip(skip)
            .take(count)
            .any(|p| p.sends > 0);
        for p in self.queue.iter_mut().skip(skip).take(count) {
            p.event.write(&mut w);
            if p.sends > 0 {
                self.retransmits += 1;
            }
            p.sends += 1;
            p.first_sent.get_or_insert(now);
        }
        if retransmission && self.last_sent.is_some() {
            // Back off: a retransmission doubles the timeout.
            self.rto = (self.rto * 2).min(MAX_RTO);
        }
        self.last_sent = Some(now);
        Some(body)
    }

    /// Apply a cumulative acknowledgement: everything below `next` arrived.
    pub fn ack(&mut self, next: u64, now: Instant) {
        let mut sample = None;
        while let Some(p) = self.queue.front() {
            if p.seq >= next {
                break;
            }
            let p = self.queue.pop_front().expect("front exists");
            self.acked += 1;
            // Karn: only events sent once give a round-trip sample.
            if p.sends == 1 {
                sample = p.first_sent.map(|t| now.saturating_duration_since(t));
            }
        }
        if let Some(r) = sample {
            self.rtt_samples += 1;
            match self.srtt {
                None => {
                    self.srtt = Some(r);
                    self.rttvar = r / 2;
                }
                Some(s) => {
                    let d = s.abs_diff(r);
                    self.rttvar = (self.rttvar * 3 + d) / 4;
                    self.srtt = Some((s * 7 + r) / 8);
                }
            }
            let s = self.srtt.expect("set above");
            self.rto =
                (s + (self.rttvar * 4).max(Duration::from_millis(1))).clamp(self.min_rto, MAX_RTO);
        }
        if self.queue.is_empty() {
            self.last_sent = None;
        }
    }
}

// r[impl session.input.order]
/// The host's side of the input channel.
#[derive(Debug, Default)]
pub struct InputReceiver {
    next: u64,
    /// Events that arrived again after delivery.
    pub duplicates: u64,
    /// Events dropped because an earlier one was missing.
    pub gaps: u64,
}

impl InputReceiver {
    /// The next sequence number expected (the cumulative acknowledgement).
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Take a batch body; deliver the events that are next in order.
    pub fn receive(
        &mut self,
        body: &[u8],
        mut deliver: impl FnMut(InputEvent),
    ) -> Result<(), WireError> {
        let mut r = Reader::new(body);
        let first = r.u64()?;
        let count = r.u16()? as usize;
        if count > MAX_BATCH {
            return Err(WireError("input: batch too large"));
        }
        // Decode the whole batch before delivering any of it, so that a
        // malformed batch delivers nothing.
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(InputEvent::read(&mut r)?);
        }
        if r.remaining() != 0 {
            return Err(WireError("input: trailing bytes"));
        }
        for (i, ev) in events.into_iter().enumerate() {
            let seq = first
                .checked_add(i as u64)
                .ok_or(WireError("input: seq overflow"))?;
            if seq < self.next {
                self.duplicates += 1;
            } else if seq == self.next {
                self.next += 1;
                deliver(ev);
            } else {
                self.gaps += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events() -> Vec<InputEvent> {
        vec![
            InputEvent::Key {
                code: 4,
                down: true,
                mods: 3,
            },
            InputEvent::MouseMove { dx: -5, dy: 7 },
            InputEvent::MouseAbs { x: 100, y: 200 },
            InputEvent::MouseButton {
                button: 1,
                down: false,
            },
            InputEvent::Wheel { dx: 0, dy: -120 },
            InputEvent::Gamepad {
                pad: 1,
                buttons: 0xF0F0,
                lx: -32768,
                ly: 32767,
                rx: 1,
                ry: -1,
                lt: 255,
                rt: 0,
            },
            InputEvent::Touch {
                id: 9,
                phase: TouchPhase::Move,
                x: 0.25,
                y: 0.75,
            },
            InputEvent::Text("héllo".into()),
        ]
    }

    // r[verify session.input.encoding]
    #[test]
    fn every_event_round_trips() {
        for ev in all_events() {
            let mut buf = vec![0u8; ev.encoded_len()];
            let mut w = Writer::new(&mut buf);
            ev.write(&mut w);
            assert_eq!(w.len(), ev.encoded_len());
            let mut r = Reader::new(&buf);
            assert_eq!(InputEvent::read(&mut r).unwrap(), ev);
            assert_eq!(r.remaining(), 0);
        }
        assert!(InputEvent::Text("x".repeat(256)).validate().is_err());
    }

    #[test]
    fn duplicated_and_reordered_batches_deliver_once_in_order() {
        let mut tx = InputSender::new(100, Duration::from_millis(10));
        let mut rx = InputReceiver::default();
        let now = Instant::now();
        for ev in all_events() {
            tx.push(ev);
        }
        let b1 = tx.batch(now, 40, false).unwrap(); // the first few
        let b2 = tx.batch(now, 1000, false).unwrap(); // all (a retransmission of b1's events too)
        let mut got = Vec::new();
        rx.receive(&b2, |e| got.push(e)).unwrap();
        rx.receive(&b1, |e| got.push(e)).unwrap();
        rx.receive(&b2, |e| got.push(e)).unwrap();
        assert_eq!(got, all_events());
        assert!(rx.duplicates > 0);
        tx.ack(rx.next_expected(), now);
        assert_eq!(tx.unacked(), 0);
    }

    // r[verify session.input.retransmit]
    /// The retransmission timeout against an independent model of RFC 6298:
    /// 200 ms before any sample, then SRTT + max(4·RTTVAR, 1 ms) clamped to
    /// `min_rto ..= 1 s`; retransmissions double it (to at most 1 s); Karn:
    /// an acknowledgement of a retransmitted event gives no sample.
    #[test]
    fn rto_follows_rfc6298_with_karn_and_backoff() {
        let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
        let close = |got: Duration, want: f64, what: &str| {
            let got = got.as_secs_f64() * 1000.0;
            assert!(
                (got - want).abs() < 0.01,
                "{what}: RTO {got:.4} ms, the formula gives {want:.4} ms"
            );
        };
        let mut s = InputSender::new(64, Duration::from_millis(10));
        let ev = InputEvent::MouseMove { dx: 1, dy: 2 };
        let mut now = Instant::now();
        let (mut srtt, mut rttvar): (Option<f64>, f64) = (None, 0.0);
        let mut model_rto = 200.0;
        let mut seq = 0u64;
        for rtt in [100.0, 40.0, 250.0, 5.0, 5.0, 5.0, 5.0, 5.0, 900.0, 900.0] {
            assert!(s.push(ev.clone()));
            s.batch(now, 1200, false).expect("a batch");
            close(
                s.deadline().expect("waiting") - now,
                model_rto,
                "before the sample",
            );
            now += ms(rtt);
            seq += 1;
            s.ack(seq, now);
            match srtt {
                None => {
                    srtt = Some(rtt);
                    rttvar = rtt / 2.0;
                }
                Some(sr) => {
                    rttvar = 0.75 * rttvar + 0.25 * (sr - rtt).abs();
                    srtt = Some(0.875 * sr + 0.125 * rtt);
                }
            }
            model_rto = (srtt.unwrap() + (4.0 * rttvar).max(1.0)).clamp(10.0, 1000.0);
            now += ms(1.0);
        }
        // The clamps were both reached on the way (5 ms samples, 900 ms).
        assert_eq!(s.rtt_samples, 10);
        // Back to a short round trip, so that doubling stays below 1 s.
        for _ in 0..30 {
            assert!(s.push(ev.clone()));
            s.batch(now, 1200, false).expect("a batch");
            now += ms(50.0);
            seq += 1;
            s.ack(seq, now);
            let sr = srtt.unwrap();
            rttvar = 0.75 * rttvar + 0.25 * (sr - 50.0).abs();
            srtt = Some(0.875 * sr + 0.125 * 50.0);
            model_rto = (srtt.unwrap() + (4.0 * rttvar).max(1.0)).clamp(10.0, 1000.0);
        }
        assert!(model_rto < 250.0, "settled near 50 ms: {model_rto}");
        // A retransmission doubles the timeout; its acknowledgement is no
        // sample (Karn), so the doubled timeout stays.
        assert!(s.push(ev.clone()));
        s.batch(now, 1200, false).expect("a batch");
        close(s.deadline().unwrap() - now, model_rto, "first send");
        now += ms(model_rto);
        assert!(s.due(now), "due once the timeout passed");
        s.batch(now, 1200, false).expect("a retransmission");
        close(
            s.deadline().unwrap() - now,
            2.0 * model_rto,
            "after one retransmission",
        );
        now += ms(2.0 * model_rto);
        s.batch(now, 1200, false).expect("a second retransmission");
        close(s.deadline().unwrap() - now, 4.0 * model_rto, "after two");
        let samples = s.rtt_samples;
        now += ms(3.0);
        seq += 1;
        s.ack(seq, now);
        assert_eq!(
            s.rtt_samples, samples,
            "a retransmitted event gave a sample"
        );
        assert!(s.push(ev.clone()));
        s.batch(now, 1200, false).expect("a batch");
        close(
            s.deadline().unwrap() - now,
            4.0 * model_rto,
            "kept after Karn",
        );
        // Doubling stops at 1 s.
        for _ in 0..4 {
            now += Duration::from_secs(1);
            s.batch(now, 1200, false).expect("a retransmission");
        }
        close(s.deadline().unwrap() - now, 1000.0, "capped");
    }
}
