//! `ws`: the WebSocket link against the framing crates used directly, on
//! loopback TCP: tokio-tungstenite (the async wrapper of tungstenite, whose
//! framing the link drives itself) and tokio-websockets (the other
//! candidate). One-way throughput at 64 B,
//! 16 KiB and 1 MiB, and the 64 B round trip.
//!
//! Every sample sets up a fresh connection (not timed) between two threads,
//! each with its own single-threaded tokio runtime and pinned to its own CPU
//! (client/sender on CPU 0, server/receiver on CPU 1), the same for ours
//! and the baselines, so that scheduling does not decide the result.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_ws::{WsConfig, WsLink, WsServer};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::harness::{Better, Case, Runner, pin};

const MAX: usize = 2 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Link,
    Tungstenite,
    TokioWebsockets,
}

fn link_config() -> WsConfig {
    WsConfig {
        max_payload: MAX,
        ..WsConfig::default()
    }
}

fn tung_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX))
}

fn tws_limits() -> tokio_websockets::Limits {
    tokio_websockets::Limits::default().max_payload_len(Some(MAX))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Fill the first bytes of a message with its number.
fn stamp(buf: &mut [u8], i: usize) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&(i as u64).to_le_bytes()[..n]);
}

/// The server end of one connection, whichever implementation.
enum Server {
    Link(WsLink),
    Tung(tokio_tungstenite::WebSocketStream<TcpStream>),
    Tws(tokio_websockets::WebSocketStream<TcpStream>),
}

/// The client end.
enum Client {
    Link(link_ws::WsTx, link_ws::WsRx),
    Tung(tokio_tungstenite::WebSocketStream<TcpStream>),
    Tws(tokio_websockets::WebSocketStream<TcpStream>),
}

async fn accept_one(which: Impl, addr_out: mpsc::Sender<SocketAddr>) -> Server {
    if which == Impl::Link {
        let mut server = WsServer::bind("127.0.0.1:0".parse().unwrap(), link_config())
            .await
            .expect("bind");
        addr_out.send(server.local_addr()).unwrap();
        return Server::Link(server.accept().await.expect("accept").link);
    }
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    addr_out.send(l.local_addr().unwrap()).unwrap();
    let s = l.accept().await.expect("accept").0;
    s.set_nodelay(true).unwrap();
    match which {
        Impl::Tungstenite => Server::Tung(
            tokio_tungstenite::accept_async_with_config(s, Some(tung_config()))
                .await
                .expect("handshake"),
        ),
        _ => Server::Tws(
            tokio_websockets::ServerBuilder::new()
                .limits(tws_limits())
                .accept(s)
                .await
                .expect("handshake")
                .1,
        ),
    }
}

async fn connect(which: Impl, addr: SocketAddr) -> Client {
    if which == Impl::Link {
        let url = format!("ws://{addr}/");
        let link = WsLink::connect(&url, &link_config())
            .await
            .expect("connect");
        let (tx, rx) = link.split();
        return Client::Link(tx, rx);
    }
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    match which {
        Impl::Tungstenite => Client::Tung(
            tokio_tungstenite::client_async_with_config("ws://localhost/", s, Some(tung_config()))
                .await
                .expect("handshake")
                .0,
        ),
        _ => Client::Tws(
            tokio_websockets::ClientBuilder::from_uri(http::Uri::from_static("ws://localhost/"))
                .limits(tws_limits())
                .connect_on(s)
                .await
                .expect("handshake")
                .0,
        ),
    }
}

