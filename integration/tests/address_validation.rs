//! Address validation end to end (`session.handshake.validation`,
//! `.amplification`, `.retry`): the session's host on a real `UdpEndpoint`,
//! with a raw socket playing a client that never proves its address, and
//! real clients that do (directly and through a Retry).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use link_session::handshake::{HELLO_LEN, Hello, Retry, WELCOME_LEN, Welcome, hello_token};
use link_session::wire::{self, Kind, OUTER_LEN, RANDOM_LEN, VERSION};
use link_session::{Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, RetryGate};
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink};

const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn hello_datagram(random: [u8; RANDOM_LEN]) -> Vec<u8> {
    let h = Hello {
        min_version: VERSION,
        max_version: VERSION,
        random,
        encryption: false,
        max_frame: 16 << 20,
        max_message: 1472,
    };
    let mut m = vec![0; OUTER_LEN];
    wire::write_outer(&mut m, Kind::Hello, 0);
    m.extend_from_slice(&h.to_bytes());
    m
}

/// The first datagram (waited for up to 10 s: an event's deadline, not a
/// margin a loaded machine can miss), then every one that arrives within
/// `quiet` of the previous one.
fn drain(s: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if let Ok(n) = s.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    s.set_read_timeout(Some(quiet)).unwrap();
    while let Ok(n) = s.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

// r[verify session.handshake.amplification]
// r[verify session.handshake.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_address_gets_at_most_three_times_its_bytes() {
    let ep = UdpEndpoint::bind(lo(), EndpointConfig::default()).unwrap();
    let at = ep.local_addr();
    let host = tokio::spawn(async move {
        let link = ep.accept().await;
        let r = Host::accept(link, HostConfig::default()).await;
        (r.map(|(h, _ev)| h.stats()), ep.stats().snapshot())
    });
    let raw = UdpSocket::bind(lo()).unwrap();
    let hello = hello_datagram([4; RANDOM_LEN]);
    assert_eq!(hello.len(), OUTER_LEN + HELLO_LEN);
    raw.send_to(&hello, at).unwrap();
    // Unlimited, the host would resend the Welcome at 50, 150, 350, 750 ms.
    let got = drain(&raw, Duration::from_millis(1200));
    assert_eq!(got.len(), 1, "one Hello (53 bytes) buys one Welcome (109)");
    assert_eq!(got[0].len(), OUTER_LEN + WELCOME_LEN);
    assert_eq!(got[0][1], Kind::Welcome as u8);
    // A second Hello buys a second Welcome, at once.
    raw.send_to(&hello, at).unwrap();
    let again = drain(&raw, Duration::from_millis(600));
    assert_eq!(again.len(), 1);
    // A clear-text Finish that echoes the host's random proves the address.
    let w = Welcome::read(&got[0][OUTER_LEN..]).unwrap();
    let mut fin = vec![0; OUTER_LEN];
    wire::write_outer(&mut fin, Kind::Finish, 0);
    fin.extend_from_slice(&w.host_random);
    raw.send_to(&fin, at).unwrap();
    let (st, eps) = host.await.unwrap();
    let st = st.expect("the handshake completes");
    assert_eq!(st.address_validated, 1, "{st:?}");
    assert!(st.amplification_held >= 1, "{st:?}");
    assert_eq!(st.handshake_bytes_received, 2 * 53 + 42);
    assert_eq!(st.handshake_bytes_sent, 2 * 109);
    assert!(st.handshake_bytes_sent <= 3 * st.handshake_bytes_received);
    assert_eq!(eps.peers_validated, 1, "{eps:?}");
    assert!(
        eps.unvalidated_tx_bytes <= 3 * eps.unvalidated_rx_bytes,
        "{eps:?}"
    );
}

// r[verify session.handshake.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_without_the_echo_leaves_the_address_unvalidated() {
    let ep = UdpEndpoint::bind(lo(), EndpointConfig::default()).unwrap();
    let at = ep.local_addr();
    let host = tokio::spawn(async move {
        let link = ep.accept().await;
        let r = Host::accept(link, HostConfig::default()).await;
        (r.map(|(h, _ev)| h.stats()), ep.stats().snapshot())
    });
    let raw = UdpSocket::bind(lo()).unwrap();
    raw.send_to(&hello_datagram([5; RANDOM_LEN]), at).unwrap();
    assert_eq!(drain(&raw, Duration::from_millis(300)).len(), 1);
    // A blind spoofer's Finish (it never saw the Welcome); and, in the
    // clear, a loss report is no proof either: it buys a Welcome resend.
    let mut fb = vec![0; OUTER_LEN + wire::FEEDBACK_LEN];
    wire::write_outer(&mut fb, Kind::Feedback, 1);
    raw.send_to(&fb, at).unwrap();
    assert_eq!(drain(&raw, Duration::from_millis(300)).len(), 1);
    let mut fin = vec![0; OUTER_LEN];
    wire::write_outer(&mut fin, Kind::Finish, 0);
    fin.extend_from_slice(&[0xAB; RANDOM_LEN]);
    raw.send_to(&fin, at).unwrap();
    let (st, eps) = host.await.unwrap();
    let st = st.expect("the handshake completes");
    assert_eq!(st.address_validated, 0, "{st:?}");
    assert_eq!(eps.peers_validated, 0, "{eps:?}");
}

