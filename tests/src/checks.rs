//! One check per `link.*` rule. Each takes a factory and panics with a
//! message naming what broke.
//!
//! Checks that apply to lossy links accept loss and reordering there (never
//! corruption), and demand exact delivery on reliable, ordered links.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use futures::task::noop_waker;
use link_types::{Link, LinkError, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, SplitLink, WriteSlot};

use crate::LinkFactory;
use crate::util::*;

/// A message size every link carries: the smaller of 16 KiB and the maximum.
fn mid_len<L: Link>(l: &L) -> usize {
    l.caps().max_payload.min(16 * 1024)
}

/// Bytes a backpressure check may send before it calls the link unbounded.
const FILL_LIMIT: usize = 512 << 20;

/// Send patterned messages `0..n`, message `i` of `len(i)` bytes, and flush.
async fn send_seqs<T: LinkTx>(tx: &mut T, n: u32, len: impl Fn(u32) -> usize) {
    for i in 0..n {
        within("send", send_seq(tx, i, len(i))).await.expect("send");
    }
    within("flush", tx.flush()).await.expect("flush");
}

/// The next `recv` must be end-of-stream.
async fn expect_eof<R: LinkRx>(rx: &mut R, why: &str) {
    let r = within("recv at the end", rx.recv()).await.expect("recv");
    assert!(r.is_none(), "{why}");
}

/// A lossy link must deliver at least the factory's share of a burst:
/// `got` distinct messages of `sent`.
fn assert_delivered<F: LinkFactory>(f: &F, got: usize, sent: usize, what: &str) {
    let need = ((sent as f64) * f.min_delivery()).ceil() as usize;
    assert!(
        got >= need,
        "{what}: {got} of {sent} distinct messages arrived, at least {need} required"
    );
}

/// Receive everything `n` patterned messages produced: exact and in order on
/// reliable links; on lossy links each must be intact and one of `0..n`,
/// and at least the factory's share of them must arrive.
async fn expect_seqs<R: LinkRx, F: LinkFactory>(
    rx: &mut R,
    n: u32,
    reliable: bool,
    f: &F,
) -> BTreeSet<u32> {
    let mut got = BTreeSet::new();
    if reliable {
        for want in 0..n {
            let b = recv_one(rx).await;
            assert_eq!(
                check_pattern(&b),
                Some(want),
                "message {want} corrupted or out of order"
            );
            got.insert(want);
        }
    } else {
        for b in recv_until_quiet(rx, f.settle(), usize::MAX).await {
            let seq = check_pattern(&b).expect("a lossy link delivered a corrupted message");
            assert!(seq < n, "a message that was never sent arrived ({seq})");
            got.insert(seq);
        }
        assert_delivered(f, got.len(), n as usize, "lossy burst");
    }
    got
}

// r[verify link.caps]
/// Capabilities are the same on the link and both halves, and sane.
pub async fn caps_are_declared_and_consistent<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    assert!(caps.max_payload > 0, "max_payload must be positive");
    assert_eq!(
        b.caps().reliable,
        caps.reliable,
        "ends disagree on reliability"
    );
    assert_eq!(b.caps().ordered, caps.ordered, "ends disagree on ordering");
    for l in [a, b] {
        let c = l.caps();
        let (tx, rx) = l.split();
        assert_eq!(tx.caps(), c, "tx half reports other caps than its link");
        assert_eq!(rx.caps(), c, "rx half reports other caps than its link");
    }
}

