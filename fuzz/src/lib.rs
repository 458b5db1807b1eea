//! The harnesses behind the fuzz targets, shared by `fuzz_targets/*`, the
//! corpus generator and the regression tests (`tests/regressions.rs`).
//!
//! Each harness drives a real component through its public entry point:
//! a real `Client` or `Host` of `link-session` over a real in-memory link
//! (made lossy in its capabilities where the input says so, so that the
//! sharded path with reassembly and FEC runs), and `link-shm`'s own offer
//! and ring validation through its `fuzzing` module. The fuzzer plays the
//! other end. When the input asks for encryption, the harness runs a real
//! key agreement and seals the fuzzer's plaintext bodies, so the fuzzer
//! reaches the code behind authentication instead of only the tag check.
//!
//! Input format for the session harnesses: one mode byte, then messages,
//! each a little-endian `u16` length and that many bytes (a short last one
//! is taken as it is).

use std::time::Duration;

use futures::FutureExt;
use futures::executor::block_on;
use link_session::crypto::{Direction, Sealer, Secret};
use link_session::fec::FecScheme;
use link_session::handshake::{HELLO_LEN, Hello, Params, Welcome};
use link_session::wire::{self, Kind, OUTER_LEN, RANDOM_LEN, VERSION};
use link_session::{Client, ClientConfig, HostConfig, InputEvent};
use link_types::{
    FaultSpec, Link, LinkCaps, LinkRx, LinkTx, LinkTxPermit, MemoryConfig, WriteSlot, fault_pair,
    memory_pair,
};

/// The largest message of the harness links (above `wire::MIN_MESSAGE`).
pub const MAX_MESSAGE: usize = 1500;
/// The largest frame the harnesses agree to.
pub const MAX_FRAME: usize = 1 << 16;
/// The pre-shared key of encrypted runs.
pub const PSK: &[u8] = b"linkstream fuzzing key 0123456789";

/// Mode byte bits.
pub mod mode {
    /// The link declares itself lossy: shards, FEC, reassembly.
    pub const LOSSY: u8 = 1;
    /// AES-GCM with a key agreed in the handshake.
    pub const ENCRYPTED: u8 = 2;
    /// Host: adaptive parity. Client: Reed-Solomon over GF(2^16).
    pub const VARIANT: u8 = 4;
    /// Send a few input events (client) or frames (host) alongside.
    pub const TRAFFIC: u8 = 8;
}

/// Split the messages of an input (after the mode byte).
pub fn messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = u16::from_le_bytes([data[0], data[1]]) as usize;
        let rest = &data[2..];
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

/// Encode messages the way [`messages`] reads them.
pub fn encode(mode: u8, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for m in msgs {
        let n = m.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&m[..n]);
    }
    out
}

/// A connected pair of in-memory links, declaring themselves lossy (and
/// taking the sharded path) when `lossy` is set.
pub fn test_link_pair(lossy: bool) -> (impl Link, impl Link) {
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 256,
        max_payload: MAX_MESSAGE,
    });
    // A loss probability that never strikes in practice: the messages all
    // arrive, but both ends see a lossy link and take the sharded path.
    let spec = if lossy {
        FaultSpec::loss(f64::MIN_POSITIVE)
    } else {
        FaultSpec::none()
    };
    fault_pair(a, b, spec, spec, 7).expect("valid fault spec")
}

async fn send_raw<T: LinkTx>(tx: &mut T, msg: &[u8]) -> bool {
    let Ok(permit) = tx.reserve().await else {
        return false;
    };
    let Ok(mut slot) = permit.alloc(msg.len()) else {
        // Longer than the link carries: a link refuses it, nothing to test.
        return true;
    };
    slot.as_mut_slice().copy_from_slice(msg);
    slot.commit().is_ok()
}

/// Seal `msg` (outer header and plaintext body) the way a peer does; a
/// message the sealer cannot take (too short, handshake kind) goes as is.
fn seal(sealer: &mut Option<Sealer>, msg: &[u8]) -> Vec<u8> {
    let Some(s) = sealer else {
        return msg.to_vec();
    };
    let Ok(outer) = wire::read_outer(msg) else {
        return msg.to_vec();
    };
    if outer.kind.is_handshake() {
        return msg.to_vec();
    }
    let mut out = msg.to_vec();
    let (head, body) = out.split_at_mut(OUTER_LEN);
    let tag = s.seal(outer.pn, head, body);
    out.extend_from_slice(&tag);
    out
}

