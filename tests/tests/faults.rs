//! The fault injector's own rules (`spec/faults.md`).

use std::time::{Duration, Instant};

use link_tests::util::{check_pattern, fill_pattern, recv_one};
use link_types::fault::{self, FaultConfigError, FaultSpec, FaultStats};
use link_types::{
    Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit, MemoryConfig, WriteSlot, memory_pair,
};

const CFG: MemoryConfig = MemoryConfig {
    capacity: 100_000,
    max_payload: 256,
};

/// Send `n` patterned messages a → b through a wrapper injecting `spec`
/// with `seed`, close, and return the delivered sequence numbers and stats.
async fn run(spec: FaultSpec, seed: u64, n: u32) -> (Vec<u32>, FaultStats) {
    let (a, b) = memory_pair(CFG);
    let (a, b) = fault::fault_pair(a, b, spec, FaultSpec::none(), seed).expect("valid spec");
    let stats = b.stats();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    for i in 0..n {
        let mut slot = tx.reserve().await.unwrap().alloc(16).unwrap();
        fill_pattern(i, slot.as_mut_slice());
        slot.commit().unwrap();
    }
    tx.close().await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = rx.recv().await.expect("no error on a closed link") {
        got.push(check_pattern(&m).expect("the injector corrupted a message"));
    }
    (got, stats.snapshot())
}

fn everything() -> FaultSpec {
    FaultSpec {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.2,
        max_displacement: 5,
        max_hold: Duration::from_secs(30),
        ..FaultSpec::none()
    }
}

// r[verify faults.seeded]
#[tokio::test]
async fn same_seed_same_pattern_other_seed_other_pattern() {
    let (a, sa) = run(everything(), 42, 5000).await;
    let (b, sb) = run(everything(), 42, 5000).await;
    assert_eq!(a, b, "same seed gave a different delivered sequence");
    assert_eq!(sa, sb, "same seed gave different counters");
    let (c, _) = run(everything(), 43, 5000).await;
    assert_ne!(a, c, "another seed gave the very same pattern");
}

// r[verify faults.loss]
#[tokio::test]
async fn loss_drops_about_p_and_counts_every_drop() {
    let n = 20_000;
    let (got, s) = run(FaultSpec::loss(0.25), 7, n).await;
    assert_eq!(s.received, n as u64);
    assert_eq!(
        s.dropped + s.delivered,
        s.received,
        "a message vanished uncounted"
    );
    assert_eq!(got.len() as u64, s.delivered);
    let rate = s.dropped as f64 / n as f64;
    assert!(
        (0.23..0.27).contains(&rate),
        "loss rate {rate} far from 0.25"
    );
    // Loss alone keeps order and never duplicates.
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

// r[verify faults.duplicate]
#[tokio::test]
async fn duplicates_are_intact_and_counted() {
    let n = 10_000;
    let spec = FaultSpec {
        duplicate: 0.2,
        ..FaultSpec::none()
    };
    let (got, s) = run(spec, 9, n).await;
    assert_eq!(s.delivered, s.received + s.duplicated);
    assert_eq!(got.len() as u64, s.delivered);
    let rate = s.duplicated as f64 / n as f64;
    assert!(
        (0.18..0.22).contains(&rate),
        "duplicate rate {rate} far from 0.2"
    );
    let mut counts = vec![0u32; n as usize];
    for seq in got {
        counts[seq as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| c == 1 || c == 2),
        "a message was lost or tripled"
    );
    assert_eq!(
        counts.iter().filter(|&&c| c == 2).count() as u64,
        s.duplicated
    );
}

// r[verify faults.reorder]
#[tokio::test]
async fn reordering_is_bounded_by_max_displacement() {
    let n = 10_000u32;
    let max_displacement = 4;
    let spec = FaultSpec {
        reorder: 0.3,
        max_displacement,
        max_hold: Duration::from_secs(30),
        ..FaultSpec::none()
    };
    let (got, s) = run(spec, 11, n).await;
    assert_eq!(
        got.len(),
        n as usize,
        "reordering alone must not lose anything"
    );
    assert!(
        s.reordered > 2000,
        "only {} messages reordered",
        s.reordered
    );
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    // Displacement of message m: how many later-sent messages were
    // delivered before it.
    let mut out_of_order = 0;
    for (pos, &m) in got.iter().enumerate() {
        let overtaken_by = got[..pos].iter().filter(|&&x| x > m).count();
        assert!(
            overtaken_by <= max_displacement,
            "message {m} was overtaken by {overtaken_by} > {max_displacement}"
        );
        out_of_order += usize::from(overtaken_by > 0);
    }
    assert!(out_of_order > 0);
}

// r[verify faults.delay]
#[tokio::test]
async fn delay_holds_every_message_at_least_delay_and_jitter_reorders() {
    let spec = FaultSpec {
        delay: Duration::from_millis(40),
        ..FaultSpec::none()
    };
    let start = Instant::now();
    let (got, s) = run(spec, 1, 20).await;
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "messages arrived before the delay"
    );
    assert_eq!(
        got,
        (0..20).collect::<Vec<_>>(),
        "a fixed delay keeps order"
    );
    assert_eq!(s.delayed, 20);

    let spec = FaultSpec {
        jitter: Duration::from_millis(30),
        ..FaultSpec::none()
    };
    let (got, s) = run(spec, 2, 200).await;
    assert_eq!(s.delayed, 200);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..200).collect::<Vec<_>>(),
        "jitter must not lose messages"
    );
    assert_ne!(
        got, sorted,
        "30 ms of jitter on back-to-back messages reordered nothing"
    );
}