// r[verify link.message.boundaries]
/// Messages of many sizes arrive whole, never split or merged.
pub async fn boundaries_are_preserved<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let max = caps.max_payload;
    let mut sizes: Vec<usize> = vec![
        8, 9, 15, 64, 100, 1000, 1200, 4095, 4096, 4097, 65_535, 65_536, 70_000,
    ];
    sizes.retain(|&s| s <= max);
    sizes.push(max);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let send = async {
        for (i, &len) in sizes.iter().enumerate() {
            within("send", send_seq(&mut tx, i as u32, len))
                .await
                .expect("send");
        }
        within("flush", tx.flush()).await.expect("flush");
    };
    let recv = async {
        if caps.is_stream() {
            for (i, &len) in sizes.iter().enumerate() {
                let m = recv_one(&mut rx).await;
                assert_eq!(m.len(), len, "message {i} has the wrong length");
                assert_eq!(check_pattern(&m), Some(i as u32), "message {i} corrupted");
            }
        } else {
            let mut got = BTreeSet::new();
            for m in recv_until_quiet(&mut rx, f.settle(), usize::MAX).await {
                let seq = check_pattern(&m).expect("corrupted message") as usize;
                assert!(seq < sizes.len(), "a message that was never sent arrived");
                assert_eq!(m.len(), sizes[seq], "message {seq} has the wrong length");
                got.insert(seq);
            }
            assert_delivered(f, got.len(), sizes.len(), "messages of every size");
        }
    };
    futures::join!(send, recv);
}

// r[verify link.message.empty]
/// Zero-byte messages are carried like any other.
pub async fn empty_messages_are_messages<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let reliable = a.caps().is_stream();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let send = async {
        for _ in 0..3 {
            within("send empty", tx.send(&[]))
                .await
                .expect("send empty");
            within("send marker", tx.send(&[7]))
                .await
                .expect("send marker");
        }
        within("flush", tx.flush()).await.expect("flush");
    };
    let recv = async {
        if reliable {
            for _ in 0..3 {
                assert_eq!(
                    &*recv_one(&mut rx).await,
                    &[] as &[u8],
                    "expected the empty message"
                );
                assert_eq!(
                    &*recv_one(&mut rx).await,
                    &[7],
                    "expected the marker after the empty message"
                );
            }
        } else {
            let got = recv_until_quiet(&mut rx, f.settle(), usize::MAX).await;
            assert!(
                got.iter().all(|m| m.is_empty() || m[..] == [7]),
                "corrupted message"
            );
            let empty = got.iter().filter(|m| m.is_empty()).count();
            let markers = got.len() - empty;
            // (A duplicating link may deliver more; count each kind up to 3.)
            assert_delivered(f, empty.min(3), 3, "empty messages");
            assert_delivered(f, markers.min(3), 3, "one-byte markers");
        }
    };
    futures::join!(send, recv);
}

// r[verify link.message.max]
/// A message of exactly the maximum payload arrives intact.
pub async fn max_payload_messages_are_carried<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let max = a.caps().max_payload;
    let reliable = a.caps().is_stream();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let count = if reliable { 2 } else { 8 };
    let send = async {
        send_seqs(&mut tx, count, |_| max).await;
    };
    let recv = async {
        let got = expect_seqs(&mut rx, count, reliable, f).await;
        assert!(!got.is_empty());
    };
    futures::join!(send, recv);
}

// r[verify link.order.reliable]
/// Many messages, sent while the receiver runs, arrive once each, in order.
pub async fn reliable_links_deliver_exactly_once_in_order<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    assert!(
        a.caps().is_stream(),
        "this check is for reliable, ordered links"
    );
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let n = 2000u32;
    let send = async {
        send_seqs(&mut tx, n, |i| 8 + (i as usize % 300)).await;
        within("close", tx.close()).await.expect("close");
    };
    let recv = async {
        expect_seqs(&mut rx, n, true, f).await;
        expect_eof(&mut rx, "expected end-of-stream after the last message").await;
    };
    futures::join!(send, recv);
}

// r[verify link.split]
/// Both ends send and receive at the same time, each half on its own.
pub async fn split_halves_work_independently<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let reliable = a.caps().is_stream();
    let (mut atx, mut arx) = a.split();
    let (mut btx, mut brx) = b.split();
    let n = 300u32;
    let a_send = async {
        send_seqs(&mut atx, n, |_| 100).await;
    };
    let b_send = async {
        send_seqs(&mut btx, n, |_| 200).await;
    };
    let a_recv = expect_seqs(&mut arx, n, reliable, f);
    let b_recv = expect_seqs(&mut brx, n, reliable, f);
    futures::join!(a_send, b_send, a_recv, b_recv);
}

