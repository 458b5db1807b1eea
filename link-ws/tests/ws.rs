#![cfg(not(target_arch = "wasm32"))]
//! WebSocket-specific behaviour of the native link, checked against a plain
//! tokio-tungstenite peer (or raw TCP where the test needs malformed input).

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use link_types::{Link, LinkError, LinkRx, LinkTx, LinkTxExt};
use link_ws::{ClientTls, TlsServer, WsConfig, WsError, WsLink, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Raw = tokio_tungstenite::WebSocketStream<TcpStream>;

const T: Duration = Duration::from_secs(10);

async fn server(config: WsConfig) -> WsServer {
    WsServer::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("bind")
}

/// A plain tungstenite client connected to `server`, and the server's link.
async fn raw_client(server: &mut WsServer, path: &str) -> (Raw, WsLink) {
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let url = format!("ws://{}{path}", server.local_addr());
    let (client, accepted) =
        tokio::join!(tokio_tungstenite::client_async(url, tcp), server.accept());
    (
        client.expect("raw connect").0,
        accepted.expect("accept").link,
    )
}

/// The close frame the raw peer receives next, skipping data.
async fn close_code(raw: &mut Raw) -> Option<u16> {
    while let Some(m) = tokio::time::timeout(T, raw.next())
        .await
        .expect("close frame in time")
    {
        match m {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

async fn recv_within<R: LinkRx>(rx: &mut R) -> Result<Option<link_types::Backing>, LinkError> {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("recv in time")
}

// r[verify ws.message.text]
/// A text message ends the link with a protocol error (sticky, counted) and
/// the peer sees close code 1003.
#[tokio::test]
async fn text_message_is_a_protocol_error() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    raw.send(Message::text("hello")).await.unwrap();
    match recv_within(&mut rx).await {
        Err(LinkError::Protocol(why)) => assert!(why.contains("text"), "{why}"),
        other => panic!(
            "expected a protocol error: {:?}",
            other.map(|m| m.map(|b| b.len()))
        ),
    }
    assert!(recv_within(&mut rx).await.is_err(), "sticky");
    assert_eq!(stats.snapshot().rx_text_rejected, 1);
    assert_eq!(close_code(&mut raw).await, Some(1003));
}

// r[verify ws.close.eof]
// r[verify ws.message.text]
/// Small messages that arrive together are returned in order, each once,
/// and an end that arrives with them (a normal close, or a refused text
/// message) comes after all of them.
#[tokio::test]
async fn an_end_that_arrives_with_messages_comes_after_them() {
    for end_with_text in [false, true] {
        let mut s = server(WsConfig::default()).await;
        let (mut raw, link) = raw_client(&mut s, "/").await;
        let stats = link.stats();
        let (_tx, mut rx) = link.split();
        const N: usize = 300;
        for i in 0..N {
            let msg = Message::binary(vec![(i % 251) as u8; 1 + i % 200]);
            raw.feed(msg).await.expect("feed");
        }
        if end_with_text {
            raw.feed(Message::text("no")).await.expect("feed text");
        } else {
            raw.feed(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await
            .expect("feed close");
        }
        raw.flush().await.expect("flush");
        // Let everything arrive, so that reads find many messages at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..N {
            let m = recv_within(&mut rx)
                .await
                .unwrap_or_else(|e| panic!("message {i}: {e:?}"))
                .unwrap_or_else(|| panic!("message {i}: end too early"));
            assert_eq!(
                &m[..],
                &vec![(i % 251) as u8; 1 + i % 200][..],
                "message {i}"
            );
        }
        for _ in 0..2 {
            match recv_within(&mut rx).await {
                Ok(None) if !end_with_text => {}
                Err(LinkError::Protocol(_)) if end_with_text => {}
                other => panic!(
                    "end (text: {end_with_text}): {:?}",
                    other.map(|m| m.map(|b| b.len()))
                ),
            }
        }
        assert_eq!(stats.snapshot().rx_messages, N as u64);
    }
}

/// With `accept_text`, text arrives with its kind.
#[tokio::test]
async fn text_is_delivered_when_accepted() {
    let mut s = server(WsConfig {
        accept_text: true,
        ..WsConfig::default()
    })
    .await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let (mut tx, mut rx) = link.split();
    raw.send(Message::text("héllo")).await.unwrap();
    raw.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let m = rx.recv_message().await.unwrap().unwrap();
    assert!(m.text);
    assert_eq!(&*m.data, "héllo".as_bytes());
    let m = rx.recv_message().await.unwrap().unwrap();
    assert!(!m.text);
    assert_eq!(&*m.data, &[1, 2, 3]);
    tx.send_text("back").await.unwrap();
    tx.flush().await.unwrap();
    assert_eq!(raw.next().await.unwrap().unwrap(), Message::text("back"));
}

// r[verify ws.message.oversize]
/// A frame header announcing more than the maximum payload is refused at
/// once, without waiting for (or buffering) the payload: the raw peer sends
/// only the header of a 1 GiB message and gets close code 1009.
#[tokio::test]
async fn oversize_message_is_refused_from_its_header() {
    let mut s = server(WsConfig {
        max_payload: 1 << 20,
        ..WsConfig::default()
    })
    .await;
    let (raw, link) = raw_client(&mut s, "/").await;
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    let mut tcp = raw.into_inner();
    // FIN + binary, masked, 64-bit length 2^30, mask key; no payload.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    match recv_within(&mut rx).await {
        Err(LinkError::Protocol(why)) => assert!(why.contains("maximum payload"), "{why}"),
        other => panic!(
            "expected a refusal: {:?}",
            other.map(|m| m.map(|b| b.len()))
        ),
    }
    assert_eq!(stats.snapshot().rx_oversize, 1);
    // The server's close frame: 0x88, length, then the code 1009.
    let mut buf = [0u8; 4];
    tokio::time::timeout(T, tcp.read_exact(&mut buf))
        .await
        .expect("close in time")
        .unwrap();
    assert_eq!(buf[0], 0x88);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1009);
}

/// The same limit holds for a message sent in fragments.
#[tokio::test]
async fn oversize_fragmented_message_is_refused() {
    let mut s = server(WsConfig {
        max_payload: 1000,
        ..WsConfig::default()
    })
    .await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let (_tx, mut rx) = link.split();
    raw.send(Message::binary(vec![0u8; 1000])).await.unwrap();
    raw.send(Message::binary(vec![0u8; 1001])).await.unwrap();
    assert_eq!(recv_within(&mut rx).await.unwrap().unwrap().len(), 1000);
    assert!(matches!(
        recv_within(&mut rx).await,
        Err(LinkError::Protocol(_))
    ));
    assert_eq!(close_code(&mut raw).await, Some(1009));
}

// r[verify ws.ping]
/// Pings are answered while the application waits in `recv`, and are not
/// messages.
#[tokio::test]
async fn pings_are_answered() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    let reader = tokio::spawn(async move {
        let m = rx.recv().await;
        (m.map(|m| m.map(|b| b.to_vec())), rx)
    });
    raw.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(T, raw.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    raw.send(Message::binary(vec![9])).await.unwrap();
    let (m, _rx) = reader.await.unwrap();
    assert_eq!(m.unwrap().unwrap(), vec![9]);
    assert_eq!(stats.snapshot().pings, 1);
}

// r[verify ws.close.eof]
// r[verify ws.close.abrupt]
/// Close code 1000 (or none) is end-of-stream; 1001 and a dropped TCP
/// connection are `PeerGone`; any other code is a protocol error naming it.
/// Each end is sticky: five more `recv`s return the same at once, and the
/// sending half fails from then on (`PeerGone` after a close; no
/// half-close in WebSocket).
#[tokio::test]
async fn close_codes_map_to_eof_or_errors() {
    for (code, want) in [
        (Some(1000u16), "eof"),
        (None, "eof"),
        (Some(1001), "gone"),
        (Some(4321), "protocol"),
        (Some(1011), "protocol"),
    ] {
        let mut s = server(WsConfig::default()).await;
        let (mut raw, link) = raw_client(&mut s, "/").await;
        let (mut tx, mut rx) = link.split();
        raw.send(Message::binary(vec![1])).await.unwrap();
        let frame = code.map(|c| CloseFrame {
            code: CloseCode::from(c),
            reason: "test".into(),
        });
        raw.close(frame).await.unwrap();
        assert_eq!(recv_within(&mut rx).await.unwrap().unwrap().len(), 1);
        let end = recv_within(&mut rx).await;
        match (want, &end) {
            ("eof", Ok(None)) | ("gone", Err(LinkError::PeerGone)) => {}
            ("protocol", Err(LinkError::Protocol(why))) => {
                assert!(why.contains(&code.unwrap().to_string()), "{why}")
            }
            _ => panic!("close {code:?}: got {:?}", end.map(|m| m.map(|b| b.len()))),
        }
        for _ in 0..5 {
            let again = tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("close {code:?}: recv after the end waited"));
            match (&end, &again) {
                (Ok(None), Ok(None)) => {}
                (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
                _ => panic!(
                    "close {code:?}: the end was {:?}, a later recv {:?}",
                    end.as_ref().map(|m| m.as_ref().map(|b| b.len())),
                    again.map(|m| m.map(|b| b.len()))
                ),
            }
        }
        if want == "eof" {
            match tokio::time::timeout(Duration::from_secs(5), tx.reserve()).await {
                Ok(Err(LinkError::PeerGone)) => {}
                Ok(Err(e)) => panic!("close {code:?}: reserve after the peer's close: {e:?}"),
                Ok(Ok(_)) => panic!("close {code:?}: reserve granted after the peer's close"),
                Err(_) => panic!("close {code:?}: reserve after the peer's close waited"),
            }
        }
    }
    // No close frame at all.
    let mut s = server(WsConfig::default()).await;
    let (raw, link) = raw_client(&mut s, "/").await;
    let (_tx, mut rx) = link.split();
    drop(raw);
    assert!(matches!(
        recv_within(&mut rx).await,
        Err(LinkError::PeerGone)
    ));
}

// r[verify ws.message.binary]
/// `close` sends code 1000 after every committed message; the peer's reply
/// ends our receiver too (no half-close in WebSocket).
#[tokio::test]
async fn close_sends_normal_closure_after_the_messages() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let (mut tx, mut rx) = link.split();
    for i in 0..100u8 {
        tx.send(&[i; 100]).await.unwrap();
    }
    tx.close().await.unwrap();
    for i in 0..100u8 {
        assert_eq!(
            raw.next().await.unwrap().unwrap(),
            Message::binary(vec![i; 100])
        );
    }
    assert_eq!(close_code(&mut raw).await, Some(1000));
    // tungstenite answered the close; our receiver sees the end.
    // The raw peer's automatic reply goes out with its next flush.
    raw.flush().await.unwrap();
    assert!(matches!(recv_within(&mut rx).await, Ok(None)));
}

