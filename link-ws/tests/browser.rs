//! The WebSocket link in a real browser (headless Chromium, driven by
//! `wasm-bindgen-test-runner`), against the native `test_peer browser`
//! server that `scripts/browser-test.sh` starts first. The server's address
//! is baked in at compile time from `LINK_WS_PEER`.
#![cfg(target_arch = "wasm32")]

use std::cell::Cell;
use std::time::Duration;

use futures::FutureExt;
use link_tests::LinkFactory;
use link_types::{Link, LinkError, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, WriteSlot};
use link_ws::{WsConfig, WsError, WsLink};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn peer() -> &'static str {
    match option_env!("LINK_WS_PEER") {
        Some(p) => p,
        None => panic!("build with LINK_WS_PEER=<host:port> of `test_peer browser`"),
    }
}

fn url(path: &str) -> String {
    format!("ws://{}{}", peer(), path)
}

thread_local! {
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// Two browser links that the server relays to each other.
struct Relayed;

impl LinkFactory for Relayed {
    type Link = WsLink;
    async fn pair(&self) -> (WsLink, WsLink) {
        let n = NEXT.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        // Unique across test runs served by the same server process.
        let id = format!("{}-{n}", js_sys::Math::random().to_bits());
        let path = url(&format!("/pair/{id}"));
        let config = WsConfig::default();
        let a = WsLink::connect(&path, &config).await.expect("connect a");
        let b = WsLink::connect(&path, &config).await.expect("connect b");
        (a, b)
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(300)
    }
}

mod suite {
    use super::*;
    link_tests::unbounded_receiver_suite!(#[wasm_bindgen_test], Relayed);
}

// r[verify ws.backpressure.browser]
/// With the server not reading, `bufferedAmount` climbs and `reserve`
/// waits; once the server reads, `reserve` resumes; every message arrives.
#[wasm_bindgen_test]
async fn reserve_waits_on_buffered_amount() {
    let config = WsConfig {
        high_water: 1 << 20,
        ..WsConfig::default()
    };
    let link = WsLink::connect(&url("/stall/3000"), &config)
        .await
        .expect("connect");
    let stats = link.stats();
    let (mut tx, mut rx) = link.split();
    let msg = vec![0x5a; 256 << 10];
    let (mut sent, mut waited) = (0u64, false);
    // Send until a reserve stays pending, then keep going: the server
    // starts reading after 3 s and the reserve completes.
    while !waited || sent < 400 {
        let r = futures::select! {
            r = tx.reserve().fuse() => Some(r),
            _ = futures_timer::Delay::new(Duration::from_millis(500)).fuse() => None,
        };
        match r {
            Some(p) => {
                let mut s = p.expect("reserve").alloc(msg.len()).expect("alloc");
                s.as_mut_slice().copy_from_slice(&msg);
                s.commit().expect("commit");
                sent += 1;
            }
            None => {
                waited = true;
                // Now wait for real: it must complete once the server reads.
                let p = futures::select! {
                    r = tx.reserve().fuse() => r.expect("reserve"),
                    _ = futures_timer::Delay::new(Duration::from_secs(30)).fuse() =>
                        panic!("reserve never resumed after the server started reading"),
                };
                let mut s = p.alloc(msg.len()).expect("alloc");
                s.as_mut_slice().copy_from_slice(&msg);
                s.commit().expect("commit");
                sent += 1;
            }
        }
        assert!(sent < 10_000, "2.5 GB sent and reserve never waited");
    }
    assert!(stats.snapshot().reserve_waits > 0);
    tx.send(&[]).await.expect("end marker");
    let reply = rx.recv().await.expect("recv").expect("summary");
    let count = u64::from_le_bytes(reply[0..8].try_into().unwrap());
    let bytes = u64::from_le_bytes(reply[8..16].try_into().unwrap());
    assert_eq!((count, bytes), (sent, sent * msg.len() as u64));
    tx.close().await.expect("close");
}

// r[verify link.reserve.permit-holds]
// r[verify link.reserve.drop-releases]
// r[verify link.reserve.cancel]
/// The three permit checks the suite cannot run here (a browser's receiver
/// cannot push back, so the suite cannot fill a link by not reading; the
/// server stalls instead). With the server not reading, `reserve` waits
/// once `bufferedAmount` is above the high-water mark; 100 pending
/// `reserve` futures are polled and dropped; once the server reads, a
/// granted permit is dropped and the next `reserve` is granted at once; a
/// granted permit allocates the maximum payload and commits without
/// waiting. The server's count at the end is exactly what was committed.
#[wasm_bindgen_test]
async fn permits_on_a_full_browser_link() {
    use std::pin::pin;
    use std::task::{Context, Poll};
    let config = WsConfig {
        high_water: 1 << 20,
        ..WsConfig::default()
    };
    let max = config.max_payload;
    let link = WsLink::connect(&url("/stall/2000"), &config)
        .await
        .expect("connect");
    let (mut tx, mut rx) = link.split();
    let msg = vec![0x33; 256 << 10];
    let (mut count, mut bytes) = (0u64, 0u64);
    // Fill until a reserve stays pending.
    loop {
        let r = futures::select! {
            r = tx.reserve().fuse() => Some(r),
            _ = futures_timer::Delay::new(Duration::from_millis(300)).fuse() => None,
        };
        let Some(p) = r else { break };
        let mut s = p.expect("reserve").alloc(msg.len()).expect("alloc");
        s.as_mut_slice().copy_from_slice(&msg);
        s.commit().expect("commit");
        count += 1;
        bytes += msg.len() as u64;
        assert!(count < 4000, "1 GB sent and reserve never waited");
    }
    // Cancelled reserves on the full link.
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..100 {
        let mut fut = pin!(tx.reserve());
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            panic!("reserve granted on a full link: {:?}", r.map(|_| ()));
        }
    }
    // The server reads after 2 s: a real reserve is granted; dropped, the
    // next one is granted at once.
    {
        // Granted, then dropped at the end of this block.
        let _permit = futures::select! {
            r = tx.reserve().fuse() => r.expect("reserve"),
            _ = futures_timer::Delay::new(Duration::from_secs(30)).fuse() =>
                panic!("reserve never resumed after the server started reading"),
        };
    }
    let p = futures::select! {
        r = tx.reserve().fuse() => r.expect("reserve"),
        _ = futures_timer::Delay::new(Duration::from_millis(300)).fuse() =>
            panic!("the capacity of a dropped permit was not released"),
    };
    // A granted permit takes the largest message, synchronously.
    let mut s = p
        .alloc(max)
        .expect("a granted permit allocates the maximum payload");
    s.as_mut_slice().fill(0x44);
    s.commit().expect("a granted permit commits");
    count += 1;
    bytes += max as u64;
    tx.send(&[]).await.expect("end marker");
    let reply = rx.recv().await.expect("recv").expect("summary");
    let got = (
        u64::from_le_bytes(reply[0..8].try_into().unwrap()),
        u64::from_le_bytes(reply[8..16].try_into().unwrap()),
    );
    assert_eq!(
        got,
        (count, bytes),
        "the server's count differs from what was committed"
    );
    tx.close().await.expect("close");
}

// r[verify ws.message.text]
/// A text message is a protocol error: the link ends with an error, sticky,
/// and the refusal is counted.
#[wasm_bindgen_test]
async fn text_message_is_refused() {
    let link = WsLink::connect(&url("/text"), &WsConfig::default())
        .await
        .expect("connect");
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    match rx.recv().await {
        Err(LinkError::Protocol(why)) => assert!(why.contains("text"), "{why}"),
        other => panic!(
            "expected a protocol error, got {:?}",
            other.map(|m| m.map(|b| b.len()))
        ),
    }
    assert!(rx.recv().await.is_err(), "the error must be sticky");
    assert_eq!(stats.snapshot().rx_text_rejected, 1);
}

// r[verify ws.message.oversize]
/// A message above the maximum payload ends the link with an error and is
/// counted; it is never delivered.
#[wasm_bindgen_test]
async fn oversize_message_is_refused() {
    let config = WsConfig {
        max_payload: 1000,
        max_queued: 1 << 20,
        ..WsConfig::default()
    };
    let link = WsLink::connect(&url("/big/1001"), &config)
        .await
        .expect("connect");
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    assert!(matches!(rx.recv().await, Err(LinkError::Protocol(_))));
    assert!(rx.recv().await.is_err());
    assert_eq!(stats.snapshot().rx_oversize, 1);
}

// r[verify ws.browser.connect]
/// A connection that cannot open is an error from `connect`, not a link.
#[wasm_bindgen_test]
async fn connect_failure_is_an_error() {
    // Port 9 (discard) on loopback: nothing listens there.
    match WsLink::connect("ws://127.0.0.1:9/", &WsConfig::default()).await {
        Err(WsError::Browser(_)) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    match WsLink::connect("not a url", &WsConfig::default()).await {
        Err(WsError::Browser(_)) => {}
        other => panic!("a bad URL must be refused: {:?}", other.err()),
    }
}

// r[verify ws.browser.recv-bound]
/// A page that does not read cannot make the link grow without bound: past
/// `max_queued` bytes the link fails with a counted overflow, after
/// delivering what fit.
#[wasm_bindgen_test]
async fn receive_queue_is_bounded() {
    let config = WsConfig {
        max_payload: 64 << 10,
        max_queued: 1 << 20,
        ..WsConfig::default()
    };
    // 64 messages of 64 KiB: 4 MiB, four times the limit.
    let link = WsLink::connect(&url("/firehose/64/65536"), &config)
        .await
        .expect("connect");
    let stats = link.stats();
    let (_tx, mut rx) = link.split();
    futures_timer::Delay::new(Duration::from_secs(2)).await;
    let mut got = 0;
    let end = loop {
        match rx.recv().await {
            Ok(Some(_)) => got += 1,
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(LinkError::Protocol(_))),
        "{:?}",
        end.map(|m| m.map(|b| b.len()))
    );
    assert!(got <= 16, "more than max_queued was held: {got} messages");
    assert_eq!(stats.snapshot().rx_overflow, 1);
}

/// Receive throughput from a native server (recorded in BENCHMARKS.md; the
/// number is printed, not checked).
#[wasm_bindgen_test]
async fn browser_receive_throughput() {
    let (count, size) = (2000u64, 64u64 << 10);
    let perf = web_sys::window()
        .and_then(|w| w.performance())
        .expect("performance");
    let link = WsLink::connect(
        &url(&format!("/firehose/{count}/{size}")),
        &WsConfig::default(),
    )
    .await
    .expect("connect");
    let (_tx, mut rx) = link.split();
    let start = perf.now();
    let mut got = 0u64;
    while let Some(m) = rx.recv().await.expect("recv") {
        assert_eq!(u64::from_le_bytes(m[0..8].try_into().unwrap()), got);
        got += 1;
    }
    let secs = (perf.now() - start) / 1000.0;
    assert_eq!(got, count);
    let mb = (count * size) as f64 / 1e6;
    console_log!(
        "BROWSER_RX {{\"messages\":{count},\"size\":{size},\"MB_per_s\":{:.1}}}",
        mb / secs
    );
}