// r[verify link.split.rebuild]
/// `SplitLink` rebuilds a working link from two halves.
pub async fn split_link_rebuilds_a_link<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let (tx, rx) = a.split();
    let rebuilt = SplitLink::new(tx, rx);
    assert_eq!(rebuilt.caps(), caps, "rebuilt link reports other caps");
    let (mut tx, _rx) = rebuilt.split();
    let (_btx, mut brx) = b.split();
    let send = async {
        send_seqs(&mut tx, 4, |_| 32).await;
    };
    futures::join!(send, expect_seqs(&mut brx, 4, caps.is_stream(), f));
}

/// Read messages `0..` in order until `tx`'s reserve is granted; then commit
/// message `next` with it. Returns how many were read.
async fn read_until_reserve_granted<T: LinkTx, R: LinkRx>(
    tx: &mut T,
    rx: &mut R,
    sent: u32,
    len: usize,
) -> u32 {
    let granted = Cell::new(false);
    let read = Cell::new(0u32);
    let reserve = async {
        let permit = within("reserve after the receiver made room", tx.reserve())
            .await
            .expect("reserve");
        let mut slot = permit.alloc(len).expect("alloc");
        fill_pattern(sent, slot.as_mut_slice());
        slot.commit().expect("commit");
        granted.set(true);
    };
    let reader = async {
        while !granted.get() && read.get() < sent {
            let m = recv_one(rx).await;
            assert_eq!(
                check_pattern(&m),
                Some(read.get()),
                "message lost or reordered under backpressure"
            );
            read.set(read.get() + 1);
            // Let the sender observe the room before reading more.
            sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    futures::join!(reserve, reader);
    read.get()
}

/// Close `tx` and check that messages `from..=last` arrive in order, then EOF.
async fn drain_in_order<T: LinkTx, R: LinkRx>(tx: &mut T, rx: &mut R, from: u32, last: u32) {
    // Close while reading: a stream link's close flushes what is queued,
    // which may have to wait for the reader.
    let close = async { within("close", tx.close()).await.expect("close") };
    let read = async {
        for want in from..=last {
            let m = recv_one(rx).await;
            assert_eq!(
                check_pattern(&m),
                Some(want),
                "message {want} lost, duplicated or reordered"
            );
        }
        expect_eof(rx, "expected end-of-stream").await;
    };
    futures::join!(close, read);
}

// r[verify link.reserve.backpressure]
/// With nobody reading, `reserve` eventually waits; reading lets it go on;
/// nothing was dropped.
pub async fn reserve_waits_when_full_and_resumes<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let len = mid_len(&a);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let sent = fill_until_blocked(&mut tx, len, f.settle(), FILL_LIMIT).await;
    assert!(sent > 0, "reserve waited before anything was sent");
    let read = read_until_reserve_granted(&mut tx, &mut rx, sent, len).await;
    drain_in_order(&mut tx, &mut rx, read, sent).await;
}

// r[verify link.reserve.permit-holds]
/// A permit granted with the link otherwise full still allocates the
/// maximum payload and commits without waiting.
pub async fn permit_holds_capacity<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let max = caps.max_payload;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    if caps.is_stream() {
        let len = max.min(16 * 1024);
        let sent = fill_until_blocked(&mut tx, len, f.settle(), FILL_LIMIT).await;
        // Make room for exactly one more message, then take the permit.
        let read = read_until_reserve_granted(&mut tx, &mut rx, sent, len).await;
        // The link is full again. A fresh permit is only granted after more
        // reads, and once granted it must carry a max-size message.
        let granted = Cell::new(false);
        let take = async {
            let permit = within("reserve", tx.reserve()).await.expect("reserve");
            granted.set(true);
            let mut slot = permit
                .alloc(max)
                .expect("a granted permit must allocate the maximum payload");
            fill_pattern(sent + 1, slot.as_mut_slice());
            slot.commit().expect("a granted permit must commit");
        };
        let reader = async {
            let mut next = read;
            while !granted.get() {
                let m = recv_one(&mut rx).await;
                assert_eq!(check_pattern(&m), Some(next));
                next += 1;
                sleep(std::time::Duration::from_millis(1)).await;
            }
            next
        };
        let ((), next) = futures::join!(take, reader);
        drain_in_order(&mut tx, &mut rx, next, sent + 1).await;
    } else {
        for i in 0..4 {
            let permit = within("reserve", tx.reserve()).await.expect("reserve");
            let mut slot = permit
                .alloc(max)
                .expect("a granted permit must allocate the maximum payload");
            fill_pattern(i, slot.as_mut_slice());
            slot.commit().expect("a granted permit must commit");
        }
        within("flush", tx.flush()).await.expect("flush");
        expect_seqs(&mut rx, 4, false, f).await;
    }
}

