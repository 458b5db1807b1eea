//! The UDP link's own rules (`spec/udp.md`), on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use link_tests::util::{check_pattern, fill_pattern, pattern, recv_until_quiet, timeout};
use link_types::{Link, LinkError, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{EndpointConfig, MTU1500_V4, MTU1500_V6, UdpConfig, UdpEndpoint, UdpError, UdpLink};

const QUIET: Duration = Duration::from_millis(300);

fn v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A link bound on loopback, connected to `peer`.
fn link_to(peer: SocketAddr, config: &UdpConfig) -> UdpLink {
    UdpLink::connect(v4(), peer, config).expect("link")
}

/// A connected pair of links with the given configs.
fn pair(a: &UdpConfig, b: &UdpConfig) -> (UdpLink, UdpLink) {
    let sa = UdpSocket::bind(v4()).unwrap();
    let sb = UdpSocket::bind(v4()).unwrap();
    let (aa, ba) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    (
        UdpLink::from_std(sa, ba, a).unwrap(),
        UdpLink::from_std(sb, aa, b).unwrap(),
    )
}

async fn send_all<T: LinkTx>(tx: &mut T, sizes: &[usize]) {
    for (i, &len) in sizes.iter().enumerate() {
        let mut slot = tx.reserve().await.unwrap().alloc(len).unwrap();
        fill_pattern(i as u32, slot.as_mut_slice());
        slot.commit().unwrap();
    }
    tx.flush().await.unwrap();
}

fn raw_recv_all(sock: &UdpSocket) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(QUIET)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

// r[verify udp.datagram.model]
#[tokio::test]
async fn one_message_is_one_datagram_both_ways() {
    let raw = UdpSocket::bind(v4()).unwrap();
    let link = link_to(raw.local_addr().unwrap(), &UdpConfig::default());
    assert!(
        !link.caps().reliable && !link.caps().ordered,
        "UDP must declare itself lossy and unordered"
    );
    raw.connect(link.local_addr()).unwrap();
    let (mut tx, mut rx) = link.split();
    let sizes = [8, 1000, 1000, 1000, 9, 1472, 0, 100];
    send_all(&mut tx, &sizes).await;
    let got = tokio::task::spawn_blocking(move || (raw_recv_all(&raw), raw))
        .await
        .unwrap();
    let (datagrams, raw) = got;
    assert_eq!(
        datagrams.len(),
        sizes.len(),
        "each message must be exactly one datagram"
    );
    for (i, d) in datagrams.iter().enumerate() {
        assert_eq!(d, &pattern(i as u32, sizes[i]));
    }
    for (i, &len) in sizes.iter().enumerate() {
        raw.send(&pattern(i as u32, len)).unwrap();
    }
    let got = recv_until_quiet(&mut rx, QUIET, 100).await;
    assert_eq!(got.len(), sizes.len());
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m[..], &pattern(i as u32, sizes[i])[..]);
    }
}

// r[verify udp.datagram.max]
#[tokio::test]
async fn max_payload_defaults_to_a_1500_mtu_path_and_jumbo_is_opt_in() {
    let l4 = link_to("127.0.0.1:9".parse().unwrap(), &UdpConfig::default());
    assert_eq!(l4.caps().max_payload, MTU1500_V4);
    let l6 = UdpLink::connect(
        "[::1]:0".parse().unwrap(),
        "[::1]:9".parse().unwrap(),
        &UdpConfig::default(),
    )
    .unwrap();
    assert_eq!(l6.caps().max_payload, MTU1500_V6);
    let (mut tx, _rx) = l4.split();
    match tx.reserve().await.unwrap().alloc(MTU1500_V4 + 1) {
        Err(LinkError::TooLarge { len, max }) => {
            assert_eq!((len, max), (MTU1500_V4 + 1, MTU1500_V4))
        }
        other => panic!("alloc above the maximum: {:?}", other.map(|_| ())),
    }
    let jumbo = UdpConfig {
        max_payload: Some(9000),
        ..UdpConfig::default()
    };
    let (a, b) = pair(&jumbo, &jumbo);
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    send_all(&mut tx, &[9000, 9000]).await;
    let got = recv_until_quiet(&mut rx, QUIET, 2).await;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|m| m.len() == 9000 && check_pattern(m).is_some())
    );
    let bad = UdpConfig {
        max_payload: Some(70_000),
        ..UdpConfig::default()
    };
    assert!(matches!(
        UdpLink::connect(v4(), "127.0.0.1:9".parse().unwrap(), &bad),
        Err(UdpError::InvalidConfig(_))
    ));
}

