//! Address validation on a `UdpEndpoint` (`spec/udp.md`): the unvalidated
//! table, the amplification limit, the per-source rate limit and the
//! admission gate, on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use link_tests::util::timeout;
use link_types::{Admission, AdmissionGate, Link, LinkError, LinkRx, LinkTx, LinkTxExt};
use link_udp::{EndpointConfig, UdpEndpoint};

fn v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn raw() -> UdpSocket {
    let s = UdpSocket::bind(v4()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn recv_count(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

// r[verify udp.endpoint.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unvalidated_sources_never_take_validated_slots_and_the_oldest_is_evicted() {
    let cfg = EndpointConfig {
        max_peers: 2,
        max_unvalidated: 4,
        accept_queue: 64,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let real: Vec<UdpSocket> = (0..2).map(|_| raw()).collect();
    let mut validated = Vec::new();
    for s in &real {
        s.send_to(b"hello", ep.local_addr()).unwrap();
        let l = timeout(Duration::from_secs(5), ep.accept())
            .await
            .expect("peer");
        let (tx, rx) = l.split();
        tx.mark_validated();
        validated.push((tx, rx));
    }
    assert_eq!(ep.stats().snapshot().peers_validated, 2);
    // Ten more sources: four fit the unvalidated table, six evict the oldest.
    let flood: Vec<UdpSocket> = (0..10).map(|_| raw()).collect();
    // Each is handled before the next is sent: "oldest" is well defined.
    for (n, s) in flood.iter().enumerate() {
        s.send_to(b"spoof", ep.local_addr()).unwrap();
        stats_until(&ep, |st| st.rx_datagrams == 3 + n as u64).await;
    }
    let st = ep.stats().snapshot();
    assert_eq!(st.unvalidated_evicted, 6, "{st:?}");
    assert_eq!(ep.unvalidated_count(), 4);
    assert_eq!(ep.peer_count(), 6);
    // The validated peers still work both ways.
    for (i, (tx, rx)) in validated.iter_mut().enumerate() {
        tx.send(b"to validated").await.unwrap();
        tx.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let n = real[i]
            .recv(&mut buf)
            .expect("reply reaches the validated peer");
        assert_eq!(&buf[..n], b"to validated");
        real[i].send_to(b"again", ep.local_addr()).unwrap();
        let m = timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("recv");
        assert_eq!(m.unwrap().unwrap().as_slice(), b"hello");
    }
    // The accept queue holds only the four survivors (the evicted left it),
    // and the first flooder's link, if any, ended with PeerGone.
    let mut accepted = 0;
    while let Some(l) = timeout(Duration::from_millis(100), ep.accept()).await {
        let (_tx, mut rx) = l.split();
        assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"spoof");
        accepted += 1;
    }
    assert_eq!(accepted, 4);
    // An evicted source that sends again is a new peer (and evicts another).
    flood[0].send_to(b"spoof", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("back");
    assert_eq!(l.peer_addr(), flood[0].local_addr().unwrap());
    assert_eq!(ep.stats().snapshot().unvalidated_evicted, 7);
}

// r[verify udp.endpoint.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_peer_link_ends_with_peer_gone() {
    let cfg = EndpointConfig {
        max_unvalidated: 1,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let a = raw();
    a.send_to(b"a", ep.local_addr()).unwrap();
    let la = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("a");
    let (_tx, mut rx) = la.split();
    assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"a");
    let b = raw();
    b.send_to(b"b", ep.local_addr()).unwrap();
    let end = timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("end");
    assert!(matches!(end, Err(LinkError::PeerGone)), "{end:?}");
    assert_eq!(ep.stats().snapshot().unvalidated_evicted, 1);
}

// r[verify udp.endpoint.amplification]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_an_unvalidated_peer_stay_within_three_times_what_it_sent() {
    let ep = UdpEndpoint::bind(v4(), EndpointConfig::default()).unwrap();
    let s = raw();
    s.send_to(&[7u8; 100], ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("peer");
    let (mut tx, _rx) = l.split();
    for _ in 0..10 {
        tx.send(&[1u8; 100]).await.unwrap();
    }
    tx.flush().await.unwrap();
    assert_eq!(recv_count(&s), 3, "3 × 100 bytes for 100 received");
    let st = ep.stats().snapshot();
    assert_eq!(st.tx_amplification_held, 7, "{st:?}");
    assert_eq!(st.unvalidated_tx_bytes, 300);
    assert_eq!(st.unvalidated_rx_bytes, 100);
    // More bytes from the peer buy more.
    s.send_to(&[7u8; 50], ep.local_addr()).unwrap();
    stats_until(&ep, |st| st.unvalidated_rx_bytes == 150).await;
    for _ in 0..3 {
        tx.send(&[1u8; 100]).await.unwrap();
    }
    tx.flush().await.unwrap();
    assert_eq!(
        recv_count(&s),
        1,
        "150 more bytes of budget: one more datagram"
    );
    // Validated: no limit.
    tx.mark_validated();
    for _ in 0..10 {
        tx.send(&[1u8; 100]).await.unwrap();
    }
    tx.flush().await.unwrap();
    assert_eq!(recv_count(&s), 10);
    assert_eq!(ep.stats().snapshot().unvalidated_tx_bytes, 400);
}

// r[verify udp.endpoint.rate]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_peers_are_rate_limited_per_source_address() {
    let cfg = EndpointConfig {
        handshake_rate: Some(1),
        handshake_burst: 3,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    // Ten source ports on one address: three get in.
    let socks: Vec<UdpSocket> = (0..10).map(|_| raw()).collect();
    for s in &socks {
        s.send_to(b"x", ep.local_addr()).unwrap();
    }
    stats_until(&ep, |st| st.rx_datagrams == 10).await;
    let st = ep.stats().snapshot();
    assert_eq!(ep.peer_count(), 3, "{st:?}");
    assert_eq!(st.rx_rate_limited, 7, "{st:?}");
    // Known peers are not limited.
    for _ in 0..5 {
        socks[0].send_to(b"y", ep.local_addr()).unwrap();
    }
    // Another address has its own bucket.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.send_to(b"z", ep.local_addr()).unwrap();
    stats_until(&ep, |st| st.rx_datagrams == 16).await;
    assert_eq!(ep.peer_count(), 4);
    assert_eq!(ep.stats().snapshot().rx_rate_limited, 7);
    // The bucket refills at the rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    socks[9].send_to(b"x", ep.local_addr()).unwrap();
    stats_until(&ep, |st| st.rx_datagrams == 17).await;
    assert_eq!(ep.peer_count(), 5);
}

/// A gate that demands a proof datagram `b"proof"`, answers others with
/// `b"retry"`, and counts its calls.
struct TestGate(AtomicUsize);

impl AdmissionGate for TestGate {
    fn admit(&self, _: SocketAddr, d: &[u8], demand: bool, reply: &mut Vec<u8>) -> Admission {
        self.0.fetch_add(1, Ordering::Relaxed);
        if d == b"proof" {
            Admission::AdmitValidated
        } else if d == b"drop" {
            Admission::Drop
        } else if demand {
            reply.extend_from_slice(if d == b"huge" { &[0u8; 64] } else { b"retry" });
            Admission::Reply
        } else {
            Admission::Admit
        }
    }
}

// r[verify udp.endpoint.retry]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_answers_new_sources_statelessly_under_load() {
    let cfg = EndpointConfig {
        retry_above: Some(1),
        ..EndpointConfig::default()
    };
    let gate = Arc::new(TestGate(AtomicUsize::new(0)));
    let ep = UdpEndpoint::bind_with_gate(v4(), cfg, gate.clone()).unwrap();
    // Not under load: admitted, unvalidated.
    let first = raw();
    first.send_to(b"hi", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("first");
    assert_eq!(ep.unvalidated_count(), 1);
    // Its link stays open (a closed one leaves the table: udp.endpoint.closed).
    let _first = l;
    // Under load (one unvalidated peer): a reply and no state.
    let second = raw();
    second.send_to(b"hi", ep.local_addr()).unwrap();
    let mut buf = [0u8; 64];
    let n = second.recv(&mut buf).expect("the gate's reply");
    assert_eq!(&buf[..n], b"retry");
    assert_eq!(ep.peer_count(), 1, "no state for the second source");
    // A reply beyond 3× the datagram is not sent; a dropped datagram
    // neither makes a peer.
    second.send_to(b"huge", ep.local_addr()).unwrap();
    second.send_to(b"drop", ep.local_addr()).unwrap();
    stats_until(&ep, |st| st.rx_gate_dropped == 2).await;
    assert_eq!(recv_count(&second), 0);
    // With proof: admitted, validated.
    second.send_to(b"proof", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("proven");
    assert_eq!(l.peer_addr(), second.local_addr().unwrap());
    assert_eq!(ep.unvalidated_count(), 1);
    let st = ep.stats().snapshot();
    assert_eq!(st.retries_sent, 1, "{st:?}");
    assert_eq!(st.rx_gate_dropped, 2, "{st:?}");
    assert_eq!(st.peers_admitted_validated, 1, "{st:?}");
    assert_eq!(st.unvalidated_tx_bytes, 5, "{st:?}");
    assert_eq!(gate.0.load(Ordering::Relaxed), 5);
    // Known peers never reach the gate.
    second.send_to(b"data", ep.local_addr()).unwrap();
    stats_until(&ep, |st| st.rx_datagrams == 6).await;
    assert_eq!(gate.0.load(Ordering::Relaxed), 5);
}

// r[verify udp.endpoint.validation]
/// Regression (found by the `udp_endpoint` fuzz target): evicting a peer
/// whose link was never accepted drops what it queued, and that must be
/// counted (`rx_evicted`), not lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_of_an_evicted_unaccepted_peer_are_counted() {
    let cfg = EndpointConfig {
        max_unvalidated: 1,
        accept_queue: 1,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let socks: Vec<UdpSocket> = (0..3).map(|_| raw()).collect();
    for (i, s) in socks.iter().enumerate() {
        s.send_to(b"one", ep.local_addr()).unwrap();
        s.send_to(b"two", ep.local_addr()).unwrap();
        stats_until(&ep, |st| st.rx_datagrams == 2 * (i as u64 + 1)).await;
    }
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("last");
    assert_eq!(l.peer_addr(), socks[2].local_addr().unwrap());
    let (_tx, mut rx) = l.split();
    for want in [&b"one"[..], b"two"] {
        assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), want);
    }
    let st = ep.stats().snapshot();
    assert_eq!(st.unvalidated_evicted, 2, "{st:?}");
    assert_eq!(st.rx_evicted, 4, "{st:?}");
    assert_eq!(st.rx_datagrams, 6);
}

// r[verify udp.endpoint.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unvalidated_peer_queues_little_until_validated() {
    let cfg = EndpointConfig {
        unvalidated_queue: 2,
        peer_queue: 100,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let s = raw();
    for _ in 0..5 {
        s.send_to(b"x", ep.local_addr()).unwrap();
    }
    stats_until(&ep, |st| st.rx_datagrams == 5).await;
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("peer");
    assert_eq!(ep.stats().snapshot().rx_peer_queue_full, 3);
    let (tx, mut rx) = l.split();
    for _ in 0..2 {
        rx.recv().await.unwrap().unwrap();
    }
    tx.mark_validated();
    for _ in 0..10 {
        s.send_to(b"y", ep.local_addr()).unwrap();
    }
    stats_until(&ep, |st| st.rx_datagrams == 15).await;
    for _ in 0..10 {
        assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"y");
    }
    assert_eq!(ep.stats().snapshot().rx_peer_queue_full, 3);
}

