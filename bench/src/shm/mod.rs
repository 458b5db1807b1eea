//! `shm`: the shared-memory link between two processes, against bare
//! baselines and the alternatives, side by side:
//! - one-way latency (half a 64 B round trip): our link spinning vs a raw
//!   atomic ping-pong over a shared mapping (the floor: one word each way)
//!   and vs a bare 64 B message ring (the same message layout with no link
//!   around it; the bare ring against the atomic floor is reported too, as a
//!   reference); our link sleeping vs a raw eventfd ping-pong; and vs a Unix
//!   domain socket pair;
//! - 8 MiB frames where the writer fills each slot and the reader reads
//!   every byte: vs the bare two-process pipeline (the same two processes,
//!   buffers and reads with no link: the reference) and vs a Unix domain
//!   socket;
//! - the same latency (spinning) and frames against iceoryx2
//!   publish-subscribe (polling subscribers), the shared-memory library a
//!   user would pick instead, in two labelled setups (see [`iox`]).
//!
//! The second process is this binary again (`link-bench __shm-child
//! <role>`, see [`mod@child`]; the roles and what both sides share are in
//! [`common`]), pinned to CPU 1 while the parent runs on CPU 0,
//! for ours and the baselines alike.

mod child;
mod common;
mod iox;
mod raw;

use std::time::{Duration, Instant};

use link_shm::ShmLink;
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};

pub use child::child;
use common::{FRAME, Role, child_command, link_config};
pub(crate) use common::{finish, inherited, pass_fd, read_all, runtime};
use iox::Setup;

use crate::harness::{Better, Case, Runner, pin};

/// Our link, 64 B round trips; one-way latency in µs.
fn link_latency(spin: bool, count: usize) -> f64 {
    pin(0);
    runtime().block_on(async {
        let role = if spin {
            Role::LinkEchoSpin
        } else {
            Role::LinkEchoSleep
        };
        let cfg = link_config(if spin {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        });
        let (link, child) = ShmLink::spawn(&mut child_command(role), &cfg)
            .await
            .expect("spawn");
        let (mut tx, mut rx) = link.split();
        let mut one = async |i: usize| {
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(64)
                .expect("alloc");
            s.as_mut_slice()[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.commit().expect("commit");
            assert_eq!(rx.recv().await.expect("recv").expect("echo").len(), 64);
        };
        for i in 0..count / 10 {
            one(i).await;
        }
        let start = Instant::now();
        for i in 0..count {
            one(i).await;
        }
        let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
        finish(child);
        us
    })
}

/// Our link, 8 MiB frames written into slots and read in full by the
/// child; GB/s.
fn link_frames(frames: usize) -> f64 {
    pin(0);
    runtime().block_on(async {
        let cfg = link_config(Duration::from_micros(50));
        let (link, child) = ShmLink::spawn(&mut child_command(Role::LinkSink), &cfg)
            .await
            .expect("spawn");
        let (mut tx, mut rx) = link.split();
        let start = Instant::now();
        for i in 0..frames {
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(FRAME)
                .expect("alloc");
            s.as_mut_slice().fill(i as u8);
            s.commit().expect("commit");
        }
        let mut s = tx
            .reserve()
            .await
            .expect("reserve")
            .alloc(8)
            .expect("alloc");
        s.as_mut_slice().fill(0);
        s.commit().expect("commit");
        let sum = rx.recv().await.expect("recv").expect("sum");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(sum.len(), 8);
        finish(child);
        (frames * FRAME) as f64 / secs / 1e9
    })
}

/// Run the `shm` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let scale = if quick { 1 } else { 5 };
    let n = 20_000 * scale;
    let n_sleep = 4_000 * scale;
    let frames = 60 * scale;
    let latency = |case: &str, baseline_name: &'static str| Case {
        case: case.into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name,
        ours: Box::new(|| 0.0),
        baseline: Box::new(|| 0.0),
    };
    let throughput = |case: &str, baseline_name: &'static str| Case {
        case: case.into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name,
        ours: Box::new(|| 0.0),
        baseline: Box::new(|| 0.0),
    };
    runner.run(Case {
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| raw::atomic_latency(n)),
        ..latency(
            "latency_64B_spin",
            "raw atomic ping-pong over shared memory (floor)",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| raw::raw_ring_latency(n)),
        ..latency(
            "latency_64B_spin_vs_bare_ring",
            "bare 64 B message ring, no link (two cache lines)",
        )
    });
    runner.run(Case {
        ours: Box::new(|| raw::raw_ring_latency(n)),
        baseline: Box::new(|| raw::atomic_latency(n)),
        ..latency(
            "bare_ring_64B_vs_atomic",
            "raw atomic ping-pong (reference: the bare ring is not our link)",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| iox::latency(n, Setup::Ours)),
        ..latency(
            "latency_64B_spin_vs_iceoryx2",
            "iceoryx2, our setup: loan+write+send per message, buffer 2, RetryUntilDelivered",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| iox::latency(n, Setup::Own)),
        ..latency(
            "latency_64B_spin_vs_iceoryx2_own",
            "iceoryx2, its own benchmark's setup: pre-loaned sample, buffer 1, history 0, safe overflow",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_latency(false, n_sleep)),
        baseline: Box::new(|| raw::eventfd_latency(n_sleep)),
        ..latency("latency_64B_sleep", "raw eventfd ping-pong")
    });
    runner.run(Case {
        ours: Box::new(|| link_latency(false, n_sleep)),
        baseline: Box::new(|| raw::uds_latency(n_sleep)),
        ..latency("latency_64B_vs_uds", "Unix domain socket pair")
    });
    runner.run(Case {
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| raw::bare_pipeline_frames(frames)),
        ..throughput(
            "frames_8MiB_vs_bare_pipeline",
            "bare two-process pipeline, no link (reference)",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| raw::uds_frames(frames)),
        ..throughput("frames_8MiB_vs_uds", "Unix domain socket pair")
    });
    runner.run(Case {
        ours: Box::new(|| raw::bare_pipeline_frames(frames)),
        baseline: Box::new(|| raw::uds_frames(frames)),
        ..throughput(
            "bare_pipeline_8MiB_vs_uds",
            "Unix domain socket pair (reference: the bare pipeline is not our link)",
        )
    });
    runner.run(Case {
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| iox::frames(frames)),
        ..throughput(
            "frames_8MiB_vs_iceoryx2",
            "iceoryx2, our setup: loan+write per frame, buffer 2, RetryUntilDelivered",
        )
    });
}