// r[verify session.handshake.validation]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_validate_their_address_clear_and_encrypted() {
    for psk in [None, Some(PSK.to_vec())] {
        let ep = UdpEndpoint::bind(lo(), EndpointConfig::default()).unwrap();
        let at = ep.local_addr();
        let hc = HostConfig {
            psk: psk.clone(),
            ..Default::default()
        };
        let cc = ClientConfig {
            psk: psk.clone(),
            ..Default::default()
        };
        let host = tokio::spawn(async move {
            let link = ep.accept().await;
            let (h, ev) = Host::accept(link, hc).await.unwrap();
            (h, ev, ep)
        });
        let link = UdpLink::connect(lo(), at, &UdpConfig::default()).unwrap();
        let (_c, _i) = Client::connect(link, cc).await.unwrap();
        let (h, _ev, ep) = host.await.unwrap();
        assert_eq!(h.stats().address_validated, 1, "psk {}", psk.is_some());
        let eps = ep.stats().snapshot();
        assert_eq!(eps.peers_validated, 1, "{eps:?}");
        assert_eq!(ep.unvalidated_count(), 0);
    }
}

// r[verify session.handshake.retry]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_a_retry_transparently_and_streams() {
    let cfg = EndpointConfig {
        retry_above: Some(0),
        ..EndpointConfig::default()
    };
    let gate = Arc::new(RetryGate::new().unwrap());
    let ep = UdpEndpoint::bind_with_gate(lo(), cfg, gate).unwrap();
    let at = ep.local_addr();
    // A Hello without a token gets a 63-byte Retry and leaves no state.
    let raw = UdpSocket::bind(lo()).unwrap();
    let hello = hello_datagram([6; RANDOM_LEN]);
    raw.send_to(&hello, at).unwrap();
    let got = drain(&raw, Duration::from_millis(300));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][1], Kind::Retry as u8);
    assert!(got[0].len() <= 3 * hello.len());
    let r = Retry::read(&got[0][OUTER_LEN..]).unwrap();
    assert_eq!(r.client_random, [6; RANDOM_LEN]);
    assert_eq!(ep.peer_count(), 0, "no state before proof");
    // A real client follows the Retry inside `connect` and streams.
    let host = tokio::spawn(async move {
        let link = ep.accept().await;
        let (mut h, _ev) = Host::accept(link, HostConfig::default()).await.unwrap();
        for i in 0..20u32 {
            h.send_frame(&vec![i as u8; 5000], i as u64, FrameFlags::NONE)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        h.close().await.unwrap();
        (h.stats(), ep)
    });
    let link = UdpLink::connect(lo(), at, &UdpConfig::default()).unwrap();
    let (mut c, _i) = Client::connect(link, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(c.stats().retries_followed, 1);
    let mut n = 0;
    while let Some(ev) = c.next_frame().await.unwrap() {
        if let ClientEvent::Frame(f) = ev {
            assert_eq!(f.index, n);
            assert_eq!(f.data(), &vec![n as u8; 5000][..]);
            n += 1;
        }
    }
    assert_eq!(n, 20, "every frame arrived");
    let (hs, ep) = host.await.unwrap();
    let eps = ep.stats().snapshot();
    assert_eq!(eps.retries_sent, 2, "{eps:?}");
    assert_eq!(eps.peers_admitted_validated, 1, "{eps:?}");
    assert_eq!(eps.unvalidated_evicted, 0);
    assert_eq!(hs.address_validated, 1);
}

// r[verify session.handshake.amplification]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_fits_the_budget_of_one_hello() {
    let ep = UdpEndpoint::bind(lo(), EndpointConfig::default()).unwrap();
    let at = ep.local_addr();
    let host = tokio::spawn(async move {
        let link = ep.accept().await;
        let cfg = HostConfig {
            psk: Some(PSK.to_vec()),
            ..Default::default()
        };
        Host::accept(link, cfg).await.map(|_| ())
    });
    // A clear-text Hello to an encrypting host: refused.
    let raw = UdpSocket::bind(lo()).unwrap();
    let hello = hello_datagram([7; RANDOM_LEN]);
    raw.send_to(&hello, at).unwrap();
    let got = drain(&raw, Duration::from_millis(300));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][1], Kind::Reject as u8);
    assert!(got[0].len() <= 3 * hello.len(), "{} bytes", got[0].len());
    let (reason, text) = link_session::handshake::read_reject(&got[0][OUTER_LEN..]).unwrap();
    assert_eq!(reason, link_session::RejectReason::Encryption);
    assert!(text.contains("encryption"), "{text}");
    assert!(matches!(
        host.await.unwrap(),
        Err(link_session::SessionError::Rejected { .. })
    ));
}