// r[verify link.reserve.drop-releases]
/// A dropped permit gives its capacity back.
pub async fn dropped_permit_releases_capacity<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let len = mid_len(&a);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    if caps.is_stream() {
        let sent = fill_until_blocked(&mut tx, len, f.settle(), FILL_LIMIT).await;
        let read = read_until_reserve_granted(&mut tx, &mut rx, sent, len).await;
        // Full again. Read one more to free one unit, take it, drop it, and
        // it must be grantable again at once.
        let m = recv_one(&mut rx).await;
        assert_eq!(check_pattern(&m), Some(read));
        // Done with it: a zero-copy link frees the space when it is dropped.
        drop(m);
        let permit = within("reserve", tx.reserve()).await.expect("reserve");
        drop(permit);
        let again = timeout(f.settle() * 5, tx.reserve()).await;
        let permit = again
            .expect("capacity of a dropped permit was not released")
            .expect("reserve");
        let mut slot = permit.alloc(len).expect("alloc");
        fill_pattern(sent + 1, slot.as_mut_slice());
        slot.commit().expect("commit");
        drain_in_order(&mut tx, &mut rx, read + 1, sent + 1).await;
    } else {
        for _ in 0..10_000 {
            drop(within("reserve", tx.reserve()).await.expect("reserve"));
        }
        within("send", send_seq(&mut tx, 0, 64))
            .await
            .expect("send after many dropped permits");
        within("flush", tx.flush()).await.expect("flush");
        expect_seqs(&mut rx, 1, false, f).await;
    }
}

// r[verify link.reserve.cancel]
/// Dropping a pending `reserve` future holds nothing and loses nothing.
///
/// Stream links: with the link full, 100 `reserve` futures are polled (so
/// that each registers as a waiter) and dropped. Everything is then read,
/// and the link must take as many messages as before: a cancelled reserve
/// that kept even one unit of the room freed by the reads shows as a
/// smaller second fill. Lossy links: cancelled reserves, then a burst of
/// which the usual share must arrive.
pub async fn cancelled_reserve_holds_nothing<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let len = mid_len(&a);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    if caps.is_stream() {
        let sent = fill_until_blocked(&mut tx, len, f.settle(), FILL_LIMIT).await;
        for _ in 0..100 {
            let waker = noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut fut = pin!(tx.reserve());
            if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                panic!("reserve was granted on a full link: {:?}", r.map(|_| ()));
            }
        }
        // (Flush while reading: a batching link still queues the last ones.)
        let flush = async { within("flush", tx.flush()).await.expect("flush") };
        let read = async {
            for want in 0..sent {
                let m = recv_one(&mut rx).await;
                assert_eq!(
                    check_pattern(&m),
                    Some(want),
                    "message {want} lost or reordered after cancelled reserves"
                );
            }
        };
        futures::join!(flush, read);
        let again = fill_until_blocked(&mut tx, len, f.settle(), FILL_LIMIT).await;
        // 100 cancelled reserves that each kept a unit would take 100; the
        // kernel's buffers under a TCP link move by a few percent.
        let slack = if f.exact_capacity() {
            0
        } else {
            (sent / 20).min(50)
        };
        assert!(
            again + slack >= sent,
            "the link took {sent} messages before 100 cancelled reserves and only {again} \
             after: cancelled reserves kept {} units of capacity (allowed: {slack})",
            sent.saturating_sub(again)
        );
        let read = read_until_reserve_granted(&mut tx, &mut rx, again, len).await;
        drain_in_order(&mut tx, &mut rx, read, again).await;
    } else {
        for i in 0..1000 {
            let waker = noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut fut = pin!(tx.reserve());
            if i % 2 == 0 {
                let _ = fut.as_mut().poll(&mut cx);
            }
        }
        let n = 256;
        let send = async {
            for i in 0..n {
                within("send", send_seq(&mut tx, i, 64))
                    .await
                    .expect("send after cancelled reserves");
                if i % 32 == 31 {
                    within("flush", tx.flush()).await.expect("flush");
                }
            }
            within("flush", tx.flush()).await.expect("flush");
        };
        futures::join!(send, expect_seqs(&mut rx, n, false, f));
    }
}