// r[verify ws.drop]
/// Dropping only the sending half ends the connection as "going away":
/// the peer gets the messages, then close code 1001.
#[tokio::test]
async fn dropping_the_sender_alone_is_going_away() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let (mut tx, _rx) = link.split();
    tx.send(&[1, 2, 3]).await.unwrap();
    drop(tx);
    assert_eq!(
        raw.next().await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3])
    );
    assert_eq!(close_code(&mut raw).await, Some(1001));
}

// r[verify ws.drop]
/// Dropping only the receiving half also sends 1001; the sending half then
/// fails with `Closed`.
#[tokio::test]
async fn dropping_the_receiver_alone_ends_the_connection() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let (mut tx, rx) = link.split();
    drop(rx);
    assert_eq!(close_code(&mut raw).await, Some(1001));
    assert!(matches!(tx.reserve().await, Err(LinkError::Closed)));
}

// r[verify ws.drop]
// r[verify link.rx.drop]
/// A peer that only writes, never reads, still learns that the receiving
/// half was dropped: its writes fail with `PeerGone` instead of filling the
/// socket buffers and waiting forever. What had arrived unread is counted
/// as discarded.
#[tokio::test]
async fn a_peer_that_never_reads_learns_of_a_dropped_receiver() {
    let mut s = server(WsConfig::default()).await;
    let url = format!("ws://{}/", s.local_addr());
    let config = WsConfig::default();
    let (client, accepted) = tokio::join!(WsLink::connect(&url, &config), s.accept());
    let (mut tx, _unread) = client.expect("connect").split();
    let server_link = accepted.expect("accept").link;
    let stats = server_link.stats();
    let (_server_tx, server_rx) = server_link.split();
    let msg = vec![7u8; 64 << 10];
    // Some bytes arrive before the receiving half goes.
    for _ in 0..8 {
        tx.send(&msg).await.expect("send before the drop");
    }
    tx.flush().await.expect("flush before the drop");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(server_rx);
    let mut sent_after = 0u64;
    let end = tokio::time::timeout(T, async {
        loop {
            if let Err(e) = tx.send(&msg).await {
                return e;
            }
            if let Err(e) = tx.flush().await {
                return e;
            }
            sent_after += 1;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the writer was still waiting after {T:?} ({sent_after} messages after the drop)")
    });
    assert!(
        matches!(end, LinkError::PeerGone),
        "the writer's end was {end:?}, expected PeerGone"
    );
    assert!(
        stats.snapshot().rx_discarded_bytes >= 8 * (64 << 10),
        "discarded {} bytes",
        stats.snapshot().rx_discarded_bytes
    );
}

// r[verify ws.drop]
// r[verify link.rx.drop]
/// Small messages that arrived but were never returned by `recv` when the
/// receiving half is dropped (taken ahead in the link's batch, read ahead
/// by the framing layer, or still in the socket) are all counted as
/// discarded.
#[tokio::test]
async fn messages_read_ahead_count_as_discarded_when_the_receiver_goes() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    const N: usize = 100;
    const LEN: usize = 64;
    for i in 0..N {
        raw.feed(Message::binary(vec![i as u8; LEN]))
            .await
            .expect("feed");
    }
    raw.flush().await.expect("flush");
    // Let them all arrive, so that the first `recv` finds them together.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = recv_within(&mut rx).await.expect("recv").expect("message");
    assert_eq!(&first[..], &[0u8; LEN][..]);
    assert_eq!(stats.snapshot().rx_messages, 1);
    drop(rx);
    let discarded = stats.snapshot().rx_discarded_bytes;
    assert!(
        discarded >= ((N - 1) * LEN) as u64,
        "discarded {discarded} bytes, expected at least {} (the {} messages not returned)",
        (N - 1) * LEN,
        N - 1
    );
}