// r[verify udp.endpoint.closed]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_frees_its_slot_and_its_address_gets_in_again() {
    // One slot and no idle timeout: only closing the link can free it.
    let cfg = EndpointConfig {
        max_peers: 1,
        idle_timeout: None,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let a = raw();
    a.send_to(b"hello", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("a");
    let (tx, mut rx) = l.split();
    assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"hello");
    tx.mark_validated();
    assert_eq!(ep.peer_count(), 1);
    drop((tx, rx));
    // The table lets go of the peer within a second (polled for 5 s).
    let mut waited = 0;
    while ep.peer_count() > 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(ep.peer_count(), 0, "the closed peer still holds its slot");
    // The same address and port is a new peer, and takes the free slot.
    a.send_to(b"again", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("a again");
    assert_eq!(l.peer_addr(), a.local_addr().unwrap());
    let (tx, mut rx) = l.split();
    assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"again");
    tx.mark_validated();
    let st = ep.stats().snapshot();
    assert_eq!(st.peers_validated, 2, "{st:?}");
    assert_eq!(st.validation_refused, 0, "{st:?}");
    assert_eq!(st.peers_expired, 0, "closing is no expiry: {st:?}");
    // And it works both ways.
    let mut tx = tx;
    tx.send(b"reply").await.unwrap();
    tx.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let n = a.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"reply");
}

