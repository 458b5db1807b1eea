//! A fault-injecting wrapper around any link: seeded, reproducible loss,
//! duplication, reordering and delay.
//!
//! Faults are applied where messages arrive: a [`FaultLink`] injects faults
//! into what its receiving half yields. To fault both directions of a
//! connection, wrap both ends with [`fault_pair`]; both then declare the
//! combined capabilities, so that code on either end knows the link is lossy.
//!
//! The fate of every message (dropped, duplicated, held back for `k` later
//! messages, delayed by `d`) is drawn from a SplitMix64 generator with a fixed
//! number of draws per message, so the same seed and the same input give the
//! same fault pattern, whatever the timing.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_timer::Delay;

use crate::{Backing, Link, LinkCaps, LinkError, LinkRx, LinkTx, MaybeSendFuture};

/// The faults applied to one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    /// Probability in `[0, 1]` that a message is dropped.
    pub loss: f64,
    /// Probability in `[0, 1]` that a message is delivered twice.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a message is held back behind later ones.
    pub reorder: f64,
    /// A held-back message lets at most this many later messages pass it
    /// (the displacement bound). At least 1 when `reorder > 0`.
    pub max_displacement: usize,
    /// A held-back message is released after this long even if fewer later
    /// messages came, so a stalled stream does not strand it.
    pub max_hold: Duration,
    /// Fixed delay added to every message.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per message (reorders
    /// messages when larger than their spacing).
    pub jitter: Duration,
    /// A bottleneck in front of the receiver: a link of limited rate with a
    /// drop-tail queue and a propagation delay.
    pub bottleneck: Option<Bottleneck>,
}

// r[impl faults.bottleneck]
/// A bottleneck: messages leave its queue at `rate_bps` (in arrival
/// order), a message that does not fit the queue's `queue_bytes` is
/// dropped (counted in [`FaultStats::queue_dropped`]), and every message
/// is delivered `delay` after it left the queue.
///
/// The queue runs on real time (when messages reach the wrapped link's
/// receiving half), so unlike the drawn faults it depends on timing; with
/// the same sender schedule it drops the same messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bottleneck {
    /// Rate, bits per second (at least 1000).
    pub rate_bps: u64,
    /// Queue limit in bytes (messages waiting and the one leaving).
    pub queue_bytes: usize,
    /// Propagation delay after the queue.
    pub delay: Duration,
}

impl Bottleneck {
    /// A bottleneck of `rate_bps` whose queue holds `queue` at that rate.
    pub fn new(rate_bps: u64, queue: Duration, delay: Duration) -> Self {
        Bottleneck {
            rate_bps,
            queue_bytes: (rate_bps as f64 / 8.0 * queue.as_secs_f64()) as usize,
            delay,
        }
    }
}

impl FaultSpec {
    /// No faults: messages pass straight through.
    pub const fn none() -> Self {
        FaultSpec {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            max_displacement: 0,
            max_hold: Duration::from_millis(20),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            bottleneck: None,
        }
    }

    /// Only random loss with probability `loss`.
    pub const fn loss(loss: f64) -> Self {
        FaultSpec {
            loss,
            ..FaultSpec::none()
        }
    }

    /// Whether messages may be lost (or duplicated, which also breaks
    /// exactly-once delivery).
    pub fn breaks_reliability(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.bottleneck.is_some()
    }

    /// Whether messages may arrive out of order.
    pub fn breaks_order(&self) -> bool {
        self.reorder > 0.0 || self.jitter > Duration::ZERO
    }

    /// Check the probabilities and the displacement bound.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(FaultConfigError::Probability { name, value: p });
            }
        }
        if self.reorder > 0.0 && self.max_displacement == 0 {
            return Err(FaultConfigError::NoDisplacement);
        }
        if self.bottleneck.is_some_and(|b| b.rate_bps < 1000) {
            return Err(FaultConfigError::BottleneckRate);
        }
        Ok(())
    }

    fn apply_to(&self, mut caps: LinkCaps) -> LinkCaps {
        caps.reliable &= !self.breaks_reliability();
        caps.ordered &= !self.breaks_order();
        caps
    }
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec::none()
    }
}

/// An invalid [`FaultSpec`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FaultConfigError {
    /// A probability outside `[0, 1]` (or NaN).
    Probability {
        /// Which field.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// `reorder > 0` with `max_displacement == 0`.
    NoDisplacement,
    /// A bottleneck slower than 1000 bit/s.
    BottleneckRate,
}

impl fmt::Display for FaultConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultConfigError::Probability { name, value } => {
                write!(
                    f,
                    "fault probability `{name}` is {value}, not within [0, 1]"
                )
            }
            FaultConfigError::NoDisplacement => {
                f.write_str("reorder probability is set but max_displacement is 0")
            }
            FaultConfigError::BottleneckRate => f.write_str("bottleneck rate below 1000 bit/s"),
        }
    }
}