/// A Retry datagram for `random` carrying `token`.
fn retry_datagram(random: [u8; RANDOM_LEN], token: &[u8]) -> Vec<u8> {
    let mut m = vec![0; OUTER_LEN];
    wire::write_outer(&mut m, Kind::Retry, 0);
    m.extend_from_slice(
        &Retry {
            client_random: random,
            token: token.to_vec(),
        }
        .to_bytes(),
    );
    m
}

/// The next Hello from the client at `front`: its random and its token.
fn next_hello(front: &UdpSocket) -> ([u8; RANDOM_LEN], Option<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    let n = front.recv(&mut buf).expect("a Hello within 10 s");
    assert_eq!(
        buf[1],
        Kind::Hello as u8,
        "only Hellos before the host answers"
    );
    let body = &buf[OUTER_LEN..n];
    let random = Hello::read(body).expect("a well-formed Hello").random;
    (random, hello_token(body).map(<[u8]>::to_vec))
}

/// The Hellos after a Retry: resends by the client's timer repeat the
/// token it had (`before`); the first one with another token is the answer.
fn hello_after_retry(front: &UdpSocket, before: Option<&[u8]>) -> Option<Vec<u8>> {
    loop {
        let (_, token) = next_hello(front);
        if token.as_deref() != before {
            return token;
        }
    }
}

// r[verify session.handshake.retry]
/// The client follows at most three Retries, each at once with its token,
/// and drops a Retry that does not echo its random (both counted); then it
/// completes the handshake with the Hello it last sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_three_retries_at_most_and_only_those_echoing_it() {
    let ep = UdpEndpoint::bind(lo(), EndpointConfig::default()).unwrap();
    let host_at = ep.local_addr();
    let host = tokio::spawn(async move {
        let link = ep.accept().await;
        Host::accept(link, HostConfig::default()).await.map(|_| ())
    });
    // The test stands between the client and the host: it answers the
    // Hellos itself with Retries, then relays both ways.
    let front = UdpSocket::bind(lo()).unwrap();
    front
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let front_at = front.local_addr().unwrap();
    let relay = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (_, client_at) = front.peek_from(&mut buf).expect("first Hello");
        let (random, token) = next_hello(&front);
        assert_eq!(token, None, "the first Hello carries no token");
        // A Retry that does not echo the client's random is ignored: the
        // client's answer to the next one carries that one's token.
        let mut wrong = random;
        wrong[0] ^= 1;
        front
            .send_to(&retry_datagram(wrong, &[9; 8]), client_at)
            .unwrap();
        let mut last: Option<Vec<u8>> = None;
        for t in 1..=3u8 {
            front
                .send_to(&retry_datagram(random, &[t; 8]), client_at)
                .unwrap();
            let got = hello_after_retry(&front, last.as_deref());
            assert_eq!(got, Some(vec![t; 8]), "Retry {t} followed with its token");
            last = got;
        }
        // A fourth Retry is not followed: the resends keep the third token.
        front
            .send_to(&retry_datagram(random, &[4; 8]), client_at)
            .unwrap();
        for _ in 0..2 {
            let (_, token) = next_hello(&front);
            assert_eq!(token, Some(vec![3; 8]), "the fourth Retry was followed");
        }
        // Relay from now on, until both sides are quiet for a second.
        let back = UdpSocket::bind(lo()).unwrap();
        back.connect(host_at).unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut quiet = 0;
        while quiet < 200 {
            quiet += 1;
            if let Ok(n) = front.recv(&mut buf) {
                back.send(&buf[..n]).unwrap();
                quiet = 0;
            }
            if let Ok(n) = back.recv(&mut buf) {
                front.send_to(&buf[..n], client_at).unwrap();
                quiet = 0;
            }
        }
    });
    let link = UdpLink::connect(lo(), front_at, &UdpConfig::default()).unwrap();
    let (c, _i) = Client::connect(link, ClientConfig::default())
        .await
        .expect("the handshake completes after the Retries");
    let st = c.stats();
    assert_eq!(st.retries_followed, 3, "{st:?}");
    assert_eq!(
        st.unexpected_dropped, 2,
        "the non-echoing and the fourth Retry: {st:?}"
    );
    host.await.unwrap().expect("the host accepted the client");
    drop(c);
    relay.join().expect("the relay's checks");
}