// r[verify link.alloc.limit]
/// `alloc` above the maximum fails with `TooLarge` and frees the permit;
/// `alloc(max)` then succeeds.
pub async fn alloc_above_max_is_refused<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let max = caps.max_payload;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    // More refusals than any link has capacity: a leak would block.
    for _ in 0..1000 {
        let permit = within("reserve", tx.reserve()).await.expect("reserve");
        match permit.alloc(max + 1) {
            Err(LinkError::TooLarge { len, max: m }) => {
                assert_eq!((len, m), (max + 1, max), "TooLarge reports the wrong sizes")
            }
            Err(e) => panic!("alloc above max failed with the wrong error: {e}"),
            Ok(_) => panic!("alloc above the maximum payload was accepted"),
        }
    }
    // Send while receiving: a stream link's flush of a large message may
    // wait for the reader.
    let send = async {
        within("send max", send_seq(&mut tx, 0, max))
            .await
            .expect("alloc(max) after refusals");
        within("flush", tx.flush()).await.expect("flush");
    };
    futures::join!(send, expect_seqs(&mut rx, 1, caps.is_stream(), f));
}

// r[verify link.slot.len]
/// The slot is exactly as long as asked.
pub async fn slot_has_exact_length<F: LinkFactory>(f: &F) {
    let (a, _b) = f.pair().await;
    let max = a.caps().max_payload;
    let (mut tx, _rx) = a.split();
    // Larger, then smaller: a reused buffer must not keep its old length.
    for len in [max, 0, 1, 7, max / 2, 3, max] {
        let permit = within("reserve", tx.reserve()).await.expect("reserve");
        let mut slot = permit.alloc(len).expect("alloc");
        assert_eq!(
            slot.as_mut_slice().len(),
            len,
            "slot length differs from alloc({len})"
        );
        drop(slot);
    }
}

// r[verify link.slot.commit]
/// One commit is one message: nothing more arrives.
pub async fn commit_publishes_one_message<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let permit = within("reserve", tx.reserve()).await.expect("reserve");
    let mut slot = permit.alloc(40).expect("alloc");
    fill_pattern(5, slot.as_mut_slice());
    slot.commit().expect("commit");
    within("flush", tx.flush()).await.expect("flush");
    let got = recv_until_quiet(&mut rx, f.settle(), 10).await;
    if caps.reliable {
        assert_eq!(got.len(), 1, "one commit delivered {} messages", got.len());
    }
    assert!(!got.is_empty(), "the committed message did not arrive");
    assert!(
        got.iter().all(|m| check_pattern(m) == Some(5)),
        "a different message arrived"
    );
}

// r[verify link.slot.discard]
/// Dropped slots send nothing and give their capacity back.
pub async fn dropped_slot_is_discarded<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    // More discards than any link has capacity: a leak would block.
    for i in 0..1000 {
        let permit = within("reserve", tx.reserve()).await.expect("reserve");
        let mut slot = permit.alloc(64).expect("alloc");
        fill_pattern(1000 + i, slot.as_mut_slice());
        drop(slot);
    }
    let n = 10;
    let send = async {
        for i in 0..n {
            within("send", send_seq(&mut tx, i, 64))
                .await
                .expect("send after discards");
        }
        within("flush", tx.flush()).await.expect("flush");
    };
    let ((), got) = futures::join!(send, recv_until_quiet(&mut rx, f.settle(), usize::MAX));
    let seqs: Vec<u32> = got
        .iter()
        .map(|m| check_pattern(m).expect("corrupted message"))
        .collect();
    assert!(
        seqs.iter().all(|&s| s < n),
        "a discarded slot was delivered"
    );
    if caps.reliable {
        assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    } else {
        let distinct: BTreeSet<u32> = seqs.into_iter().collect();
        assert_delivered(f, distinct.len(), n as usize, "messages after discards");
    }
}