fn outer(kind: Kind, pn: u64, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; OUTER_LEN + body.len()];
    wire::write_outer(&mut m, kind, pn);
    m[OUTER_LEN..].copy_from_slice(body);
    m
}

async fn drain<R: LinkRx>(rx: &mut R) {
    while let Ok(Some(_)) = rx.recv().await {}
}

/// Short timeouts so that a run never waits long.
pub fn client_config(encrypted: bool) -> ClientConfig {
    ClientConfig {
        psk: encrypted.then(|| PSK.to_vec()),
        max_frame: MAX_FRAME,
        max_pending_bytes: 4 * MAX_FRAME,
        frame_timeout: Duration::from_millis(20),
        reorder_grace: Duration::from_millis(2),
        handshake_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        max_input_queue: 64,
        ..ClientConfig::default()
    }
}

/// Short timeouts so that a run never waits long.
pub fn host_config(encrypted: bool, adaptive: bool) -> HostConfig {
    HostConfig {
        psk: encrypted.then(|| PSK.to_vec()),
        shard_size: 256,
        max_frame: MAX_FRAME,
        adaptive_parity: adaptive,
        rekey_shift: 10,
        handshake_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..HostConfig::default()
    }
}

/// The Welcome parameters the client harness answers with.
pub fn welcome_params(hello: &Hello, lossy: bool, encrypted: bool, rs16: bool) -> Params {
    Params {
        version: VERSION,
        encryption: encrypted,
        stream: !lossy,
        fec: if rs16 {
            FecScheme::Rs16
        } else {
            FecScheme::Auto
        },
        auto_threshold: link_session::AUTO_RS16_ABOVE as u16,
        shard_size: 256,
        max_frame: MAX_FRAME as u32,
        max_message: hello.max_message.min(MAX_MESSAGE as u32),
        parity_pct: 20,
        min_parity: 1,
        rekey_shift: 10,
    }
}