// r[verify faults.caps]
#[test]
fn wrapper_declares_the_faults_it_injects() {
    let inner = LinkCaps::reliable_ordered(256);
    let caps = |ab: FaultSpec, ba: FaultSpec| {
        let (a, b) = memory_pair(CFG);
        let (a, b) = fault::fault_pair(a, b, ab, ba, 1).unwrap();
        assert_eq!(a.caps(), b.caps(), "both ends must declare the same caps");
        a.caps()
    };
    assert_eq!(caps(FaultSpec::none(), FaultSpec::none()), inner);
    let lossy = caps(FaultSpec::loss(0.01), FaultSpec::none());
    assert!(!lossy.reliable && lossy.ordered);
    let dup = caps(
        FaultSpec::none(),
        FaultSpec {
            duplicate: 0.1,
            ..FaultSpec::none()
        },
    );
    assert!(!dup.reliable && dup.ordered);
    let reorder = caps(
        FaultSpec::none(),
        FaultSpec {
            reorder: 0.1,
            max_displacement: 2,
            ..FaultSpec::none()
        },
    );
    assert!(reorder.reliable && !reorder.ordered);
    let jitter = caps(
        FaultSpec {
            jitter: Duration::from_millis(1),
            ..FaultSpec::none()
        },
        FaultSpec::none(),
    );
    assert!(!jitter.ordered);
    // A single wrapped end declares its own faults.
    let (a, _b) = memory_pair(CFG);
    assert!(
        !fault::wrap(a, FaultSpec::loss(0.5), 1)
            .unwrap()
            .caps()
            .reliable
    );
}

#[test]
fn invalid_specs_are_refused_with_a_clear_error() {
    let (a, _b) = memory_pair(CFG);
    let err = fault::wrap(a, FaultSpec::loss(1.5), 1)
        .err()
        .expect("loss 1.5 is refused");
    assert_eq!(
        err,
        FaultConfigError::Probability {
            name: "loss",
            value: 1.5
        }
    );
    assert!(err.to_string().contains("loss"));
    let (a, _b) = memory_pair(CFG);
    let nan = FaultSpec {
        duplicate: f64::NAN,
        ..FaultSpec::none()
    };
    assert!(fault::wrap(a, nan, 1).is_err());
    let (a, _b) = memory_pair(CFG);
    let no_disp = FaultSpec {
        reorder: 0.5,
        ..FaultSpec::none()
    };
    assert_eq!(
        fault::wrap(a, no_disp, 1).err(),
        Some(FaultConfigError::NoDisplacement)
    );
}

// r[verify faults.eof]
#[tokio::test]
async fn held_messages_come_before_the_end_and_errors_stay() {
    // Everything held back for a long time: close must still deliver it all
    // promptly, then EOF, stickily.
    let spec = FaultSpec {
        reorder: 1.0,
        max_displacement: 8,
        max_hold: Duration::from_secs(60),
        ..FaultSpec::none()
    };
    let start = Instant::now();
    let (mut got, s) = run(spec, 5, 50).await;
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "held messages waited for max_hold"
    );
    assert_eq!(s.reordered, 50);
    got.sort_unstable();
    assert_eq!(got, (0..50).collect::<Vec<_>>());

    // An abrupt end: messages first, then an error on every call.
    let (a, b) = memory_pair(CFG);
    let (a, b) = fault::fault_pair(a, b, spec, FaultSpec::none(), 5).unwrap();
    let (mut tx, arx) = a.split();
    let (_btx, mut rx) = b.split();
    for i in 0..3 {
        let mut slot = tx.reserve().await.unwrap().alloc(16).unwrap();
        fill_pattern(i, slot.as_mut_slice());
        slot.commit().unwrap();
    }
    // Only the sending half goes: the end is the inner link's PeerGone.
    drop(tx);
    let mut seqs: Vec<_> = Vec::new();
    for _ in 0..3 {
        seqs.push(check_pattern(&recv_one(&mut rx).await).unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [0, 1, 2]);
    for _ in 0..3 {
        match rx.recv().await {
            Err(LinkError::PeerGone) => {}
            other => panic!(
                "expected PeerGone, stickily, got {:?}",
                other.map(|m| m.map(|b| b.len()))
            ),
        }
    }
    drop(arx);
}