/// Receive `count` messages of `len` bytes; messages per second from the
/// moment both sides are ready.
async fn receive(server: Server, len: usize, count: usize, go: &Barrier) -> f64 {
    go.wait();
    let start = Instant::now();
    let mut bytes = 0usize;
    match server {
        Server::Link(link) => {
            let (_tx, mut rx) = link.split();
            for _ in 0..count {
                bytes += rx.recv().await.expect("recv").expect("message").len();
            }
        }
        Server::Tung(mut ws) => {
            for _ in 0..count {
                match ws.next().await.expect("message").expect("recv") {
                    TMessage::Binary(b) => bytes += b.len(),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        Server::Tws(mut ws) => {
            for _ in 0..count {
                let m = ws.next().await.expect("message").expect("recv");
                assert!(m.is_binary());
                bytes += m.as_payload().len();
            }
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    assert_eq!(bytes, len * count);
    rate
}

/// Send `count` messages of `len` bytes, each written fresh, then flush.
async fn send(client: &mut Client, len: usize, count: usize, go: &Barrier) {
    go.wait();
    match client {
        Client::Link(tx, _rx) => {
            for i in 0..count {
                let mut slot = tx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(len)
                    .expect("alloc");
                stamp(slot.as_mut_slice(), i);
                slot.commit().expect("commit");
            }
            tx.flush().await.expect("flush");
        }
        Client::Tung(ws) => {
            for i in 0..count {
                let mut v = vec![0u8; len];
                stamp(&mut v, i);
                ws.feed(TMessage::Binary(Bytes::from(v)))
                    .await
                    .expect("feed");
            }
            ws.flush().await.expect("flush");
        }
        Client::Tws(ws) => {
            for i in 0..count {
                let mut v = vec![0u8; len];
                stamp(&mut v, i);
                ws.feed(tokio_websockets::Message::binary(Bytes::from(v)))
                    .await
                    .expect("feed");
            }
            ws.flush().await.expect("flush");
        }
    }
}

/// Echo messages until the client goes away.
async fn echo(server: Server) {
    match server {
        Server::Link(link) => {
            let (mut tx, mut rx) = link.split();
            while let Ok(Some(m)) = rx.recv().await {
                let mut slot = tx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(m.len())
                    .expect("alloc");
                slot.as_mut_slice().copy_from_slice(&m);
                slot.commit().expect("commit");
                tx.flush().await.expect("flush");
            }
        }
        Server::Tung(mut ws) => {
            while let Some(Ok(m)) = ws.next().await {
                if let TMessage::Binary(b) = m
                    && ws.send(TMessage::Binary(b)).await.is_err()
                {
                    break;
                }
            }
        }
        Server::Tws(mut ws) => {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() && ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// `count` round trips of 64 bytes; microseconds per round trip.
async fn ping(client: &mut Client, count: usize, go: &Barrier) -> f64 {
    go.wait();
    let start = Instant::now();
    match client {
        Client::Link(tx, rx) => {
            for i in 0..count {
                let mut slot = tx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(64)
                    .expect("alloc");
                stamp(slot.as_mut_slice(), i);
                slot.commit().expect("commit");
                tx.flush().await.expect("flush");
                assert_eq!(rx.recv().await.expect("recv").expect("echo").len(), 64);
            }
        }
        Client::Tung(ws) => {
            for i in 0..count {
                let mut v = vec![0u8; 64];
                stamp(&mut v, i);
                ws.send(TMessage::Binary(Bytes::from(v)))
                    .await
                    .expect("send");
                match ws.next().await.expect("echo").expect("recv") {
                    TMessage::Binary(b) => assert_eq!(b.len(), 64),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        Client::Tws(ws) => {
            for i in 0..count {
                let mut v = vec![0u8; 64];
                stamp(&mut v, i);
                ws.send(tokio_websockets::Message::binary(Bytes::from(v)))
                    .await
                    .expect("send");
                let m = ws.next().await.expect("echo").expect("recv");
                assert_eq!(m.as_payload().len(), 64);
            }
        }
    }
    start.elapsed().as_secs_f64() / count as f64 * 1e6
}

/// One throughput sample: messages per second.
fn throughput(which: Impl, len: usize, count: usize) -> f64 {
    let go = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = {
        let (go, done) = (go.clone(), done.clone());
        std::thread::spawn(move || {
            pin(1);
            runtime().block_on(async {
                let s = accept_one(which, addr_tx).await;
                let rate = receive(s, len, count, &go).await;
                done.wait();
                rate
            })
        })
    };
    pin(0);
    runtime().block_on(async {
        let mut c = connect(which, addr_rx.recv().unwrap()).await;
        send(&mut c, len, count, &go).await;
        // Keep the connection until the receiver has everything.
        done.wait();
    });
    server.join().expect("receiver thread")
}

/// One round-trip sample: microseconds.
fn round_trip(which: Impl, count: usize) -> f64 {
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        pin(1);
        runtime().block_on(async {
            let s = accept_one(which, addr_tx).await;
            echo(s).await
        })
    });
    pin(0);
    let us = runtime().block_on(async {
        let mut c = connect(which, addr_rx.recv().unwrap()).await;
        // The echo side needs no barrier: it just waits for messages.
        let b = Barrier::new(1);
        ping(&mut c, count, &b).await
    });
    server.join().expect("echo thread");
    us
}

/// Run the `ws` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let scale = if quick { 1 } else { 4 };
    let sizes: [(&str, usize, usize); 3] = [
        ("64B", 64, 200_000 * scale),
        ("16KiB", 16 << 10, 5_000 * scale),
        ("1MiB", 1 << 20, 100 * scale),
    ];
    for (name, len, count) in sizes {
        let (metric, unit, out) = if len == 64 {
            ("msgs_per_s", "msg/s", 1.0)
        } else {
            ("bytes_per_s", "GB/s", len as f64 / 1e9)
        };
        for (suffix, base, base_name) in [
            ("", Impl::Tungstenite, "tokio-tungstenite direct"),
            (
                "_vs_tokio_websockets",
                Impl::TokioWebsockets,
                "tokio-websockets direct",
            ),
        ] {
            runner.run(Case {
                case: format!("throughput_{name}{suffix}"),
                metric,
                unit,
                better: Better::Higher,
                baseline_name: base_name,
                ours: Box::new(move || throughput(Impl::Link, len, count) * out),
                baseline: Box::new(move || throughput(base, len, count) * out),
            });
        }
    }
    let n_rtt = 5_000 * scale;
    for (suffix, base, base_name) in [
        ("", Impl::Tungstenite, "tokio-tungstenite direct"),
        (
            "_vs_tokio_websockets",
            Impl::TokioWebsockets,
            "tokio-websockets direct",
        ),
    ] {
        runner.run(Case {
            case: format!("rtt_64B{suffix}"),
            metric: "round_trip",
            unit: "us",
            better: Better::Lower,
            baseline_name: base_name,
            ours: Box::new(move || round_trip(Impl::Link, n_rtt)),
            baseline: Box::new(move || round_trip(base, n_rtt)),
        });
    }
}