/// The client's receive path: the fuzzer plays the host after a real
/// handshake. Every message goes to a real `Client`, whose `next_frame` runs
/// until the stream ends or fails; it must neither panic nor hang.
pub fn client(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let (lossy, encrypted) = (m & mode::LOSSY != 0, m & mode::ENCRYPTED != 0);
    let msgs = messages(rest);
    let (host_end, client_end) = test_link_pair(lossy);
    let (mut htx, mut hrx) = host_end.split();
    let peer = async {
        let Ok(Some(hello_msg)) = hrx.recv().await else {
            return;
        };
        let hello = Hello::read(&hello_msg.as_slice()[OUTER_LEN..]).expect("a real Hello");
        let mut host_random = [0u8; RANDOM_LEN];
        host_random[0] = m;
        let mut w = Welcome {
            client_random: hello.random,
            host_random,
            params: welcome_params(&hello, lossy, encrypted, m & mode::VARIANT != 0),
            confirm: [0; 16],
        };
        let mut sealer = None;
        if encrypted {
            let secret = Secret::derive(PSK, &hello.random, &host_random);
            w.confirm = secret.confirm(b"host", &w.signed_part());
            sealer = Some(Sealer::new(secret, Direction::HostToClient, 10));
        }
        send_raw(&mut htx, &outer(Kind::Welcome, 0, &w.to_bytes())).await;
        for msg in &msgs {
            let sealed = seal(&mut sealer, msg);
            if !send_raw(&mut htx, &sealed).await {
                break;
            }
            // Let the client read while the fuzzer writes.
            drain_ready(&mut hrx);
        }
        let _ = htx.close().await;
        drain(&mut hrx).await;
    };
    let run = async {
        let config = client_config(encrypted);
        let Ok((mut client, mut input)) = Client::connect(client_end, config).await else {
            return;
        };
        if m & mode::TRAFFIC != 0 {
            for i in 0..3 {
                if input
                    .send_input(InputEvent::MouseMove { dx: i, dy: -i })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        while let Ok(Some(_)) = client.next_frame().await {}
        drop(input);
        drop(client);
    };
    block_on(futures::future::join(peer, run));
}

fn drain_ready<R: LinkRx>(rx: &mut R) {
    while let Some(Ok(Some(_))) = rx.recv().now_or_never() {}
}

/// The host's receive path: the fuzzer plays the client after a real
/// handshake. Every message goes to a real `Host`, whose `next_event` runs
/// until the client's side ends or fails.
pub fn host(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let (lossy, encrypted) = (m & mode::LOSSY != 0, m & mode::ENCRYPTED != 0);
    let msgs = messages(rest);
    let (host_end, client_end) = test_link_pair(lossy);
    let caps = client_end.caps();
    let (mut ctx, mut crx) = client_end.split();
    let peer = async {
        let random = [m; RANDOM_LEN];
        let hello = client_hello(random, encrypted, caps);
        if !send_raw(&mut ctx, &outer(Kind::Hello, 0, &hello)).await {
            return;
        }
        let welcome = loop {
            match crx.recv().await {
                Ok(Some(msg)) => {
                    let b = msg.as_slice();
                    if b.len() > OUTER_LEN && b[1] == Kind::Welcome as u8 {
                        break Welcome::read(&b[OUTER_LEN..]).expect("a real Welcome");
                    }
                }
                _ => return,
            }
        };
        let mut sealer = encrypted.then(|| {
            let secret = Secret::derive(PSK, &random, &welcome.host_random);
            Sealer::new(secret, Direction::ClientToHost, welcome.params.rekey_shift)
        });
        for msg in &msgs {
            let sealed = seal(&mut sealer, msg);
            if !send_raw(&mut ctx, &sealed).await {
                break;
            }
            drain_ready(&mut crx);
        }
        let _ = ctx.close().await;
        drain(&mut crx).await;
    };
    let run = async {
        let config = host_config(encrypted, m & mode::VARIANT != 0);
        let Ok((mut host, mut events)) = link_session::Host::accept(host_end, config).await else {
            return;
        };
        if m & mode::TRAFFIC != 0 {
            let frame = [m; 700];
            for i in 0..2 {
                if host
                    .send_frame(&frame, i, link_session::FrameFlags::KEYFRAME)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        while let Ok(Some(_)) = events.next_event().await {}
        drop(host);
        drop(events);
    };
    block_on(futures::future::join(peer, run));
}

fn client_hello(random: [u8; RANDOM_LEN], encrypted: bool, caps: LinkCaps) -> Vec<u8> {
    Hello {
        min_version: VERSION,
        max_version: VERSION,
        random,
        encryption: encrypted,
        max_frame: MAX_FRAME as u32,
        max_message: caps.max_payload as u32,
    }
    .to_bytes()
}

/// Every handshake message: the decoders (with an encode/decode round trip
/// where one succeeds), then a real `Client::connect` that gets the
/// fuzzer's messages as the host's answers (mode bit 0x10 clear), or a real
/// `Host::accept` that gets them as the client's opening (bit set).
pub fn handshake(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    if let Ok(h) = Hello::read(rest) {
        let b = h.to_bytes();
        assert_eq!(Hello::read(&b).as_ref(), Ok(&h));
        // Byte for byte, except the encryption flag, which a Hello may
        // carry as any non-zero value (a Welcome only as 0 or 1).
        let flag = 2 + RANDOM_LEN;
        assert_eq!(&b[..flag], &rest[..flag]);
        assert_eq!(&b[flag + 1..], &rest[flag + 1..HELLO_LEN]);
        assert_eq!(b[flag] != 0, rest[flag] != 0);
    }
    if let Ok(w) = Welcome::read(rest) {
        assert_eq!(Welcome::read(&w.to_bytes()).as_ref(), Ok(&w));
    }
    let _ = link_session::handshake::read_reject(rest);
    if let Ok(r) = link_session::handshake::Retry::read(rest) {
        assert_eq!(
            link_session::handshake::Retry::read(&r.to_bytes()).as_ref(),
            Ok(&r)
        );
    }
    if let Some(t) = link_session::handshake::hello_token(rest) {
        assert!(!t.is_empty() && t.len() <= link_session::handshake::TOKEN_MAX);
    }
    {
        // The retry gate on arbitrary datagrams: no panic, a reply only to
        // a Hello and within three times its size.
        use link_types::{Admission, AdmissionGate};
        static GATE: std::sync::OnceLock<link_session::RetryGate> = std::sync::OnceLock::new();
        let gate = GATE.get_or_init(|| link_session::RetryGate::new().expect("random"));
        let from: std::net::SocketAddr = "198.18.0.1:1000".parse().expect("address");
        let mut reply = Vec::new();
        match gate.admit(from, rest, m & 1 != 0, &mut reply) {
            Admission::Reply => {
                assert!(reply.len() <= 3 * rest.len());
                assert_eq!(rest[1], Kind::Hello as u8);
            }
            Admission::AdmitValidated => panic!("a forged token was accepted"),
            Admission::Admit | Admission::Drop => assert!(reply.is_empty()),
        }
    }
    let (lossy, encrypted) = (m & mode::LOSSY != 0, m & mode::ENCRYPTED != 0);
    let msgs = messages(rest);
    let (host_end, client_end) = test_link_pair(lossy);
    if m & 0x10 == 0 {
        let (mut htx, mut hrx) = host_end.split();
        let peer = async {
            // Answer the client's Hello with the fuzzer's messages; the
            // mode byte's bit 0x20 echoes the client's random into any
            // Welcome, so that the checks after the random are reached.
            let Ok(Some(hello_msg)) = hrx.recv().await else {
                return;
            };
            let random: [u8; RANDOM_LEN] = hello_msg.as_slice()
                [OUTER_LEN + 2..OUTER_LEN + 2 + RANDOM_LEN]
                .try_into()
                .expect("a real Hello");
            for msg in &msgs {
                let mut msg = msg.to_vec();
                if m & 0x20 != 0
                    && msg.len() >= OUTER_LEN + 1 + RANDOM_LEN
                    && msg[1] == Kind::Welcome as u8
                {
                    msg[OUTER_LEN + 1..OUTER_LEN + 1 + RANDOM_LEN].copy_from_slice(&random);
                }
                // A Retry starts with the client's random.
                if m & 0x20 != 0
                    && msg.len() >= OUTER_LEN + RANDOM_LEN
                    && msg[1] == Kind::Retry as u8
                {
                    msg[OUTER_LEN..OUTER_LEN + RANDOM_LEN].copy_from_slice(&random);
                }
                if !send_raw(&mut htx, &msg).await {
                    break;
                }
            }
            let _ = htx.close().await;
            drain(&mut hrx).await;
        };
        let run = async {
            if let Ok((mut client, _input)) =
                Client::connect(client_end, client_config(encrypted)).await
            {
                while let Ok(Some(_)) = client.next_frame().await {}
            }
        };
        block_on(futures::future::join(peer, run));
    } else {
        let (mut ctx, mut crx) = client_end.split();
        let peer = async {
            for msg in &msgs {
                if !send_raw(&mut ctx, msg).await {
                    break;
                }
            }
            let _ = ctx.close().await;
            drain(&mut crx).await;
        };
        let run = async {
            let config = host_config(encrypted, false);
            if let Ok((_host, mut events)) = link_session::Host::accept(host_end, config).await {
                while let Ok(Some(_)) = events.next_event().await {}
            }
        };
        block_on(futures::future::join(peer, run));
    }
}

/// The wire headers: the outer header, the shard header and the frame
/// header decode without panicking, and what decodes encodes back to the
/// same bytes.
pub fn wire_headers(data: &[u8]) {
    if let Ok(o) = wire::read_outer(data) {
        let mut b = [0u8; OUTER_LEN];
        wire::write_outer(&mut b, o.kind, o.pn);
        assert_eq!(&b[..], &data[..OUTER_LEN]);
        assert_eq!(
            o.kind.is_handshake(),
            Kind::from_u8(data[1]).unwrap().is_handshake()
        );
    }
    let mut r = wire::Reader::new(data);
    if let Ok(h) = wire::ShardHeader::read(&mut r) {
        let mut b = [0u8; wire::SHARD_HEADER_LEN];
        h.write(&mut wire::Writer::new(&mut b));
        assert_eq!(&b[..], &data[..wire::SHARD_HEADER_LEN]);
        assert_eq!(r.remaining(), data.len() - wire::SHARD_HEADER_LEN);
    }
    let mut r = wire::Reader::new(data);
    if let Ok(h) = wire::FrameHeader::read(&mut r) {
        let mut b = [0u8; wire::FRAME_HEADER_LEN];
        h.write(&mut wire::Writer::new(&mut b));
        // Byte for byte, except the reserved byte (sent as 0, not read).
        assert_eq!(&b[..17], &data[..17]);
        assert_eq!(b[17], 0);
        assert_eq!(&b[18..], &data[18..wire::FRAME_HEADER_LEN]);
    }
}

/// The shared-memory offer: a segment whose header (and size) the fuzzer
/// writes must be refused with an error or accepted with a layout that fits
/// the segment; never read out of bounds.
pub fn shm_offer(data: &[u8]) {
    let _ = link_shm::fuzzing::open_segment(data);
}

/// The ring validation: a valid segment whose ring, descriptors and slot
/// states the fuzzer overwrites is read by a real receiving end; every
/// message it yields lies inside the segment, and a garbled ring ends in an
/// error, never a panic or a hang.
pub fn shm_ring(data: &[u8]) {
    link_shm::fuzzing::garbled_ring(data);
}

/// Sources of the `udp_endpoint` harness.
const UDP_SOURCES: usize = 6;

/// The `UdpEndpoint` demultiplexer, driven through real loopback sockets
/// (it has no other input: its receive loop reads the socket). Six source
/// sockets send datagrams that name their source and number; the fuzzer
/// chooses the endpoint's limits (`max_peers`, `peer_queue`,
/// `accept_queue`) and a sequence of sends, accepts, receives, dropped
/// links and `connect`s. After every step the harness waits until the
/// endpoint has read everything sent, and checks:
/// - a link only ever receives its own peer's datagrams, in order;
/// - never more peers than `max_peers`;
/// - every datagram is delivered or counted (refused, queue full, peer
///   gone, kernel drop): nothing vanishes.
pub fn udp_endpoint(data: &[u8]) {
    use link_udp::{EndpointConfig, UdpEndpoint, UdpLink, UdpRx, UdpTx};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
    if data.len() < 2 {
        return;
    }
    let config = EndpointConfig {
        max_peers: 1 + data[0] as usize % 6,
        peer_queue: 1 + data[1] as usize % 8,
        accept_queue: 1 + (data[1] >> 4) as usize % 4,
        idle_timeout: None,
        max_unvalidated: 1 + (data[0] >> 4) as usize % 4,
        handshake_rate: None,
        ..EndpointConfig::default()
    };
    let max_peers = config.max_peers;
    let max_unvalidated = config.max_unvalidated;
    rt.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let ep = UdpEndpoint::bind(any, config).expect("bind the endpoint");
        let to = ep.local_addr();
        let sources: Vec<UdpSocket> = (0..UDP_SOURCES)
            .map(|_| UdpSocket::bind(any).expect("bind a source"))
            .collect();
        let addrs: Vec<SocketAddr> = sources.iter().map(|s| s.local_addr().unwrap()).collect();
        let stats = ep.stats();
        // Links (both halves) with the index of their peer and the next
        // number expected from it.
        let mut links: Vec<(UdpTx, UdpRx, usize, u32)> = Vec::new();
        let index_of = |l: &UdpLink| {
            addrs
                .iter()
                .position(|a| *a == l.peer_addr())
                .expect("a link's peer is one of the sources")
        };
        let mut dropped_links = 0usize;
        let mut sent = 0u64;
        let mut delivered = 0u64;
        let mut seq = [0u32; UDP_SOURCES];
        let settle = |sent: u64| {
            let stats = stats.clone();
            async move {
                let until = Instant::now() + Duration::from_secs(5);
                loop {
                    let s = stats.snapshot();
                    if s.rx_datagrams + s.rx_kernel_drops + s.rx_oversized + s.rx_truncated
                        >= sent
                    {
                        return;
                    }
                    assert!(
                        Instant::now() < until,
                        "the endpoint did not read {sent} datagrams within 5 s: {s:?}"
                    );
                    tokio::task::yield_now().await;
                }
            }
        };
        /// Datagrams delivered; an evicted (unvalidated) peer's link ends
        /// with `PeerGone` after what it queued, and is marked ended.
        fn drain(link: &mut (UdpTx, UdpRx, usize, u32)) -> u64 {
            let (_, rx, idx, next) = link;
            let mut n = 0;
            while let Some(r) = rx.recv().now_or_never() {
                let m = match r {
                    Err(link_types::LinkError::PeerGone) => {
                        *next = u32::MAX;
                        break;
                    }
                    r => r.expect("a link of a live endpoint").expect("no end"),
                };
                assert!(m.len() >= 5, "a datagram shorter than sent");
                assert_eq!(m[0] as usize, *idx, "a link got another peer's datagram");
                let s = u32::from_le_bytes(m[1..5].try_into().unwrap());
                assert!(s >= *next, "datagram {s} of source {idx} after {next}: reordered");
                *next = s + 1;
                n += 1;
            }
            n
        }
        for &b in &data[2..] {
            let (op, arg) = (b >> 5, (b & 31) as usize);
            match op {
                0..=3 => {
                    let i = arg % UDP_SOURCES;
                    let mut d = vec![i as u8; 5 + (arg * 37 + op as usize * 101) % 600];
                    d[1..5].copy_from_slice(&seq[i].to_le_bytes());
                    seq[i] += 1;
                    sources[i].send_to(&d, to).expect("send on loopback");
                    sent += 1;
                    settle(sent).await;
                }
                4 => {
                    if let Some(l) = ep.accept().now_or_never() {
                        let idx = index_of(&l);
                        // A source whose peer was evicted comes back as a
                        // new link; the old one must have ended.
                        if let Some(k) = links.iter().position(|(_, _, j, _)| *j == idx) {
                            delivered += drain(&mut links[k]);
                            assert_eq!(links[k].3, u32::MAX, "a second link for a live source {idx}");
                            links.remove(k);
                        }
                        assert!(
                            !links.iter().any(|(_, _, j, _)| *j == idx),
                            "a second link for source {idx}"
                        );
                        let (tx, rx) = l.split();
                        if arg & 1 == 1 {
                            link_types::LinkTx::mark_validated(&tx);
                        }
                        links.push((tx, rx, idx, 0));
                    }
                }
                5 => {
                    for l in links.iter_mut() {
                        delivered += drain(l);
                    }
                }
                6 => {
                    if !links.is_empty() {
                        let k = arg % links.len();
                        let mut l = links.remove(k);
                        delivered += drain(&mut l);
                        dropped_links += 1;
                    }
                }
                _ => {
                    let i = arg % UDP_SOURCES;
                    if let Ok(l) = ep.connect(addrs[i]) {
                        assert_eq!(index_of(&l), i);
                        if let Some(k) = links.iter().position(|(_, _, j, _)| *j == i) {
                            delivered += drain(&mut links[k]);
                            assert_eq!(links[k].3, u32::MAX, "connect beside a live link {i}");
                            links.remove(k);
                        }
                        assert!(
                            !links.iter().any(|(_, _, j, _)| *j == i),
                            "connect made a second link for source {i}"
                        );
                        let (tx, rx) = l.split();
                        links.push((tx, rx, i, 0));
                    }
                }
            }
            assert!(
                ep.peer_count() - ep.unvalidated_count() <= max_peers,
                "more validated peers than max_peers"
            );
            assert!(
                ep.unvalidated_count() <= max_unvalidated,
                "more unvalidated peers than max_unvalidated"
            );
        }
        // Take every waiting peer and everything queued, then account.
        while let Some(l) = ep.accept().now_or_never() {
            let idx = index_of(&l);
            let (tx, rx) = l.split();
            links.push((tx, rx, idx, 0));
        }
        for l in links.iter_mut() {
            delivered += drain(l);
        }
        let s = stats.snapshot();
        assert_eq!(
            delivered
                + s.rx_peer_refused
                + s.rx_peer_queue_full
                + s.rx_peer_gone
                + s.rx_evicted
                + s.rx_rate_limited,
            s.rx_datagrams,
            "datagrams read but neither delivered nor counted ({dropped_links} links dropped): {s:?}"
        );
        assert_eq!(
            s.rx_datagrams + s.rx_kernel_drops + s.rx_oversized + s.rx_truncated,
            sent,
            "datagrams sent but neither read nor counted: {s:?}"
        );
    });
}
