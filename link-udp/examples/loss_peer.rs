//! Both ends of the real-loss test (`scripts/netns-loss.sh`), run in two
//! network namespaces joined by a veth pair with nftables dropping a share
//! of packets in each direction.
//!
//! ```text
//! loss_peer serve  <bind>                 (endpoint: accepts one peer)
//! loss_peer client <bind> <server> <count> <loss-percent> [<send-buffer>]
//! ```
//!
//! The client sends `count` patterned datagrams, then an END marker until
//! the server's report comes back through the same lossy link. It checks
//! that the delivered share matches the configured loss, that nothing
//! arrived damaged, duplicated or invented, and exits non-zero otherwise.
//!
//! With a `send-buffer` size, the client sends as fast as it can into a
//! rate-limited path with that small a socket buffer: the buffer fills, and
//! the link must wait for it (counted in `tx_waits`) rather than drop.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use link_tests::util::{check_pattern, fill_pattern, timeout};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{EndpointConfig, UdpConfig, UdpEndpoint, UdpLink};

const END: &[u8] = b"END-OF-DATA";
const REPORT: &[u8] = b"REPORT";

async fn send_bytes<T: LinkTx>(tx: &mut T, bytes: &[u8]) {
    let mut slot = tx
        .reserve()
        .await
        .expect("reserve")
        .alloc(bytes.len())
        .expect("alloc");
    slot.as_mut_slice().copy_from_slice(bytes);
    slot.commit().expect("commit");
    tx.flush().await.expect("flush");
}