// r[verify udp.send.batch]
// r[verify udp.send.ring]
#[tokio::test]
async fn datagrams_go_out_in_batches_and_only_on_flush_or_full_ring() {
    let plain = UdpConfig {
        gso: false,
        gro: false,
        send_ring: 64,
        ..UdpConfig::default()
    };
    let (a, b) = pair(&plain, &plain);
    let stats = a.stats();
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    // Ten commits: nothing leaves before flush.
    for i in 0..10 {
        let mut slot = tx.reserve().await.unwrap().alloc(200).unwrap();
        fill_pattern(i, slot.as_mut_slice());
        slot.commit().unwrap();
    }
    assert_eq!(
        stats.snapshot().tx_datagrams,
        0,
        "committed datagrams left before flush"
    );
    assert!(
        timeout(Duration::from_millis(100), rx.recv())
            .await
            .is_none()
    );
    tx.flush().await.unwrap();
    assert_eq!(stats.snapshot().tx_datagrams, 10);
    assert_eq!(
        stats.snapshot().tx_syscalls,
        1,
        "ten queued datagrams should take one sendmmsg"
    );
    // 640 more: the ring (64) fills, reserve transmits in batches of 64.
    let before = stats.snapshot();
    let sizes = vec![200; 640];
    send_all(&mut tx, &sizes).await;
    let after = stats.snapshot();
    assert_eq!(after.tx_datagrams - before.tx_datagrams, 640);
    assert!(
        after.tx_syscalls - before.tx_syscalls <= 12,
        "{} syscalls for 640 datagrams",
        after.tx_syscalls - before.tx_syscalls
    );
    let got = recv_until_quiet(&mut rx, QUIET, 1000).await;
    assert_eq!(got.len(), 650);
}

// r[verify udp.send.gso]
// r[verify udp.recv.gro]
#[tokio::test]
async fn equal_size_runs_use_gso_and_gro_splits_them_back() {
    let (a, b) = pair(&UdpConfig::default(), &UdpConfig::default());
    assert!(
        b.socket_info().gro,
        "GRO should be available on this kernel"
    );
    let (sa, sb) = (a.stats(), b.stats());
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    // Runs of 1000-byte datagrams with a shorter tail, as frame shards come.
    let mut sizes = vec![1000; 120];
    sizes.push(300);
    sizes.extend(vec![1200; 50]);
    send_all(&mut tx, &sizes).await;
    let s = sa.snapshot();
    assert!(s.tx_gso_sends > 0, "no GSO send: {s:?}");
    assert!(s.tx_syscalls < 10, "{s:?}");
    let got = recv_until_quiet(&mut rx, QUIET, 1000).await;
    assert_eq!(
        got.len(),
        sizes.len(),
        "every datagram must come back as its own message"
    );
    for m in &got {
        let seq = check_pattern(m).expect("intact") as usize;
        assert_eq!(m.len(), sizes[seq]);
    }
    assert!(
        sb.snapshot().rx_gro_buffers > 0,
        "GRO never coalesced on loopback: {:?}",
        sb.snapshot()
    );
    // A plain receiver (no GRO) gets the same datagrams one by one.
    let (a, b) = pair(
        &UdpConfig::default(),
        &UdpConfig {
            gro: false,
            ..UdpConfig::default()
        },
    );
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    send_all(&mut tx, &sizes).await;
    let got = recv_until_quiet(&mut rx, QUIET, 1000).await;
    assert_eq!(got.len(), sizes.len());
}

// r[verify udp.send.gso-fallback]
#[tokio::test]
async fn gso_refused_by_the_kernel_falls_back_without_losing_datagrams() {
    let (a, b) = pair(&UdpConfig::default(), &UdpConfig::default());
    // With UDP checksums off, the kernel refuses every UDP_SEGMENT send
    // with EINVAL: a real refusal to fall back from.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on the link's own socket with a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            a.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let stats = a.stats();
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    assert!(tx.gso_active());
    let sizes = vec![1000; 200];
    send_all(&mut tx, &sizes).await;
    assert!(
        !tx.gso_active(),
        "GSO still in use after the kernel refused it"
    );
    let s = stats.snapshot();
    assert_eq!(s.tx_gso_fallbacks, 1, "{s:?}");
    assert_eq!(s.tx_datagrams, 200);
    let got = recv_until_quiet(&mut rx, QUIET, 1000).await;
    assert_eq!(got.len(), 200, "datagrams were lost in the fallback");
}