// r[verify ws.server]
/// The server accepts many connections at once and tells each link's
/// request path and peer address.
#[tokio::test]
async fn server_routes_by_path_and_peer() {
    let mut s = server(WsConfig::default()).await;
    let addr = s.local_addr();
    let clients: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let link =
                    WsLink::connect(&format!("ws://{addr}/room/{i}?x=1"), &WsConfig::default())
                        .await
                        .expect("connect");
                let (mut tx, mut rx) = link.split();
                tx.send(&[i as u8]).await.unwrap();
                tx.flush().await.unwrap();
                // Wait for the server's echo before going away.
                rx.recv().await.unwrap().unwrap().to_vec()
            })
        })
        .collect();
    for _ in 0..20 {
        let acc = tokio::time::timeout(T, s.accept()).await.unwrap().unwrap();
        assert!(acc.peer.ip().is_loopback());
        let (mut tx, mut rx) = acc.link.split();
        let m = rx.recv().await.unwrap().unwrap();
        assert_eq!(acc.path, format!("/room/{}?x=1", m[0]));
        tx.send(&m).await.unwrap();
        tx.flush().await.unwrap();
        // Keep the link until the client has read the echo.
        tokio::spawn(async move {
            let _ = rx.recv().await;
            drop(tx);
        });
    }
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.await.unwrap(), vec![i as u8]);
    }
    let counts = s.counts();
    assert_eq!(
        (counts.accepted, counts.handshakes_failed, counts.refused),
        (20, 0, 0)
    );
}

