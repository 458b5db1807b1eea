//! The session over the real links: UDP on loopback (with injected loss and
//! encryption), WebSocket on loopback, shared memory. (Shared memory across
//! two processes runs in `linkstream demo`, tested in `cli/tests`.)

use std::net::SocketAddr;

use link_integration::session::*;
use link_session::{
    Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent, InputEvent,
};
use link_types::{FaultSpec, fault_pair};
use link_udp::{UdpConfig, UdpLink};

const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

fn udp_pair() -> (UdpLink, UdpLink) {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = std::net::UdpSocket::bind(lo).unwrap();
    let b = std::net::UdpSocket::bind(lo).unwrap();
    let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let cfg = UdpConfig::default();
    (
        UdpLink::from_std(a, pb, &cfg).unwrap(),
        UdpLink::from_std(b, pa, &cfg).unwrap(),
    )
}

fn enc() -> (HostConfig, ClientConfig) {
    (
        HostConfig {
            psk: Some(PSK.to_vec()),
            ..Default::default()
        },
        ClientConfig {
            psk: Some(PSK.to_vec()),
            ..Default::default()
        },
    )
}

// r[verify session.links]
// r[verify session.close]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_loopback_with_loss_and_encryption() {
    for loss in [0.0, 0.05] {
        let (a, b) = udp_pair();
        let spec = FaultSpec::loss(loss);
        let (a, b) = fault_pair(a, b, spec, spec, 77).unwrap();
        let (h, c) = enc();
        let o = stream_paced(a, b, h, c, 300, 30_000, std::time::Duration::from_millis(2)).await;
        let cs = o.client.as_ref().unwrap();
        eprintln!("udp loss {loss}: {o:?}");
        assert_eq!(o.corrupt, 0);
        assert_eq!(o.delivered + o.lost, 300);
        assert!(cs.data_shards_received > 0, "frames went as FEC shards");
        assert!(o.delivered >= 294, "loss {loss}: {} of 300", o.delivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_input_exactly_once_in_order_under_loss() {
    let (a, b) = udp_pair();
    let spec = FaultSpec::loss(0.2);
    let (a, b) = fault_pair(a, b, spec, spec, 5).unwrap();
    let (hc, cc) = enc();
    let n = 500u32;
    let host = async move {
        let (mut host, mut ev) = Host::accept(a, hc).await.unwrap();
        let mut got = 0u32;
        while got < n {
            match ev.next_event().await.unwrap() {
                Some(HostEvent::Input(InputEvent::MouseMove { dx, .. })) => {
                    assert_eq!(dx as u32, got, "in order, exactly once");
                    got += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        host.close().await.unwrap();
        got
    };
    let client = async move {
        let (mut frames, mut input) = Client::connect(b, cc).await.unwrap();
        let pump = async move { while let Ok(Some(_)) = frames.next_frame().await {} };
        let send = async move {
            for i in 0..n {
                input
                    .send_input(InputEvent::MouseMove {
                        dx: i as i32,
                        dy: 0,
                    })
                    .await
                    .unwrap();
            }
            input.stats()
        };
        futures::join!(pump, send).1
    };
    let (got, cs) = futures::join!(host, client);
    assert_eq!(got, n);
    assert!(cs.input_retransmits > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_loopback_frames_zero_copy() {
    use link_ws::{WsConfig, WsLink, WsServer};
    let mut server = WsServer::bind("127.0.0.1:0".parse().unwrap(), WsConfig::default())
        .await
        .unwrap();
    let url = format!("ws://{}/s", server.local_addr());
    let (a, b) = futures::join!(async { server.accept().await.unwrap().link }, async {
        WsLink::connect(&url, &WsConfig::default()).await.unwrap()
    });
    let o = stream(
        a,
        b,
        HostConfig::default(),
        ClientConfig::default(),
        200,
        50_000,
    )
    .await;
    assert_eq!((o.delivered, o.lost, o.corrupt), (200, 0, 0));
    assert_eq!(
        o.zero_copy, 200,
        "frames handed out in the framing layer's buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_encrypted_and_in_parts() {
    use link_ws::{WsConfig, WsLink, WsServer};
    let cfg = WsConfig {
        max_payload: 16 << 10,
        ..WsConfig::default()
    };
    let mut server = WsServer::bind("127.0.0.1:0".parse().unwrap(), cfg.clone())
        .await
        .unwrap();
    let url = format!("ws://{}/s", server.local_addr());
    let (a, b) = futures::join!(async { server.accept().await.unwrap().link }, async {
        WsLink::connect(&url, &cfg).await.unwrap()
    });
    let (h, c) = enc();
    let o = stream(a, b, h, c, 100, 40_000).await;
    assert_eq!((o.delivered, o.lost, o.corrupt), (100, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_frames_written_in_place_arrive_without_a_copy() {
    use link_shm::{ShmConfig, ShmLink};
    let cfg = ShmConfig {
        large_size: 4 << 20,
        ..ShmConfig::default()
    };
    let (a, b) = ShmLink::pair(&cfg).unwrap();
    let host = async move {
        let (mut host, _ev) = Host::accept(a, HostConfig::default()).await.unwrap();
        for i in 0..60u32 {
            let want = frame_bytes(i, 1 << 20);
            host.send_frame_with(want.len(), 0, FrameFlags::NONE, |b| {
                b.copy_from_slice(&want)
            })
            .await
            .unwrap();
        }
        host.close().await.unwrap();
    };
    let client = async move {
        let (mut c, _i) = Client::connect(b, ClientConfig::default()).await.unwrap();
        let mut n = 0;
        while let Some(ClientEvent::Frame(f)) = c.next_frame().await.unwrap() {
            assert!(f.is_zero_copy(), "the frame is the slot the host wrote");
            assert_eq!(f.data(), &frame_bytes(f.index, 1 << 20)[..]);
            n += 1;
        }
        n
    };
    let ((), n) = futures::join!(host, client);
    assert_eq!(n, 60);
}