// r[verify link.flush]
/// After `flush`, committed messages reach the peer with no further sends.
pub async fn flush_transmits_queued_messages<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let send = async {
        send_seqs(&mut tx, 5, |_| 50).await;
        // The sender now does nothing at all; the messages must still come.
    };
    let ((), got) = futures::join!(send, expect_seqs(&mut rx, 5, caps.is_stream(), f));
    assert!(!got.is_empty());
    within("flush with nothing queued", tx.flush())
        .await
        .expect("empty flush");
}

// r[verify link.close.eof]
/// Close: every earlier message, then `Ok(None)`.
pub async fn close_delivers_everything_then_eof<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let n = 50u32;
    let send = async {
        send_seqs(&mut tx, n, |_| 1000).await;
        within("close", tx.close()).await.expect("close");
    };
    let recv = async {
        expect_seqs(&mut rx, n, true, f).await;
        expect_eof(&mut rx, "expected Ok(None) after close").await;
    };
    futures::join!(send, recv);
}

// r[verify link.close.sticky]
/// After end-of-stream, `recv` keeps returning `Ok(None)` at once. On a
/// link without a close on the wire (the factory says so), no
/// end-of-stream may appear at all.
pub async fn eof_is_sticky<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    within("close", tx.close()).await.expect("close");
    if !f.sees_close() {
        drop(tx);
        if let Some(r) = timeout(f.settle(), rx.recv()).await {
            panic!(
                "this link has no close on the wire, yet recv returned {:?}",
                r.map(|m| m.map(|b| b.len()))
            );
        }
        return;
    }
    expect_eof(&mut rx, "expected end-of-stream").await;
    drop(tx);
    for _ in 0..5 {
        let r = timeout(f.settle(), rx.recv())
            .await
            .expect("recv after EOF must return at once");
        assert!(
            matches!(r, Ok(None)),
            "recv after EOF returned {:?}",
            r.map(|m| m.map(|b| b.len()))
        );
    }
}

// r[verify link.close.send-after]
/// After close, `reserve` fails with `Closed`; closing again is fine.
pub async fn reserve_after_close_fails<F: LinkFactory>(f: &F) {
    let (a, _b) = f.pair().await;
    let (mut tx, _rx) = a.split();
    within("close", tx.close()).await.expect("close");
    match within("reserve after close", tx.reserve()).await {
        Err(LinkError::Closed) => {}
        Err(e) => panic!("reserve after close failed with {e}, expected Closed"),
        Ok(_) => panic!("reserve after close was granted"),
    }
    within("second close", tx.close())
        .await
        .expect("closing twice is not an error");
}

// r[verify link.drop.abrupt]
/// Dropping the sending half without close (its receiving half stays):
/// earlier messages, then `PeerGone`.
pub async fn dropped_sender_is_an_abrupt_end<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let send = async move {
        send_seqs(&mut tx, 10, |_| 100).await;
        drop(tx);
    };
    let recv = async {
        expect_seqs(&mut rx, 10, true, f).await;
        match within("recv after abrupt end", rx.recv()).await {
            Err(LinkError::PeerGone) => {}
            Err(e) => panic!("an abrupt end was reported as {e:?}, expected PeerGone"),
            Ok(None) => panic!("an abrupt end was reported as a graceful close"),
            Ok(Some(m)) => panic!("unexpected extra message of {} bytes", m.len()),
        }
    };
    futures::join!(send, recv);
}