// r[verify udp.send.transient]
#[tokio::test]
async fn connection_refused_is_counted_and_not_fatal() {
    // A port with nothing behind it.
    let gone = UdpSocket::bind(v4()).unwrap();
    let port = gone.local_addr().unwrap();
    drop(gone);
    let link = link_to(port, &UdpConfig::default());
    let stats = link.stats();
    let (mut tx, mut rx) = link.split();
    for _ in 0..5 {
        send_all(&mut tx, &[64]).await;
        // Let the ICMP port-unreachable come back; the receiver sees it too.
        let _ = timeout(Duration::from_millis(50), rx.recv()).await;
    }
    let s = stats.snapshot();
    assert!(
        s.tx_transient_errors + s.rx_transient_errors >= 1,
        "ECONNREFUSED never surfaced: {s:?}"
    );
    // The link still works once someone listens there.
    let back = UdpSocket::bind(port).unwrap();
    send_all(&mut tx, &[64, 64]).await;
    let got = tokio::task::spawn_blocking(move || raw_recv_all(&back))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "the link did not survive ECONNREFUSED");
}

// r[verify udp.recv.drops]
#[tokio::test]
async fn oversized_and_truncated_datagrams_are_dropped_and_counted() {
    for gro in [true, false] {
        let cfg = UdpConfig {
            gro,
            ..UdpConfig::default()
        };
        let raw = UdpSocket::bind(v4()).unwrap();
        let link = link_to(raw.local_addr().unwrap(), &cfg);
        raw.connect(link.local_addr()).unwrap();
        let stats = link.stats();
        let (_tx, mut rx) = link.split();
        raw.send(&pattern(1, MTU1500_V4 + 1)).unwrap();
        raw.send(&pattern(2, 3000)).unwrap();
        raw.send(&pattern(3, 100)).unwrap();
        let got = recv_until_quiet(&mut rx, QUIET, 10).await;
        assert_eq!(
            got.len(),
            1,
            "gro={gro}: only the valid datagram may be delivered"
        );
        assert_eq!(check_pattern(&got[0]), Some(3));
        let s = stats.snapshot();
        assert_eq!(s.rx_oversized + s.rx_truncated, 2, "gro={gro}: {s:?}");
        if !gro {
            // The 3000-byte datagram did not fit the max+1 buffer.
            assert_eq!(s.rx_truncated, 1, "{s:?}");
        }
    }
}

// r[verify udp.recv.drops]
#[tokio::test]
async fn kernel_receive_queue_overflows_are_counted() {
    let cfg = UdpConfig {
        recv_buffer: 1,
        gro: false,
        ..UdpConfig::default()
    };
    let raw = UdpSocket::bind(v4()).unwrap();
    let link = link_to(raw.local_addr().unwrap(), &cfg);
    raw.connect(link.local_addr()).unwrap();
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    let sent = 2000u64;
    for i in 0..sent {
        let _ = raw.send(&pattern(i as u32, 1000));
    }
    let mut got = recv_until_quiet(&mut rx, QUIET, usize::MAX).await.len() as u64;
    // The drop counter rides on the next datagram queued after the drops.
    raw.send(&pattern(0, 10)).unwrap();
    got += recv_until_quiet(&mut rx, QUIET, usize::MAX).await.len() as u64;
    let s = stats.snapshot();
    assert!(
        s.rx_kernel_drops > 0,
        "a tiny buffer flooded with {sent} datagrams dropped none? {s:?}"
    );
    assert_eq!(
        got + s.rx_kernel_drops,
        sent + 1,
        "received + counted drops must add up: {s:?}"
    );
}

// r[verify udp.socket.buffers]
#[tokio::test]
async fn socket_buffers_are_requested_and_what_was_granted_is_reported() {
    let link = link_to("127.0.0.1:9".parse().unwrap(), &UdpConfig::default());
    let info = link.socket_info();
    // net.core.rmem_max/wmem_max allow 4 MiB here; Linux reports double.
    assert!(info.recv_buffer >= 4 << 20, "{info:?}");
    assert!(info.send_buffer >= 4 << 20, "{info:?}");
    let greedy = UdpConfig {
        recv_buffer: 1 << 30,
        ..UdpConfig::default()
    };
    let info = link_to("127.0.0.1:9".parse().unwrap(), &greedy).socket_info();
    assert!(
        info.recv_buffer < 1 << 30,
        "the kernel cap must show in what is reported: {info:?}"
    );
}