impl std::error::Error for FaultConfigError {}

/// What the injector did, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Messages that arrived from the wrapped link.
    pub received: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Messages held back behind later ones.
    pub reordered: u64,
    /// Messages delayed.
    pub delayed: u64,
    /// Messages handed to the caller.
    pub delivered: u64,
    /// Messages dropped because the bottleneck's queue was full.
    pub queue_dropped: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
    delivered: AtomicU64,
    queue_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A live view of a [`FaultLink`]'s counters, usable after the link moved
/// into another task.
#[derive(Clone, Default)]
pub struct FaultStatsHandle(Arc<Counters>);

impl FaultStatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> FaultStats {
        let c = &self.0;
        FaultStats {
            received: c.received.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            queue_dropped: c.queue_dropped.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for FaultStatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// SplitMix64: tiny, fast, and fixed forever, so fault patterns stay
/// reproducible across versions of this crate's dependencies.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A message's fate, drawn with the same number of draws for every message.
struct Fate {
    drop: bool,
    duplicate: bool,
    hold: Option<usize>,
    delay: Duration,
}

fn draw_fate(spec: &FaultSpec, rng: &mut SplitMix64) -> Fate {
    let (u_loss, u_dup, u_reorder, u_k, u_jitter) = (
        rng.unit(),
        rng.unit(),
        rng.unit(),
        rng.next_u64(),
        rng.unit(),
    );
    let hold = (u_reorder < spec.reorder && spec.max_displacement > 0)
        .then(|| 1 + (u_k % spec.max_displacement as u64) as usize);
    Fate {
        drop: u_loss < spec.loss,
        duplicate: u_dup < spec.duplicate,
        hold,
        delay: spec.delay + spec.jitter.mul_f64(u_jitter),
    }
}

struct Held {
    seq: u64,
    remaining: usize,
    deadline: Delay,
    msg: Backing,
}

/// Messages ready to hand out, each with its arrival number.
type Ready = VecDeque<(u64, Backing)>;

/// Put a released held-back message before every newer ready message, so
/// that nothing overtakes it once its count ran out.
fn release(ready: &mut Ready, seq: u64, msg: Backing) {
    let at = ready
        .iter()
        .position(|(s, _)| *s > seq)
        .unwrap_or(ready.len());
    ready.insert(at, (seq, msg));
}

/// Wrap one end of a link so that what it receives suffers `spec`.
///
/// Its capabilities are the inner link's, made unreliable and/or unordered
/// as `spec` requires.
pub fn wrap<L: Link>(
    inner: L,
    spec: FaultSpec,
    seed: u64,
) -> Result<FaultLink<L>, FaultConfigError> {
    spec.validate()?;
    let caps = spec.apply_to(inner.caps());
    Ok(FaultLink {
        inner,
        spec,
        seed,
        caps,
        stats: FaultStatsHandle::default(),
    })
}

/// Wrap both ends of a connection: messages from `a` to `b` suffer
/// `a_to_b`, messages from `b` to `a` suffer `b_to_a`. Both ends declare the
/// combined capabilities.
pub fn fault_pair<A: Link, B: Link>(
    a: A,
    b: B,
    a_to_b: FaultSpec,
    b_to_a: FaultSpec,
    seed: u64,
) -> Result<(FaultLink<A>, FaultLink<B>), FaultConfigError> {
    let mut fa = wrap(a, b_to_a, seed)?;
    let mut fb = wrap(b, a_to_b, seed ^ 0x5DEE_CE66_D1CE_5EED)?;
    let caps = a_to_b.apply_to(b_to_a.apply_to(fa.inner.caps()));
    fa.caps = caps;
    fb.caps = caps;
    Ok((fa, fb))
}

// r[impl faults.caps]
/// A link whose receiving side injects faults (see the module docs).
pub struct FaultLink<L> {
    inner: L,
    spec: FaultSpec,
    seed: u64,
    caps: LinkCaps,
    stats: FaultStatsHandle,
}

impl<L: Link> FaultLink<L> {
    /// The injector's counters.
    pub fn stats(&self) -> FaultStatsHandle {
        self.stats.clone()
    }
}

impl<L: Link> Link for FaultLink<L> {
    type Tx = FaultTx<L::Tx>;
    type Rx = FaultRx<L::Rx>;

    fn caps(&self) -> LinkCaps {
        self.caps
    }

    fn split(self) -> (Self::Tx, Self::Rx) {
        let (tx, rx) = self.inner.split();
        (
            FaultTx {
                inner: tx,
                caps: self.caps,
            },
            FaultRx {
                inner: rx,
                spec: self.spec,
                rng: SplitMix64(self.seed),
                caps: self.caps,
                stats: self.stats,
                ready: VecDeque::new(),
                held: Vec::new(),
                timed: Vec::new(),
                arrivals: 0,
                end: None,
                queue: VecDeque::new(),
                link_free: None,
            },
        )
    }
}

/// The sending half of a [`FaultLink`]: the inner half, with the declared
/// capabilities.
pub struct FaultTx<T> {
    inner: T,
    caps: LinkCaps,
}

impl<T: LinkTx> LinkTx for FaultTx<T> {
    type Permit<'a>
        = T::Permit<'a>
    where
        Self: 'a;

    fn caps(&self) -> LinkCaps {
        self.caps
    }

    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<T::Permit<'_>, LinkError>> {
        self.inner.reserve()
    }

    fn mark_validated(&self) {
        self.inner.mark_validated();
    }

    fn flush(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        self.inner.flush()
    }

    fn close(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        self.inner.close()
    }
}

/// The receiving half of a [`FaultLink`], where the faults happen.
pub struct FaultRx<R> {
    inner: R,
    spec: FaultSpec,
    rng: SplitMix64,
    caps: LinkCaps,
    stats: FaultStatsHandle,
    ready: Ready,
    held: Vec<Held>,
    timed: Vec<(Delay, u64, Backing)>,
    arrivals: u64,
    end: Option<Result<(), LinkError>>,
    /// The bottleneck's queue: (departure, bytes).
    queue: VecDeque<(std::time::Instant, usize)>,
    link_free: Option<std::time::Instant>,
}

enum Event {
    Inner(Result<Option<Backing>, LinkError>),
    Timer,
}

impl<R: LinkRx> FaultRx<R> {
    // r[impl faults.seeded]
    // r[impl faults.loss]
    // r[impl faults.duplicate]
    fn admit(&mut self, msg: Backing) {
        let c = &self.stats.0;
        bump(&c.received);
        let fate = draw_fate(&self.spec, &mut self.rng);
        let seq = self.arrivals;
        self.arrivals += 1;
        if fate.drop {
            bump(&c.dropped);
            return;
        }
        if let Some(b) = self.spec.bottleneck {
            // r[impl faults.bottleneck]
            let now = std::time::Instant::now();
            while self.queue.front().is_some_and(|&(d, _)| d <= now) {
                self.queue.pop_front();
            }
            let queued: usize = self.queue.iter().map(|q| q.1).sum();
            let size = msg.as_slice().len();
            if queued + size > b.queue_bytes {
                bump(&c.queue_dropped);
                return;
            }
            let start = self.link_free.map_or(now, |f| f.max(now));
            let departure =
                start + Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / b.rate_bps);
            self.link_free = Some(departure);
            self.queue.push_back((departure, size));
            let fate = Fate {
                delay: departure - now + b.delay + fate.delay,
                ..fate
            };
            if fate.duplicate {
                bump(&c.duplicated);
                let copy = msg.to_boxed();
                self.place(&fate, seq, msg);
                self.place(&fate, seq, copy);
            } else {
                self.place(&fate, seq, msg);
            }
            return;
        }
        if fate.duplicate {
            bump(&c.duplicated);
            let copy = msg.to_boxed();
            self.place(&fate, seq, msg);
            self.place(&fate, seq, copy);
        } else {
            self.place(&fate, seq, msg);
        }
    }