/// A client that is not a WebSocket client is counted as a failed handshake
/// and does not disturb the others.
#[tokio::test]
async fn bad_handshakes_are_counted_and_isolated() {
    let mut s = server(WsConfig {
        handshake_timeout: Duration::from_millis(500),
        ..WsConfig::default()
    })
    .await;
    let mut garbage = TcpStream::connect(s.local_addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // A silent client: times out.
    let _silent = TcpStream::connect(s.local_addr()).await.unwrap();
    let (_raw, _link) = raw_client(&mut s, "/ok").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = s.counts();
    assert_eq!((counts.accepted, counts.handshakes_failed), (1, 2));
}

/// A client refuses URLs it cannot use, with a clear error.
#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["http://127.0.0.1:1/", "not a url", "ws://"] {
        match WsLink::connect(url, &WsConfig::default()).await {
            Err(WsError::InvalidUrl(_)) => {}
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        WsLink::connect(&format!("ws://{closed}/"), &WsConfig::default()).await,
        Err(WsError::Io { .. })
    ));
}

fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

// r[verify ws.tls.server]
// r[verify ws.tls.client]
/// `wss://` with the certificate and key read from files; a client that
/// does not trust the certificate fails the handshake; unusable PEM is a
/// clear error.
#[tokio::test]
async fn tls_from_files_and_untrusted_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let tls = TlsServer::from_pem_files(&cert_path, &key_path).unwrap();
    let mut s = WsServer::bind_tls("127.0.0.1:0".parse().unwrap(), WsConfig::default(), tls)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/secure", s.local_addr().port());

    let trusted = ClientTls::from_ca_file(&cert_path).unwrap();
    let config = WsConfig::default();
    let (client, acc) = tokio::join!(
        WsLink::connect_with_tls(&url, &config, &trusted),
        s.accept()
    );
    let (mut tx, _crx) = client.unwrap().split();
    let (_stx, mut rx) = acc.unwrap().link.split();
    tx.send(b"over tls").await.unwrap();
    tx.flush().await.unwrap();
    assert_eq!(&*recv_within(&mut rx).await.unwrap().unwrap(), b"over tls");

    // Trusting another certificate: the handshake fails.
    let (other, _) = self_signed();
    let untrusted = ClientTls::from_ca_pem(other.as_bytes()).unwrap();
    match WsLink::connect_with_tls(&url, &WsConfig::default(), &untrusted).await {
        Err(WsError::Handshake(_)) => {}
        other => panic!("untrusted certificate accepted: {:?}", other.map(|_| ())),
    }
    // The system roots do not include a self-signed certificate either.
    if let Ok(system) = ClientTls::system_roots() {
        assert!(
            WsLink::connect_with_tls(&url, &WsConfig::default(), &system)
                .await
                .is_err()
        );
    }
    assert!(matches!(
        TlsServer::from_pem(b"junk", key.as_bytes()),
        Err(WsError::Tls(_))
    ));
    assert!(matches!(
        TlsServer::from_pem(cert.as_bytes(), b"junk"),
        Err(WsError::Tls(_))
    ));
    assert!(matches!(ClientTls::from_ca_pem(b""), Err(WsError::Tls(_))));
    assert!(matches!(
        TlsServer::from_pem_files(dir.path().join("missing"), &key_path),
        Err(WsError::Io { .. })
    ));
}