// r[verify link.rx.drop]
/// Once the receiving half is dropped (its sending half stays), the peer's
/// `reserve` fails with `PeerGone` instead of sending into nothing.
///
/// The peer keeps reading meanwhile, as any peer does (a WebSocket learns
/// of the end from the close frame it reads; a native WebSocket peer that
/// never reads learns it from the TCP reset, checked in
/// `link-ws/tests/ws.rs`).
pub async fn dropped_receiver_fails_peer_reserve<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let (mut tx, mut arx) = a.split();
    let (_btx, brx) = b.split();
    drop(brx);
    let read = async {
        // Until the reserve failed (or the peer's side ended).
        while let Ok(Some(_)) = arx.recv().await {}
        futures::future::pending::<()>().await
    };
    let fail = async {
        let mut i = 0u32;
        loop {
            match tx.reserve().await {
                Err(LinkError::PeerGone) => return,
                Err(e) => panic!("reserve failed with {e:?}, expected PeerGone"),
                Ok(p) => {
                    // A network link may only learn of it after a round
                    // trip; the end may also show in alloc, commit or flush.
                    let mut s = match p.alloc(16) {
                        Ok(s) => s,
                        Err(LinkError::PeerGone) => return,
                        Err(e) => panic!("alloc failed with {e:?}, expected PeerGone"),
                    };
                    fill_pattern(i, s.as_mut_slice());
                    match s.commit() {
                        Ok(()) | Err(LinkError::PeerGone) => {}
                        Err(e) => panic!("commit failed with {e:?}, expected PeerGone"),
                    }
                }
            }
            i += 1;
            match tx.flush().await {
                Ok(()) | Err(LinkError::PeerGone) => {}
                Err(e) => panic!("flush failed with {e:?}, expected PeerGone"),
            }
            sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    let run = async {
        futures::pin_mut!(read);
        futures::future::select(pin!(fail), read).await;
    };
    within("reserve to fail after the receiver was dropped", run).await;
}

// r[verify link.error.sticky]
/// After an error, every `recv` errors at once and yields no message. The
/// error comes from dropping the peer's sending half (its receiving half
/// stays); a link that never reports that (the factory says so) must not
/// report any error.
pub async fn errors_are_sticky<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let reliable = a.caps().is_stream();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let send = async move {
        send_seqs(&mut tx, 5, |_| 10).await;
        drop(tx);
    };
    let mut got = BTreeSet::new();
    let recv = async {
        loop {
            let r = if f.sees_drop() {
                within("an error after the peer's sender was dropped", rx.recv()).await
            } else {
                match timeout(f.settle(), rx.recv()).await {
                    None => break None,
                    Some(r) => r,
                }
            };
            match r {
                Ok(Some(m)) => {
                    let seq = check_pattern(&m).expect("corrupted message");
                    assert!(seq < 5, "a message that was never sent arrived");
                    if reliable {
                        assert_eq!(seq, got.len() as u32, "message lost or reordered");
                    }
                    got.insert(seq);
                }
                Ok(None) => panic!("an abrupt end was reported as a graceful close"),
                Err(e) => break Some(e),
            }
        }
    };
    let ((), first_err) = futures::join!(send, recv);
    if reliable {
        assert_eq!(got.len(), 5, "messages before the error were lost");
    } else {
        assert_delivered(f, got.len(), 5, "messages before the end");
    }
    let Some(e) = first_err else {
        assert!(
            !f.sees_drop(),
            "no error after the peer's sender was dropped"
        );
        return;
    };
    assert!(
        f.sees_drop(),
        "this link cannot see its peer's drop, yet recv failed with {e:?}"
    );
    for _ in 0..5 {
        let r = timeout(f.settle(), rx.recv())
            .await
            .expect("recv after an error must return at once");
        assert!(
            r.is_err(),
            "recv after an error returned {:?}",
            r.map(|m| m.map(|b| b.len()))
        );
    }
}