    // r[impl faults.reorder]
    // r[impl faults.delay]
    fn place(&mut self, fate: &Fate, seq: u64, msg: Backing) {
        let c = &self.stats.0;
        if let Some(k) = fate.hold {
            bump(&c.reordered);
            self.held.push(Held {
                seq,
                remaining: k,
                deadline: Delay::new(self.spec.max_hold + fate.delay),
                msg,
            });
        } else if !fate.delay.is_zero() {
            bump(&c.delayed);
            self.timed.push((Delay::new(fate.delay), seq, msg));
        } else {
            self.ready.push_back((seq, msg));
        }
    }

    /// Hand out the next ready message, counting it as passing every
    /// held-back message.
    fn pop_ready(&mut self) -> Option<Backing> {
        let (_, msg) = self.ready.pop_front()?;
        bump(&self.stats.0.delivered);
        let mut i = 0;
        while i < self.held.len() {
            self.held[i].remaining -= 1;
            if self.held[i].remaining == 0 {
                let h = self.held.remove(i);
                release(&mut self.ready, h.seq, h.msg);
            } else {
                i += 1;
            }
        }
        Some(msg)
    }

    /// Move every message whose timer fired to `ready`; true if any did.
    fn poll_timers(
        held: &mut Vec<Held>,
        timed: &mut Vec<(Delay, u64, Backing)>,
        ready: &mut Ready,
        cx: &mut Context<'_>,
    ) -> bool {
        let mut fired = false;
        let mut i = 0;
        while i < held.len() {
            if Pin::new(&mut held[i].deadline).poll(cx).is_ready() {
                let h = held.remove(i);
                release(ready, h.seq, h.msg);
                fired = true;
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < timed.len() {
            if Pin::new(&mut timed[i].0).poll(cx).is_ready() {
                let (_, seq, msg) = timed.remove(i);
                ready.push_back((seq, msg));
                fired = true;
            } else {
                i += 1;
            }
        }
        fired
    }
}

impl<R: LinkRx> LinkRx for FaultRx<R> {
    fn caps(&self) -> LinkCaps {
        self.caps
    }

    // r[impl faults.eof]
    async fn recv(&mut self) -> Result<Option<Backing>, LinkError> {
        loop {
            if let Some(msg) = self.pop_ready() {
                return Ok(Some(msg));
            }
            if let Some(end) = &self.end {
                // The wrapped link ended: held-back messages go now, delayed
                // ones when their time comes, then the end itself.
                if !self.held.is_empty() {
                    for h in std::mem::take(&mut self.held) {
                        release(&mut self.ready, h.seq, h.msg);
                    }
                    continue;
                }
                if self.timed.is_empty() {
                    return end.clone().map(|()| None);
                }
            }
            let event = {
                let Self {
                    inner,
                    held,
                    timed,
                    ready,
                    end,
                    ..
                } = self;
                let mut recv = pin!(async {
                    if end.is_some() {
                        std::future::pending().await
                    } else {
                        inner.recv().await
                    }
                });
                poll_fn(|cx| {
                    if Self::poll_timers(held, timed, ready, cx) {
                        return Poll::Ready(Event::Timer);
                    }
                    recv.as_mut().poll(cx).map(Event::Inner)
                })
                .await
            };
            match event {
                Event::Timer => {}
                Event::Inner(Ok(Some(msg))) => self.admit(msg),
                Event::Inner(Ok(None)) => self.end = Some(Ok(())),
                Event::Inner(Err(e)) => self.end = Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinkTxExt, MemoryConfig, memory_pair};

    // r[verify faults.bottleneck]
    #[test]
    fn a_bottleneck_queues_drops_the_overflow_and_spaces_deliveries() {
        futures::executor::block_on(async {
            let (a, b) = memory_pair(MemoryConfig {
                capacity: 256,
                ..MemoryConfig::default()
            });
            // 8 Mbit/s = 1000 bytes per ms; 10 kB of queue.
            let spec = FaultSpec {
                bottleneck: Some(Bottleneck {
                    rate_bps: 8_000_000,
                    queue_bytes: 10_000,
                    delay: Duration::from_millis(5),
                }),
                ..FaultSpec::none()
            };
            let b = wrap(b, spec, 1).unwrap();
            assert!(!b.caps().reliable);
            let stats = b.stats();
            let (mut tx, _) = a.split();
            let (_, mut rx) = b.split();
            let msg = [7u8; 1000];
            // A burst of 100 messages at once: about 10 fit.
            for _ in 0..100 {
                tx.send(&msg).await.unwrap();
            }
            tx.close().await.unwrap();
            let start = std::time::Instant::now();
            let mut got = 0;
            while let Some(m) = rx.recv().await.unwrap() {
                assert_eq!(m.as_slice(), &msg);
                got += 1;
            }
            let took = start.elapsed();
            let s = stats.snapshot();
            assert_eq!(s.queue_dropped + got, 100);
            assert!((10..=12).contains(&got), "{got} delivered: {s:?}");
            // Ten 1 ms transmissions and 5 ms of propagation at least.
            assert!(took >= Duration::from_millis(12), "{took:?}");
        });
    }

    #[test]
    fn a_bottleneck_carries_a_paced_sender_without_loss() {
        futures::executor::block_on(async {
            let (a, b) = memory_pair(MemoryConfig::default());
            let spec = FaultSpec {
                bottleneck: Some(Bottleneck::new(
                    8_000_000,
                    Duration::from_millis(5),
                    Duration::ZERO,
                )),
                ..FaultSpec::none()
            };
            let b = wrap(b, spec, 1).unwrap();
            let stats = b.stats();
            let (mut tx, _) = a.split();
            let (_, mut rx) = b.split();
            let recv = async {
                let mut n = 0;
                while rx.recv().await.unwrap().is_some() {
                    n += 1;
                }
                n
            };
            let send = async {
                // 1000 bytes every 2 ms: half the rate.
                for _ in 0..50 {
                    tx.send(&[1u8; 1000]).await.unwrap();
                    Delay::new(Duration::from_millis(2)).await;
                }
                tx.close().await.unwrap();
            };
            let (n, ()) = futures::join!(recv, send);
            assert_eq!(n, 50);
            assert_eq!(stats.snapshot().queue_dropped, 0);
        });
    }
}