/// Bytes the server's link takes before `reserve` waits, towards a peer
/// that reads nothing.
async fn taken_before_wait(config: WsConfig) -> u64 {
    let mut s = server(config).await;
    let (raw, link) = raw_client(&mut s, "/").await;
    let (mut tx, _rx) = link.split();
    let msg = vec![1u8; 16 << 10];
    let mut sent = 0u64;
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(300), tx.reserve()).await {
        use link_types::{LinkTxPermit, WriteSlot};
        let mut slot = p.unwrap().alloc(msg.len()).unwrap();
        slot.as_mut_slice().copy_from_slice(&msg);
        slot.commit().unwrap();
        sent += msg.len() as u64;
        assert!(sent < 1 << 30, "1 GiB taken and reserve never waited");
    }
    drop(raw);
    sent
}

// r[verify ws.backpressure.unsent]
/// With `max_unsent`, a peer that stops reading pushes back within a small
/// bound, where the kernel's default send buffer takes megabytes first.
#[tokio::test]
async fn max_unsent_bounds_what_a_stalled_peer_holds() {
    let small = WsConfig {
        max_unsent: Some(16 << 10),
        write_buffer: 32 << 10,
        queue: 4,
        ..WsConfig::default()
    };
    let bounded = taken_before_wait(small.clone()).await;
    let unbounded = taken_before_wait(WsConfig {
        max_unsent: None,
        ..small
    })
    .await;
    eprintln!(
        "taken before reserve waited: {bounded} bytes with max_unsent 16 KiB, {unbounded} without"
    );
    assert!(bounded > 0);
    assert!(
        bounded * 4 <= unbounded,
        "max_unsent changed little: {bounded} vs {unbounded} bytes"
    );
    assert!(
        WsConfig {
            max_unsent: Some(0),
            ..WsConfig::default()
        }
        .validate()
        .is_err()
    );
}

