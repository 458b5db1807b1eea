//! The receive ring after a host stall: an endpoint whose application stops
//! reading for a while, as a stalled host does, while its peers keep
//! sending loss reports (40 bytes each) and bursts of media datagrams; then
//! it reads and drops everything. Prints the process's RSS before, at the
//! worst moment and 5 s after, with the ring's counters.
//!
//! ```sh
//! cargo run --release -p link-udp --example stall_rss
//! ```

use std::net::UdpSocket;
use std::time::Duration;

use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink, UdpStatsHandle};

/// Peers sending to the endpoint.
const PEERS: usize = 32;
/// Rounds during the stall: in each, every peer sends a loss report and
/// every fourth peer a burst of media datagrams.
const ROUNDS: usize = 12;
/// Media datagrams per burst.
const BURST: usize = 32;

/// The process's resident set, KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// A counter by name from the stats' `Debug` text (so that this runs
/// against a link without the newer counters too).
fn stat(stats: &UdpStatsHandle, name: &str) -> String {
    let text = format!("{:?}", stats.snapshot());
    text.split(&format!("{name}: "))
        .nth(1)
        .and_then(|r| r.split([',', ' ', '}']).next())
        .unwrap_or("-")
        .to_string()
}

fn report(what: &str, stats: &UdpStatsHandle) {
    println!(
        "{what:>28}: RSS {:>8.1} MiB, slabs added {:>3}, released {:>3}, ring {} bytes",
        rss_kib() as f64 / 1024.0,
        stat(stats, "rx_buffer_growth"),
        stat(stats, "rx_buffer_released"),
        stat(stats, "rx_ring_bytes"),
    );
}

async fn send<T: LinkTx>(tx: &mut T, n: usize, len: usize) {
    for i in 0..n {
        let mut slot = tx.reserve().await.unwrap().alloc(len).unwrap();
        slot.as_mut_slice().fill(i as u8);
        slot.commit().unwrap();
    }
    tx.flush().await.unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ep = UdpEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        EndpointConfig {
            handshake_rate: None,
            amplification_limit: None,
            ..EndpointConfig::default()
        },
    )
    .unwrap();
    let stats = ep.stats();
    let mut clients = Vec::new();
    let mut links = Vec::new();
    for _ in 0..PEERS {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let (tx, rx) = UdpLink::from_std(s, ep.local_addr(), &UdpConfig::default())
            .unwrap()
            .split();
        clients.push((tx, rx));
        links.push(ep.connect(addr).unwrap().split());
    }
    // Warm up: every peer sends, the application reads at once.
    for round in 0..20 {
        for (i, (tx, _)) in clients.iter_mut().enumerate() {
            send(tx, 1, 40).await;
            if i % 4 == round % 4 {
                send(tx, BURST, 1200).await;
            }
        }
        for (_, rx) in links.iter_mut() {
            while let Ok(Ok(Some(m))) =
                tokio::time::timeout(Duration::from_millis(1), rx.recv()).await
            {
                drop(m);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report("before the stall", &stats);
    // The stall: the application reads nothing while the peers send.
    for round in 0..ROUNDS {
        for (i, (tx, _)) in clients.iter_mut().enumerate() {
            send(tx, 1, 40).await;
            if i % 4 == round % 4 {
                send(tx, BURST, 1200).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    report("end of the stall", &stats);
    // The application catches up and drops everything.
    let mut read = 0;
    for (_, rx) in links.iter_mut() {
        while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_millis(5), rx.recv()).await
        {
            read += 1;
            drop(m);
        }
    }
    println!("read {read} datagrams after the stall");
    report("caught up", &stats);
    for s in 1..=5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        report(&format!("{s} s later"), &stats);
    }
}