/// Poll the endpoint's stats until `done` holds, for at most 10 s (a
/// deadline for an event, not a fixed sleep: robust on a loaded machine).
async fn stats_until(ep: &UdpEndpoint, done: impl Fn(&link_udp::UdpStats) -> bool) {
    for _ in 0..1000 {
        if done(&ep.stats().snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached: {:?}", ep.stats().snapshot());
}

// r[verify udp.endpoint.limit]
/// A full accept queue refuses the next new peer (counted) even when
/// validated slots are free, and lets it in once `accept` made room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_accept_queue_refuses_the_next_new_peer_and_counts_it() {
    let cfg = EndpointConfig {
        max_peers: 10,
        accept_queue: 2,
        ..EndpointConfig::default()
    };
    let gate = Arc::new(TestGate(AtomicUsize::new(0)));
    let ep = UdpEndpoint::bind_with_gate(v4(), cfg, gate).unwrap();
    // Proven peers: validated at admission, so none is evicted to make room.
    let socks: Vec<UdpSocket> = (0..3).map(|_| raw()).collect();
    for s in &socks {
        s.send_to(b"proof", ep.local_addr()).unwrap();
    }
    stats_until(&ep, |st| st.rx_datagrams == 3).await;
    let st = ep.stats().snapshot();
    assert_eq!(st.rx_peer_refused, 1, "{st:?}");
    assert_eq!(st.peers_admitted_validated, 2, "{st:?}");
    assert_eq!(ep.peer_count(), 2, "no state for the refused peer");
    let mut got = Vec::new();
    for _ in 0..2 {
        let l = timeout(Duration::from_secs(5), ep.accept())
            .await
            .expect("queued peer");
        got.push(l.peer_addr());
    }
    // Which two got in depends on arrival order; the third did not.
    let refused: Vec<_> = socks
        .iter()
        .map(|s| s.local_addr().unwrap())
        .filter(|a| !got.contains(a))
        .collect();
    assert_eq!(refused.len(), 1, "accepted {got:?}");
    // With room in the queue the refused peer's resend gets in.
    let again = socks
        .iter()
        .find(|s| s.local_addr().unwrap() == refused[0])
        .unwrap();
    again.send_to(b"proof", ep.local_addr()).unwrap();
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("the refused peer, again");
    assert_eq!(l.peer_addr(), refused[0]);
    assert_eq!(ep.stats().snapshot().rx_peer_refused, 1);
}

// r[verify udp.endpoint.limit]
/// A validated peer's queue holds `peer_queue` datagrams; the rest are
/// dropped and counted, and the queued ones come out whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validated_peers_queue_is_bounded_and_its_overflow_counted() {
    let cfg = EndpointConfig {
        peer_queue: 4,
        unvalidated_queue: 1,
        ..EndpointConfig::default()
    };
    let gate = Arc::new(TestGate(AtomicUsize::new(0)));
    let ep = UdpEndpoint::bind_with_gate(v4(), cfg, gate).unwrap();
    let s = raw();
    s.send_to(b"proof", ep.local_addr()).unwrap();
    for i in 0..9u8 {
        s.send_to(&[b'0' + i], ep.local_addr()).unwrap();
    }
    stats_until(&ep, |st| st.rx_datagrams == 10).await;
    let st = ep.stats().snapshot();
    assert_eq!(st.rx_peer_queue_full, 6, "{st:?}");
    let l = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("peer");
    let (_tx, mut rx) = l.split();
    for want in [&b"proof"[..], b"0", b"1", b"2"] {
        assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), want);
    }
    // Reading made room again: the next datagram is queued, not dropped.
    s.send_to(b"late", ep.local_addr()).unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap().as_slice(), b"late");
    assert_eq!(ep.stats().snapshot().rx_peer_queue_full, 6);
}