// Under real loss (scripts/netns-loss.sh) this checks udp.datagram.model;
// the verify tag is on the loopback test in tests/udp.rs.
async fn serve(bind: SocketAddr) -> Result<(), String> {
    // This test's protocol has no handshake: the client streams from its
    // first datagram, before `accept` returns and the peer can be marked
    // validated below. Queue as much for it meanwhile as for a validated
    // peer (the default, 32, is sized for a handshake).
    let cfg = EndpointConfig {
        unvalidated_queue: EndpointConfig::default().peer_queue,
        ..EndpointConfig::default()
    };
    let ep = UdpEndpoint::bind(bind, cfg).map_err(|e| e.to_string())?;
    println!("serving on {}", ep.local_addr());
    let link = timeout(Duration::from_secs(30), ep.accept())
        .await
        .ok_or("no client within 30 s")?;
    let (mut tx, mut rx) = link.split();
    // This test's protocol has no handshake to prove the client's address;
    // take it as validated, or the endpoint would keep at most 32 of its
    // datagrams waiting and send it at most 3x what it sent
    // (udp.endpoint.validation).
    tx.mark_validated();
    let (mut valid, mut corrupt, mut dup) = (0u64, 0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    let count = loop {
        let Some(r) = timeout(Duration::from_secs(20), rx.recv()).await else {
            return Err("the client went silent".into());
        };
        let m = r.map_err(|e| e.to_string())?.ok_or("end of stream")?;
        if let Some(n) = m.strip_prefix(END) {
            break u64::from_le_bytes(n.try_into().map_err(|_| "bad END")?);
        }
        match check_pattern(&m) {
            Some(seq) if seen.insert(seq) => valid += 1,
            Some(_) => dup += 1,
            None => corrupt += 1,
        }
    };
    // What the endpoint dropped itself is counted, not lost: the client
    // checks that received plus counted equals what nftables let through.
    let st = ep.stats().snapshot();
    let counted = st.rx_peer_queue_full + st.rx_kernel_drops + st.rx_evicted;
    let mut report = REPORT.to_vec();
    for v in [valid, corrupt, dup, counted] {
        report.extend_from_slice(&v.to_le_bytes());
    }
    // The report crosses the lossy link too: send it a few times, and keep
    // answering END markers until the client stops.
    for _ in 0..10 {
        send_bytes(&mut tx, &report).await;
    }
    while let Some(Ok(Some(m))) = timeout(Duration::from_secs(2), rx.recv()).await {
        if m.starts_with(END) {
            send_bytes(&mut tx, &report).await;
        }
    }
    let s = ep.stats().snapshot();
    println!(
        "server: {valid} valid of {count}, {corrupt} corrupt, {dup} duplicate; oversized {} truncated {} kernel drops {} peer queue full {}",
        s.rx_oversized, s.rx_truncated, s.rx_kernel_drops, s.rx_peer_queue_full
    );
    Ok(())
}

// Under real loss (scripts/netns-loss.sh) this checks udp.send.batch; the
// verify tag is on the loopback test in tests/udp.rs.
async fn client(
    bind: SocketAddr,
    server: SocketAddr,
    count: u64,
    loss: f64,
    send_buffer: Option<usize>,
) -> Result<(), String> {
    let mut config = UdpConfig::default();
    if let Some(b) = send_buffer {
        config.send_buffer = b;
    }
    let link = UdpLink::connect(bind, server, &config).map_err(|e| e.to_string())?;
    let stats = link.stats();
    let (mut tx, mut rx) = link.split();
    for i in 0..count {
        let mut slot = tx
            .reserve()
            .await
            .map_err(|e| e.to_string())?
            .alloc(1200)
            .map_err(|e| e.to_string())?;
        fill_pattern(i as u32, slot.as_mut_slice());
        slot.commit().map_err(|e| e.to_string())?;
        if i % 64 == 63 {
            tx.flush().await.map_err(|e| e.to_string())?;
            if send_buffer.is_none() {
                // Pace a little so the receiver's socket never overflows:
                // the only loss should be the one nftables injects.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    }
    tx.flush().await.map_err(|e| e.to_string())?;
    let mut end = END.to_vec();
    end.extend_from_slice(&count.to_le_bytes());
    let report = async {
        loop {
            send_bytes(&mut tx, &end).await;
            if let Some(Ok(Some(m))) = timeout(Duration::from_millis(50), rx.recv()).await
                && let Some(r) = m.strip_prefix(REPORT)
                && r.len() == 32
            {
                let v = |i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().unwrap());
                return (v(0), v(1), v(2), v(3));
            }
        }
    };
    let (valid, corrupt, dup, counted) = timeout(Duration::from_secs(20), report)
        .await
        .ok_or("no report from the server through the lossy link")?;
    // Delivered, plus what the server's endpoint dropped and counted (its
    // peer queue full, kernel drops): nothing else may be missing but
    // what nftables dropped.
    let delivered = (valid + counted) as f64 / count as f64;
    let expected = 1.0 - loss / 100.0;
    println!(
        "client: sent {count}, server got {valid} and counted {counted} drops ({:.2}% accounted for, {:.2}% expected), {corrupt} corrupt, {dup} duplicate",
        delivered * 100.0,
        expected * 100.0
    );
    if corrupt != 0 || dup != 0 {
        return Err("damaged or duplicated datagrams arrived".into());
    }
    if send_buffer.is_some() {
        let s = stats.snapshot();
        println!(
            "client: send buffer {} bytes requested, waited for the socket {} times, dropped {}",
            send_buffer.unwrap_or_default(),
            s.tx_waits,
            s.tx_dropped
        );
        if s.tx_waits == 0 {
            return Err("the send buffer never filled: the rate limit did not bite".into());
        }
        if s.tx_dropped != 0 || (loss == 0.0 && valid + counted != count) {
            return Err(format!(
                "with a full send buffer the link dropped ({} dropped, {valid} of {count} delivered, {counted} counted by the server)",
                s.tx_dropped
            ));
        }
    }
    if (delivered - expected).abs() > 0.015 {
        return Err(format!(
            "delivered share {delivered:.4} is far from {expected:.4}"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let parse = |s: &String| s.parse::<SocketAddr>().map_err(|e| format!("{s}: {e}"));
    let result = rt.block_on(async {
        match args.as_slice() {
            [role, bind] if role == "serve" => serve(parse(bind)?).await,
            [role, bind, server, count, loss, rest @ ..] if role == "client" && rest.len() <= 1 => {
                let count = count.parse().map_err(|_| "count must be a number")?;
                let loss = loss.parse().map_err(|_| "loss must be a number")?;
                let send_buffer = match rest.first() {
                    Some(b) => Some(b.parse().map_err(|_| "send-buffer must be a number of bytes")?),
                    None => None,
                };
                client(parse(bind)?, parse(server)?, count, loss, send_buffer).await
            }
            _ => Err("usage: loss_peer serve <bind> | loss_peer client <bind> <server> <count> <loss-percent> [<send-buffer>]".into()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loss_peer: {e}");
            ExitCode::FAILURE
        }
    }
}
