//! `memory`: the in-memory link against a `tokio::sync::mpsc` channel of
//! `Vec<u8>`, the thing a user would write instead.

use std::time::Instant;

use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, MemoryConfig, WriteSlot, memory_pair};
use tokio::runtime::Runtime;

use crate::harness::{Better, Case, Runner};

const CAPACITY: usize = 256;

fn link_throughput(rt: &Runtime, len: usize, count: usize) -> f64 {
    rt.block_on(async {
        let (a, b) = memory_pair(MemoryConfig {
            capacity: CAPACITY,
            max_payload: len,
        });
        let (mut tx, _arx) = a.split();
        let (_btx, mut rx) = b.split();
        let payload = vec![0xA5u8; len];
        let start = Instant::now();
        let recv = tokio::spawn(async move {
            let mut sum = 0usize;
            while let Some(m) = rx.recv().await.expect("recv") {
                sum += m.len() + m[len - 1] as usize;
            }
            sum
        });
        for _ in 0..count {
            let mut slot = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(len)
                .expect("alloc");
            slot.as_mut_slice().copy_from_slice(&payload);
            slot.commit().expect("commit");
        }
        tx.close().await.expect("close");
        let sum = recv.await.expect("receiver");
        assert_eq!(sum, count * (len + 0xA5));
        count as f64 / start.elapsed().as_secs_f64()
    })
}

fn mpsc_throughput(rt: &Runtime, len: usize, count: usize) -> f64 {
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CAPACITY);
        let payload = vec![0xA5u8; len];
        let start = Instant::now();
        let recv = tokio::spawn(async move {
            let mut sum = 0usize;
            while let Some(m) = rx.recv().await {
                sum += m.len() + m[len - 1] as usize;
            }
            sum
        });
        for _ in 0..count {
            tx.send(payload.clone()).await.expect("send");
        }
        drop(tx);
        let sum = recv.await.expect("receiver");
        assert_eq!(sum, count * (len + 0xA5));
        count as f64 / start.elapsed().as_secs_f64()
    })
}

fn link_rtt(rt: &Runtime, count: usize) -> f64 {
    rt.block_on(async {
        let (a, b) = memory_pair(MemoryConfig {
            capacity: CAPACITY,
            max_payload: 64,
        });
        let (mut atx, mut arx) = a.split();
        let (mut btx, mut brx) = b.split();
        let echo = tokio::spawn(async move {
            while let Some(m) = brx.recv().await.expect("recv") {
                let mut slot = btx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(m.len())
                    .expect("alloc");
                slot.as_mut_slice().copy_from_slice(&m);
                slot.commit().expect("commit");
            }
        });
        let payload = [7u8; 64];
        let start = Instant::now();
        for _ in 0..count {
            let mut slot = atx
                .reserve()
                .await
                .expect("reserve")
                .alloc(64)
                .expect("alloc");
            slot.as_mut_slice().copy_from_slice(&payload);
            slot.commit().expect("commit");
            let back = arx.recv().await.expect("recv").expect("echo");
            assert_eq!(back.len(), 64);
        }
        let per = start.elapsed().as_secs_f64() / count as f64;
        atx.close().await.expect("close");
        echo.await.expect("echo task");
        per * 1e6
    })
}

fn mpsc_rtt(rt: &Runtime, count: usize) -> f64 {
    rt.block_on(async {
        let (atx, mut brx) = tokio::sync::mpsc::channel::<Vec<u8>>(CAPACITY);
        let (btx, mut arx) = tokio::sync::mpsc::channel::<Vec<u8>>(CAPACITY);
        let echo = tokio::spawn(async move {
            while let Some(m) = brx.recv().await {
                btx.send(m.clone()).await.expect("send");
            }
        });
        let payload = [7u8; 64];
        let start = Instant::now();
        for _ in 0..count {
            atx.send(payload.to_vec()).await.expect("send");
            let back = arx.recv().await.expect("echo");
            assert_eq!(back.len(), 64);
        }
        let per = start.elapsed().as_secs_f64() / count as f64;
        drop(atx);
        echo.await.expect("echo task");
        per * 1e6
    })
}

/// Run the `memory` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scale = if quick { 1 } else { 5 };
    let (n_small, n_large, n_rtt) = (200_000 * scale, 4_000 * scale, 20_000 * scale);
    runner.run(Case {
        case: "throughput_64B".into(),
        metric: "msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
        baseline_name: "tokio::mpsc<Vec<u8>>",
        ours: Box::new(|| link_throughput(&rt, 64, n_small)),
        baseline: Box::new(|| mpsc_throughput(&rt, 64, n_small)),
    });
    runner.run(Case {
        case: "throughput_64KiB".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "tokio::mpsc<Vec<u8>>",
        ours: Box::new(|| link_throughput(&rt, 65_536, n_large) * 65_536.0 / 1e9),
        baseline: Box::new(|| mpsc_throughput(&rt, 65_536, n_large) * 65_536.0 / 1e9),
    });
    runner.run(Case {
        case: "rtt_64B".into(),
        metric: "round_trip",
        unit: "us",
        better: Better::Lower,
        baseline_name: "tokio::mpsc<Vec<u8>>",
        ours: Box::new(|| link_rtt(&rt, n_rtt)),
        baseline: Box::new(|| mpsc_rtt(&rt, n_rtt)),
    });
}
