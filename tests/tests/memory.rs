//! The in-memory link against the whole conformance suite, plus model-based
//! property tests of its exact capacity accounting.

use futures::FutureExt;
use link_tests::LinkFactory;
use link_tests::util::{check_pattern, fill_pattern, pattern};
use link_types::fault::{self, FaultSpec};
use link_types::{
    Link, LinkRx, LinkTx, LinkTxPermit, MemoryConfig, MemoryLink, WriteSlot, memory_pair,
};
use proptest::prelude::*;

struct Memory(MemoryConfig);

impl LinkFactory for Memory {
    type Link = MemoryLink;
    async fn pair(&self) -> (MemoryLink, MemoryLink) {
        memory_pair(self.0)
    }
}

const SMALL: MemoryConfig = MemoryConfig {
    capacity: 8,
    max_payload: 64 * 1024,
};

mod memory {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], Memory(SMALL));
}

mod memory_capacity_one {
    use super::*;
    link_tests::reliable_suite!(
        #[tokio::test],
        Memory(MemoryConfig {
            capacity: 1,
            max_payload: 1500
        })
    );
}

/// The fault wrapper with no faults must be a transparent reliable link.
struct FaultFree;

impl LinkFactory for FaultFree {
    type Link = fault::FaultLink<MemoryLink>;
    async fn pair(&self) -> (Self::Link, Self::Link) {
        let (a, b) = memory_pair(SMALL);
        fault::fault_pair(a, b, FaultSpec::none(), FaultSpec::none(), 1).expect("valid spec")
    }
}

mod fault_free {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], FaultFree);
}

/// The fault wrapper injecting loss, duplication and reordering, with a
/// fixed seed: a lossy link.
struct Lossy;

impl LinkFactory for Lossy {
    type Link = fault::FaultLink<MemoryLink>;
    async fn pair(&self) -> (Self::Link, Self::Link) {
        let (a, b) = memory_pair(MemoryConfig {
            capacity: 64,
            max_payload: 1472,
        });
        let spec = FaultSpec {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            max_displacement: 3,
            ..FaultSpec::none()
        };
        fault::fault_pair(a, b, spec, spec, 0xF00D).expect("valid spec")
    }

    /// 10% loss each way, with duplication and reordering: the suite's
    /// bursts are short (3 to 300 messages), so a short one can lose a
    /// third by chance; the seed is fixed, so what arrives is the same on
    /// every run.
    fn min_delivery(&self) -> f64 {
        0.3
    }
}

mod lossy_fault {
    use super::*;
    link_tests::lossy_suite!(#[tokio::test], Lossy);
}

fn assert_send<T: Send>(_: &T) {}

// r[verify link.types.maybe-send]
/// On native targets the halves, permits, slots and every trait future are
/// `Send` (a compile-time check; the wasm32 build in CI checks the other
/// half of the rule).
#[test]
fn native_futures_and_halves_are_send() {
    let (a, b) = memory_pair(SMALL);
    let (a, _b) = fault::fault_pair(a, b, FaultSpec::loss(0.5), FaultSpec::none(), 3).unwrap();
    let (mut tx, mut rx) = a.split();
    assert_send(&tx);
    assert_send(&rx);
    assert_send(&rx.recv());
    assert_send(&tx.flush());
    assert_send(&tx.close());
    let fut = tx.reserve();
    assert_send(&fut);
    let permit = fut.now_or_never().expect("capacity").expect("reserve");
    assert_send(&permit);
    let slot = permit.alloc(3).unwrap();
    assert_send(&slot);
}

#[derive(Debug, Clone)]
enum Op {
    /// reserve, alloc(len), write, commit
    Send(usize),
    /// reserve, alloc(len), write, drop the slot
    Discard(usize),
    /// reserve, drop the permit
    DropPermit,
    /// poll reserve once, drop the future
    CancelReserve,
    /// reserve, alloc(len > max)
    Oversize,
    /// recv one (if the model says one is queued) or see it pending
    Recv,
    /// poll recv once and drop the future
    CancelRecv,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    let len = prop_oneof![Just(0usize), Just(max), 0..=max];
    prop_oneof![
        4 => len.clone().prop_map(Op::Send),
        1 => len.prop_map(Op::Discard),
        1 => Just(Op::DropPermit),
        1 => Just(Op::CancelReserve),
        1 => Just(Op::Oversize),
        4 => Just(Op::Recv),
        1 => Just(Op::CancelRecv),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // r[verify link.message.boundaries]
    // r[verify link.reserve.backpressure]
    // r[verify link.reserve.drop-releases]
    // r[verify link.slot.discard]
    /// Random interleavings of reserve/alloc/commit/drop and recv, checked
    /// against a model queue: `reserve` is granted exactly when the model has
    /// room, `recv` yields exactly the model's next message (boundaries and
    /// bytes intact), and nothing ever leaks capacity.
    #[test]
    fn memory_link_matches_a_bounded_queue_model(
        capacity in 1usize..6,
        ops in prop::collection::vec(op(300), 1..120),
    ) {
        let max = 300;
        let (a, b) = memory_pair(MemoryConfig { capacity, max_payload: max });
        let (mut tx, _arx) = a.split();
        let (_btx, mut rx) = b.split();
        let mut model = std::collections::VecDeque::new();
        let mut seq = 0u32;
        for op in ops {
            let room = model.len() < capacity;
            match op {
                Op::Send(len) | Op::Discard(len) => {
                    let granted = tx.reserve().now_or_never();
                    prop_assert_eq!(granted.is_some(), room, "reserve granted iff the model has room");
                    if let Some(permit) = granted {
                        let mut slot = permit.unwrap().alloc(len).unwrap();
                        prop_assert_eq!(slot.as_mut_slice().len(), len);
                        fill_pattern(seq, slot.as_mut_slice());
                        if matches!(op, Op::Send(_)) {
                            slot.commit().unwrap();
                            model.push_back(pattern(seq, len));
                        }
                        seq += 1;
                    }
                }
                Op::DropPermit => {
                    let granted = tx.reserve().now_or_never();
                    prop_assert_eq!(granted.is_some(), room);
                }
                Op::CancelReserve => {
                    let waker = futures::task::noop_waker();
                    let mut cx = std::task::Context::from_waker(&waker);
                    let mut fut = std::pin::pin!(tx.reserve());
                    let _ = fut.as_mut().poll(&mut cx);
                }
                Op::Oversize => {
                    if let Some(p) = tx.reserve().now_or_never() {
                        prop_assert!(p.unwrap().alloc(max + 1).is_err());
                    }
                }
                Op::Recv => {
                    let got = rx.recv().now_or_never();
                    match model.pop_front() {
                        Some(want) => {
                            let m = got.expect("a queued message must be ready").unwrap().unwrap();
                            prop_assert_eq!(&*m, &want[..]);
                            if m.len() >= 8 {
                                prop_assert!(check_pattern(&m).is_some());
                            }
                        }
                        None => prop_assert!(got.is_none(), "recv must wait on an empty link"),
                    }
                }
                Op::CancelRecv => {
                    let waker = futures::task::noop_waker();
                    let mut cx = std::task::Context::from_waker(&waker);
                    let mut fut = std::pin::pin!(rx.recv());
                    if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                        let want = model.pop_front().expect("recv returned a message the model lacks");
                        prop_assert_eq!(&*r.unwrap().unwrap(), &want[..]);
                    }
                }
            }
        }
        // Drain: everything the model holds arrives, then close gives EOF.
        futures::executor::block_on(tx.close()).unwrap();
        while let Some(want) = model.pop_front() {
            let m = rx.recv().now_or_never().unwrap().unwrap().unwrap();
            prop_assert_eq!(&*m, &want[..]);
        }
        prop_assert!(rx.recv().now_or_never().unwrap().unwrap().is_none());
    }