// r[verify ws.backpressure.native]
/// `reserve` waits once the socket and the queue are full, and resumes when
/// the peer reads; the wait is counted.
#[tokio::test]
async fn reserve_waits_for_the_socket() {
    let mut s = server(WsConfig::default()).await;
    let (mut raw, link) = raw_client(&mut s, "/").await;
    let stats = link.stats();
    let (mut tx, _rx) = link.split();
    let msg = vec![1u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), tx.reserve()).await {
            Err(_) => break,
            Ok(p) => {
                use link_types::{LinkTxPermit, WriteSlot};
                let mut slot = p.unwrap().alloc(msg.len()).unwrap();
                slot.as_mut_slice().copy_from_slice(&msg);
                slot.commit().unwrap();
                sent += 1;
                assert!(sent < 16_384, "1 GiB sent and reserve never waited");
            }
        }
    }
    assert!(stats.snapshot().reserve_waits >= 1);
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while n < sent + 1 {
            match raw.next().await {
                Some(Ok(Message::Binary(_))) => n += 1,
                other => panic!("{other:?}"),
            }
        }
        n
    });
    tokio::time::timeout(T, tx.send(&msg))
        .await
        .expect("reserve resumed")
        .unwrap();
    tokio::time::timeout(T, tx.flush()).await.unwrap().unwrap();
    assert_eq!(reader.await.unwrap(), sent + 1);
}

// r[verify ws.server]
/// Connections nobody accepts are bounded: past `max_pending` a new one is
/// closed at once and counted; accepting makes room again.
#[tokio::test]
async fn pending_connections_are_bounded() {
    let mut s = server(WsConfig {
        max_pending: 3,
        ..WsConfig::default()
    })
    .await;
    let url = format!("ws://{}/", s.local_addr());
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            WsLink::connect(&url, &WsConfig::default())
                .await
                .expect("connect"),
        );
    }
    // The fourth is closed before its handshake.
    assert!(WsLink::connect(&url, &WsConfig::default()).await.is_err());
    assert_eq!(s.counts().refused, 1);
    let _first = s.accept().await.unwrap();
    clients.push(
        WsLink::connect(&url, &WsConfig::default())
            .await
            .expect("room again"),
    );
    assert_eq!(s.counts().accepted, 4);
}