// r[verify udp.socket.tos]
#[tokio::test]
async fn dscp_marking_is_applied() {
    let ef = UdpConfig {
        tos: Some(0xB8),
        ..UdpConfig::default()
    };
    let link = link_to("127.0.0.1:9".parse().unwrap(), &ef);
    let tos = socket2::SockRef::from(&link).tos_v4().unwrap();
    assert_eq!(tos, 0xB8);
    let l6 = UdpLink::connect("[::1]:0".parse().unwrap(), "[::1]:9".parse().unwrap(), &ef).unwrap();
    assert_eq!(socket2::SockRef::from(&l6).tclass_v6().unwrap(), 0xB8);
}

// r[verify udp.endpoint.demux]
#[tokio::test]
async fn endpoint_demultiplexes_peers_and_replies_reach_the_right_one() {
    let ep = UdpEndpoint::bind(v4(), EndpointConfig::default()).unwrap();
    let mut clients: Vec<_> = (0..3)
        .map(|_| link_to(ep.local_addr(), &UdpConfig::default()).split())
        .collect();
    for (id, (tx, _)) in clients.iter_mut().enumerate() {
        for k in 0..5u32 {
            let mut slot = tx.reserve().await.unwrap().alloc(16).unwrap();
            fill_pattern(id as u32 * 100 + k, slot.as_mut_slice());
            slot.commit().unwrap();
        }
        tx.flush().await.unwrap();
    }
    let mut served = Vec::new();
    for _ in 0..3 {
        let link = timeout(Duration::from_secs(5), ep.accept())
            .await
            .expect("a new peer");
        served.push(link);
    }
    assert_eq!(ep.peer_count(), 3);
    for link in served {
        let peer = link.peer_addr();
        let (mut tx, mut rx) = link.split();
        let got = recv_until_quiet(&mut rx, QUIET, 10).await;
        assert_eq!(got.len(), 5);
        let owner = check_pattern(&got[0]).unwrap() / 100;
        assert!(
            got.iter().all(|m| check_pattern(m).unwrap() / 100 == owner),
            "datagrams of two peers mixed"
        );
        // Reply: it must reach exactly that client.
        let mut slot = tx.reserve().await.unwrap().alloc(16).unwrap();
        fill_pattern(owner + 7000, slot.as_mut_slice());
        slot.commit().unwrap();
        tx.flush().await.unwrap();
        let (_, crx) = &mut clients[owner as usize];
        let reply = recv_until_quiet(crx, QUIET, 1).await;
        assert_eq!(reply.len(), 1, "reply to {peer} went missing");
        assert_eq!(check_pattern(&reply[0]), Some(owner + 7000));
    }
}