    // r[verify link.message.empty]
    // r[verify link.message.max]
    /// Random message sizes, 0 and the maximum included, sent while the
    /// receiver runs concurrently, arrive byte-exact and in order.
    #[test]
    fn random_sizes_roundtrip_concurrently(
        sizes in prop::collection::vec(prop_oneof![Just(0usize), Just(4096), 0..=4096usize], 1..200),
        capacity in 1usize..10,
    ) {
        let (a, b) = memory_pair(MemoryConfig { capacity, max_payload: 4096 });
        let (mut tx, _arx) = a.split();
        let (_btx, mut rx) = b.split();
        let send = async {
            for (i, &len) in sizes.iter().enumerate() {
                let mut slot = tx.reserve().await.unwrap().alloc(len).unwrap();
                fill_pattern(i as u32, slot.as_mut_slice());
                slot.commit().unwrap();
            }
            tx.close().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await.unwrap() {
                got.push(m.to_vec());
            }
            got
        };
        let ((), got) = futures::executor::block_on(async { futures::join!(send, recv) });
        prop_assert_eq!(got.len(), sizes.len());
        for (i, (m, &len)) in got.iter().zip(&sizes).enumerate() {
            prop_assert_eq!(m, &pattern(i as u32, len));
        }
    }
}

// r[verify link.order.reliable]
// r[verify link.reserve.backpressure]
/// Sender and receiver on two threads, with capacities that force the
/// sender to wait on nearly every message: every message arrives once, in
/// order, and no wake-up is lost (a lost one would hang and time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_tiny_capacity_no_lost_wakeups() {
    for capacity in [1, 2, 3, 7] {
        let (a, b) = memory_pair(MemoryConfig {
            capacity,
            max_payload: 64,
        });
        let (mut tx, _arx) = a.split();
        let (_btx, mut rx) = b.split();
        let n = 100_000u32;
        let sender = tokio::spawn(async move {
            for i in 0..n {
                let mut slot = tx
                    .reserve()
                    .await
                    .unwrap()
                    .alloc(8 + (i as usize % 56))
                    .unwrap();
                fill_pattern(i, slot.as_mut_slice());
                slot.commit().unwrap();
            }
            tx.close().await.unwrap();
        });
        let receiver = tokio::spawn(async move {
            let mut next = 0u32;
            while let Some(m) = rx.recv().await.unwrap() {
                assert_eq!(check_pattern(&m), Some(next), "capacity {capacity}");
                next += 1;
            }
            next
        });
        let run = async { (sender.await.unwrap(), receiver.await.unwrap()) };
        let ((), got) = tokio::time::timeout(std::time::Duration::from_secs(60), run)
            .await
            .expect("a wake-up was lost");
        assert_eq!(got, n);
    }
}

// r[verify link.path.optional]
/// The in-memory link has no path to report: `None`, before and after
/// traffic.
#[tokio::test]
async fn the_memory_link_reports_no_path() {
    use link_types::LinkTxExt;
    let (a, b) = memory_pair(SMALL);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    assert_eq!(tx.path_sample(), None);
    tx.send(b"one").await.unwrap();
    rx.recv().await.unwrap().unwrap();
    assert_eq!(tx.path_sample(), None);
}