/// Garbage after the handshake (random bytes, then the TCP connection
/// closes) never panics or hangs the receiver: it ends with an error, after
/// at most the messages the garbage happened to encode, which are counted.
#[tokio::test]
async fn garbage_on_the_wire_ends_in_an_error() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..64 {
        let mut s = server(WsConfig {
            max_payload: 64 << 10,
            ..WsConfig::default()
        })
        .await;
        let (raw, link) = raw_client(&mut s, "/").await;
        let stats = link.stats();
        let (_tx, mut rx) = link.split();
        let mut tcp = raw.into_inner();
        let mut junk = vec![0u8; 1 + round * 97 % 4096];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let _ = tcp.write_all(&junk).await;
        drop(tcp);
        let mut delivered = 0u64;
        let end = loop {
            match recv_within(&mut rx).await {
                Ok(Some(_)) => delivered += 1,
                other => break other,
            }
        };
        assert!(end.is_err() || matches!(end, Ok(None)), "round {round}");
        assert_eq!(stats.snapshot().rx_messages, delivered);
        // Sticky.
        assert!(matches!(recv_within(&mut rx).await, Err(_) | Ok(None)));
    }
}

// r[verify ws.path.tcp]
/// The sending half reads the kernel's counters: what a reading peer took
/// shows as delivered, with a measured round trip; towards a peer that
/// stopped reading, what waits shows as unsent or in flight.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_path_sample_comes_from_the_kernel() {
    let mut s = server(WsConfig {
        max_unsent: Some(16 << 10),
        ..WsConfig::default()
    })
    .await;
    let url = format!("ws://{}/", s.local_addr());
    let cfg = WsConfig::default();
    let (client, accepted) = tokio::join!(WsLink::connect(&url, &cfg), s.accept());
    let (mut tx, _rx) = accepted.unwrap().link.split();
    let (_ctx, mut crx) = client.unwrap().split();
    let start = tx.path_sample().expect("a sample on Linux");
    let msg = vec![7u8; 64 << 10];
    let send = async {
        for _ in 0..16 {
            tx.send(&msg).await.unwrap();
        }
        tx.flush().await.unwrap();
    };
    let recv = async {
        for _ in 0..16 {
            recv_within(&mut crx).await.unwrap().unwrap();
        }
    };
    tokio::join!(send, recv);
    let mut s1 = tx.path_sample().unwrap();
    for _ in 0..100 {
        if s1.delivered_bytes >= start.delivered_bytes + (16 << 16) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s1 = tx.path_sample().unwrap();
    }
    assert!(
        s1.delivered_bytes >= start.delivered_bytes + (16 << 16),
        "1 MiB received, {} bytes acknowledged",
        s1.delivered_bytes - start.delivered_bytes
    );
    assert!(!s1.rtt.is_zero() && s1.min_rtt <= s1.rtt, "{s1:?}");
    assert!(s1.delivery_rate > 0, "{s1:?}");
    // The peer stops reading: the backlog shows on the sending side.
    let mut taken = 0u64;
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), tx.send(&msg)).await {
        r.unwrap();
        taken += msg.len() as u64;
        assert!(taken < 1 << 30, "1 GiB taken by a peer that reads nothing");
    }
    let s2 = tx.path_sample().unwrap();
    assert!(
        s2.unsent_bytes + s2.in_flight_bytes > 0,
        "a stalled peer and nothing waiting: {s2:?}"
    );
    assert!(s2.delivered_bytes >= s1.delivered_bytes);
}