// r[verify udp.endpoint.limit]
#[tokio::test]
async fn endpoint_refuses_peers_beyond_the_limit_and_counts_them() {
    let cfg = EndpointConfig {
        max_peers: 2,
        accept_queue: 2,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let mut clients: Vec<_> = (0..3)
        .map(|_| link_to(ep.local_addr(), &UdpConfig::default()).split())
        .collect();
    // Two peers fill the accept queue; the third finds it full of
    // validated peers and is refused.
    let mut links = Vec::new();
    for (tx, _) in clients.iter_mut().take(2) {
        send_all(tx, &[32, 32]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("first peer");
    let b = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("second peer");
    for l in [a, b] {
        let (tx, rx) = l.split();
        tx.mark_validated();
        links.push((tx, rx));
    }
    assert_eq!(ep.stats().snapshot().peers_validated, 2);
    assert_eq!(ep.unvalidated_count(), 0);
    // Both validated slots are taken: connect fails, and a validation
    // beyond the limit is refused.
    assert!(matches!(
        ep.connect("127.0.0.1:9".parse().unwrap()),
        Err(UdpError::PeerLimit(2))
    ));
    send_all(&mut clients[2].0, &[32]).await;
    let c = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("third peer, unvalidated");
    let (ctx, _crx) = c.split();
    ctx.mark_validated();
    let st = ep.stats().snapshot();
    assert_eq!(st.validation_refused, 1, "{st:?}");
    assert_eq!(st.peers_validated, 2, "{st:?}");
    assert_eq!(ep.unvalidated_count(), 1);
}

// r[verify udp.endpoint.idle]
#[tokio::test]
async fn idle_peers_are_forgotten_and_come_back_as_new_links() {
    let cfg = EndpointConfig {
        idle_timeout: Some(Duration::from_millis(150)),
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(v4(), cfg).unwrap();
    let (mut ctx, _crx) = link_to(ep.local_addr(), &UdpConfig::default()).split();
    send_all(&mut ctx, &[16]).await;
    let (_tx, mut rx) = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("peer")
        .split();
    assert!(rx.recv().await.unwrap().is_some());
    // Silence past the timeout ends the link with PeerGone, stickily.
    let end = timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("idle peer must end");
    assert!(
        matches!(end, Err(LinkError::PeerGone)),
        "{:?}",
        end.map(|m| m.map(|b| b.len()))
    );
    assert!(rx.recv().await.is_err());
    assert_eq!(ep.stats().snapshot().peers_expired, 1);
    assert_eq!(ep.peer_count(), 0);
    send_all(&mut ctx, &[16]).await;
    let again = timeout(Duration::from_secs(5), ep.accept())
        .await
        .expect("the peer comes back as a new link");
    let (_t, mut r) = again.split();
    assert!(r.recv().await.unwrap().is_some());
}

#[tokio::test]
async fn setup_errors_are_clear() {
    let err = std::thread::spawn(|| {
        UdpLink::connect(v4(), "127.0.0.1:9".parse().unwrap(), &UdpConfig::default()).err()
    })
    .join()
    .unwrap()
    .expect("outside a runtime");
    assert!(matches!(err, UdpError::NoRuntime), "{err}");
    let mixed = UdpLink::connect(v4(), "[::1]:9".parse().unwrap(), &UdpConfig::default())
        .err()
        .unwrap();
    assert!(mixed.to_string().contains("address famil"), "{mixed}");
    let ep = UdpEndpoint::bind(v4(), EndpointConfig::default()).unwrap();
    let _l = ep.connect("127.0.0.1:9".parse().unwrap()).unwrap();
    assert!(matches!(
        ep.connect("127.0.0.1:9".parse().unwrap()),
        Err(UdpError::PeerExists(_))
    ));
}

// r[verify udp.recv.ring]
#[tokio::test]
async fn holding_datagrams_of_every_slab_grows_the_ring_and_counts_it() {
    let cfg = UdpConfig {
        gro: false,
        recv_batch: 16,
        ..UdpConfig::default()
    };
    let (a, b) = pair(&cfg, &cfg);
    let stats = b.stats();
    let ((mut tx, _), (_, mut rx)) = (a.split(), b.split());
    // Hold every datagram: each batch pins its slab, so the ring must grow
    // past its initial slabs instead of stalling or overwriting held bytes.
    let mut held = Vec::new();
    for round in 0..8u32 {
        let sizes = [1200; 16];
        for (i, &len) in sizes.iter().enumerate() {
            let mut slot = tx.reserve().await.unwrap().alloc(len).unwrap();
            fill_pattern(round * 16 + i as u32, slot.as_mut_slice());
            slot.commit().unwrap();
        }
        tx.flush().await.unwrap();
        held.extend(recv_until_quiet(&mut rx, QUIET, 16).await);
    }
    assert_eq!(held.len(), 128);
    let mut seqs: Vec<u32> = held
        .iter()
        .map(|m| check_pattern(m).expect("a held datagram was overwritten"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..128).collect::<Vec<_>>());
    assert!(
        stats.snapshot().rx_buffer_growth > 0,
        "{:?}",
        stats.snapshot()
    );
}

// r[verify udp.endpoint.lifetime]
#[tokio::test]
async fn endpoint_outlives_its_handle_and_closes_with_its_last_link() {
    let ep = UdpEndpoint::bind(v4(), EndpointConfig::default()).unwrap();
    let addr = ep.local_addr();
    let (mut ctx, mut crx) = link_to(addr, &UdpConfig::default()).split();
    let (mut tx, mut rx) = ep
        .connect(ctx.local_addr().expect("the sender's local address"))
        .unwrap()
        .split();
    // A second client appears but is never accepted.
    let (mut stray, _srx) = link_to(addr, &UdpConfig::default()).split();
    send_all(&mut stray, &[8]).await;
    drop(ep);
    // The link still works both ways without the endpoint handle.
    send_all(&mut ctx, &[32]).await;
    assert_eq!(
        recv_until_quiet(&mut rx, QUIET, 1).await.len(),
        1,
        "endpoint link stopped receiving"
    );
    send_all(&mut tx, &[32]).await;
    assert_eq!(
        recv_until_quiet(&mut crx, QUIET, 1).await.len(),
        1,
        "endpoint link stopped sending"
    );
    // Last link gone: the socket must close, so the port can be bound again.
    drop((tx, rx));
    let mut rebound = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(s) = UdpSocket::bind(addr) {
            rebound = Some(s);
            break;
        }
    }
    assert!(
        rebound.is_some(),
        "the endpoint's socket stayed open after its last link was dropped"
    );
}