// r[verify link.recv.cancel]
/// A `recv` dropped while waiting loses nothing: the next `recv` gets it.
pub async fn cancelled_recv_loses_nothing<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let n = 200u32;
    let send = async {
        for i in 0..n {
            within("send", send_seq(&mut tx, i, 64))
                .await
                .expect("send");
            within("flush", tx.flush()).await.expect("flush");
            if i % 10 == 0 {
                sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    };
    let recv = async {
        // Cancel many receives (some while messages are in flight), and
        // collect what the surviving ones return.
        let mut got = Vec::new();
        let mut quiet = 0;
        while quiet < 3 && got.len() < n as usize {
            match timeout(std::time::Duration::from_micros(300), rx.recv()).await {
                Some(Ok(Some(m))) => {
                    got.push(check_pattern(&m).expect("corrupted"));
                    quiet = 0;
                }
                Some(r) => panic!("unexpected recv result {:?}", r.map(|m| m.map(|b| b.len()))),
                None => {
                    if let Some(r) = timeout(f.settle(), rx.recv()).await {
                        got.push(
                            check_pattern(&r.expect("recv").expect("message")).expect("corrupted"),
                        );
                        quiet = 0;
                    } else {
                        quiet += 1;
                    }
                }
            }
        }
        got
    };
    let ((), got) = futures::join!(send, recv);
    if caps.is_stream() {
        assert_eq!(
            got,
            (0..n).collect::<Vec<_>>(),
            "a cancelled recv lost or reordered messages"
        );
    } else {
        let distinct: BTreeSet<u32> = got.into_iter().collect();
        assert_delivered(
            f,
            distinct.len(),
            n as usize,
            "messages around cancelled recvs",
        );
    }
}

// r[verify link.backing.lifetime]
/// Received buffers stay intact across later receives and after both links
/// are dropped.
pub async fn backing_outlives_later_recvs_and_the_link<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let len = mid_len(&a).min(4096);
    let (mut tx, arx) = a.split();
    let (btx, mut rx) = b.split();
    let n = f.max_held().min(64) as u32;
    let send = async {
        send_seqs(&mut tx, n, |_| len).await;
    };
    let recv = async {
        if caps.is_stream() {
            let mut held = Vec::new();
            for _ in 0..n {
                held.push(recv_one(&mut rx).await);
            }
            held
        } else {
            recv_until_quiet(&mut rx, f.settle(), n as usize).await
        }
    };
    let ((), held) = futures::join!(send, recv);
    if !caps.is_stream() {
        let distinct: BTreeSet<Option<u32>> = held.iter().map(|m| check_pattern(m)).collect();
        assert_delivered(f, distinct.len(), n as usize, "held messages");
    }
    drop((tx, arx, btx, rx));
    for (i, m) in held.iter().enumerate() {
        let seq = check_pattern(m)
            .expect("a held Backing changed after later receives or the link's drop");
        if caps.is_stream() {
            assert_eq!(seq, i as u32);
        }
    }
}

// r[verify link.path.sample]
/// Where a sending half reports its path, the counters add up: delivered
/// bytes never decrease and, once the peer received messages, reach at
/// least their payload; the least round trip is no larger than the
/// smoothed one. A half that reports nothing reports nothing before and
/// after traffic alike.
pub async fn path_samples_are_consistent<F: LinkFactory>(f: &F) {
    let (a, b) = f.pair().await;
    let caps = a.caps();
    let len = mid_len(&b).min(4096);
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let before = tx.path_sample();
    let n = 20u32;
    let ((), got) = futures::join!(
        send_seqs(&mut tx, n, |_| len),
        expect_seqs(&mut rx, n, caps.is_stream(), f)
    );
    let payload = (got.len() * len) as u64;
    let Some(first) = before else {
        assert!(
            tx.path_sample().is_none(),
            "a half that had no path sample before traffic has one after"
        );
        return;
    };
    // The acknowledgement of the last bytes may trail their arrival.
    let mut last = first;
    for _ in 0..200 {
        let s = tx
            .path_sample()
            .expect("a half that reported its path stopped");
        assert!(
            s.delivered_bytes >= last.delivered_bytes,
            "delivered bytes went down: {} then {}",
            last.delivered_bytes,
            s.delivered_bytes
        );
        if !s.rtt.is_zero() && !s.min_rtt.is_zero() {
            assert!(s.min_rtt <= s.rtt, "min RTT above RTT: {s:?}");
        }
        last = s;
        if s.delivered_bytes >= first.delivered_bytes + payload {
            return;
        }
        sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!(
        "the peer received {payload} bytes but the path reports {} delivered",
        last.delivered_bytes - first.delivered_bytes
    );
}
