//! `soak swarm`: the soak (every viewer at once, the host sampled) and the
//! connect cycles, with their checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::Args;
use crate::frames::mix;
use crate::procfs::{TICKS, cpu_ticks};
use crate::status::{Status, get, quiet, read_status, slab_kib, wait_for};
use crate::viewer::{ViewerResult, source, udp_viewer, ws_viewer};

/// Least share of frames every UDP viewer must get (see BENCHMARKS.md, Soak).
const MIN_DELIVERY: f64 = 0.90;

struct Sample {
    t: f64,
    s: Status,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Record a failed check.
fn check(failures: &mut Vec<String>, ok: bool, what: String) {
    if ok {
        println!("  ok: {what}");
    } else {
        println!("  FAILED: {what}");
        failures.push(what);
    }
}

pub(crate) async fn swarm(a: Arc<Args>) -> Result<bool, String> {
    let mut failures = Vec::new();
    let s0 = wait_for(&a.status, Duration::from_secs(30), "up", |_| true).await?;
    let pid = get(&s0, "pid").to_string();
    let viewers = a.udp_viewers + a.ws_viewers;
    let stream_s = f64::from(a.frames) / f64::from(a.fps);
    println!(
        "soak: host pid {pid}; {} UDP viewers (faults injected) + {} WebSocket viewers, {} frames at {} fps each ({stream_s:.0} s)",
        a.udp_viewers, a.ws_viewers, a.frames, a.fps
    );

    // --- phase 1: the soak
    let start = Instant::now();
    let swarm_cpu0 = cpu_ticks("self");
    let mut tasks = Vec::new();
    for i in 0..a.udp_viewers {
        let a = a.clone();
        tasks.push(tokio::spawn(udp_viewer(
            a,
            i,
            source(i),
            true,
            None,
            false,
            Some(Duration::from_secs(1)),
        )));
    }
    for _ in 0..a.ws_viewers {
        let a = a.clone();
        tasks.push(tokio::spawn(ws_viewer(
            a,
            None,
            false,
            Some(Duration::from_secs(1)),
        )));
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, a) = (samples.clone(), stop.clone(), a.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                if let Some(s) = read_status(&a.status) {
                    let t = start.elapsed().as_secs_f64();
                    // Progress (the table at the end has the CPU column).
                    println!(
                        "  [{t:>6.1} s] host RSS {:.1} MiB, {} sessions live, {} fds, {} tasks; UDP receive slabs added {}, worst pacer queue {} ms, worst host stall {} ms",
                        mib(get(&s, "rss_kib")),
                        get(&s, "live"),
                        get(&s, "fds"),
                        get(&s, "tasks"),
                        get(&s, "udp_rx_buffer_growth"),
                        get(&s, "pacing_delay_max_us") / 1000,
                        get(&s, "late_max_ms"),
                    );
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Sample { t, s });
                }
                tokio::time::sleep(Duration::from_secs_f64(a.sample)).await;
            }
        })
    };
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| format!("viewer task: {e}"))?);
    }
    let soak_s = start.elapsed().as_secs_f64();
    let swarm_cpu = (cpu_ticks("self") - swarm_cpu0) as f64 / TICKS;
    stop.store(true, Relaxed);
    let _ = sampler.await;
    let after_soak = wait_for(&a.status, Duration::from_secs(30), "quiet", |s| {
        get(s, "live") == 0 && get(s, "handshaking") == 0
    })
    .await?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));

    println!(
        "\nhost resident memory and CPU, sampled every {} s:",
        a.sample
    );
    println!(
        "  {:>7} {:>9} {:>6} {:>6} {:>6} {:>8}",
        "t_s", "rss_MiB", "live", "fds", "tasks", "cpu_%"
    );
    let mut prev: Option<&Sample> = None;
    for x in &samples {
        let cpu = prev.map_or(0.0, |p| {
            (get(&x.s, "cpu_ticks") - get(&p.s, "cpu_ticks")) as f64 / TICKS / (x.t - p.t) * 100.0
        });
        println!(
            "  {:>7.1} {:>9.1} {:>6} {:>6} {:>6} {:>8.1}",
            x.t,
            mib(get(&x.s, "rss_kib")),
            get(&x.s, "live"),
            get(&x.s, "fds"),
            get(&x.s, "tasks"),
            cpu
        );
        prev = Some(x);
    }
    // The steady window: from the warm-up on, while every viewer is live.
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.t >= a.warmup && get(&x.s, "live") == viewers)
        .collect();
    println!("\nsoak results ({soak_s:.1} s):");
    if steady.len() >= 2 {
        let (f, l) = (steady[0], steady[steady.len() - 1]);
        let (rss_f, rss_l) = (get(&f.s, "rss_kib"), get(&l.s, "rss_kib"));
        let secs = l.t - f.t;
        let cpu = (get(&l.s, "cpu_ticks") - get(&f.s, "cpu_ticks")) as f64 / TICKS;
        let per_viewer = cpu / secs / viewers as f64;
        println!(
            "  host CPU over the steady window ({:.1}..{:.1} s): {:.1}% of a core for {viewers} viewers = {:.3}% of a core per viewer ({:.0} µs per viewer-frame)",
            f.t,
            l.t,
            cpu / secs * 100.0,
            per_viewer * 100.0,
            per_viewer * 1e6 / f64::from(a.fps)
        );
        println!(
            "  host RSS: {:.1} MiB at {:.1} s (first after warm-up), {:.1} MiB at {:.1} s (last with every viewer live), peak (VmHWM) {:.1} MiB",
            mib(rss_f),
            f.t,
            mib(rss_l),
            l.t,
            mib(get(&l.s, "hwm_kib"))
        );
        let slabs = slab_kib(&l.s, &f.s);
        let grown = rss_l as i64 - rss_f as i64;
        println!(
            "  of which the UDP endpoint's receive ring: {} slabs added ({:.1} MiB; a held datagram pins its slab and the ring never shrinks, see BENCHMARKS.md, Soak)",
            get(&l.s, "udp_rx_buffer_growth") - get(&f.s, "udp_rx_buffer_growth"),
            slabs as f64 / 1024.0
        );
        check(
            &mut failures,
            grown - slabs as i64 <= (a.rss_margin_mib * 1024) as i64,
            format!(
                "host RSS grew {:+.1} MiB after the warm-up, {:+.1} MiB besides the receive slabs (at most {} MiB)",
                grown as f64 / 1024.0,
                (grown - slabs as i64) as f64 / 1024.0,
                a.rss_margin_mib
            ),
        );
    } else {
        check(
            &mut failures,
            false,
            format!(
                "at least two samples after the {} s warm-up with all {viewers} viewers live (got {})",
                a.warmup,
                steady.len()
            ),
        );
    }
    println!(
        "  swarm CPU: {:.1}% of a core (all viewers, checking every byte)",
        swarm_cpu / soak_s * 100.0
    );
    let sum = |f: &dyn Fn(&ViewerResult) -> u64, ws: Option<bool>| -> u64 {
        results
            .iter()
            .filter(|r| ws.is_none_or(|w| r.ws == w))
            .map(f)
            .sum()
    };
    for (name, ws) in [("UDP", false), ("WebSocket", true)] {
        let n = results.iter().filter(|r| r.ws == ws).count();
        let min = results
            .iter()
            .filter(|r| r.ws == ws && r.error.is_none())
            .map(|r| r.delivered)
            .min()
            .unwrap_or(0);
        println!(
            "  {name}: {n} viewers, frames delivered {} lost {} (in {} Lost events) corrupted {} out of sequence {}; least delivered by one viewer {min} of {}; recovered by parity {}; duplicate shards dropped {}; late shards {}; inputs sent {}; connect ms max {:.0}",
            sum(&|r| r.delivered, Some(ws)),
            sum(&|r| r.lost, Some(ws)),
            sum(&|r| r.lost_events, Some(ws)),
            sum(&|r| r.corrupt, Some(ws)),
            sum(&|r| r.out_of_sequence, Some(ws)),
            a.frames,
            sum(&|r| r.stats.frames_recovered, Some(ws)),
            sum(&|r| r.stats.duplicate_shards, Some(ws)),
            sum(&|r| r.stats.late_shards, Some(ws)),
            sum(&|r| r.inputs_sent, Some(ws)),
            results
                .iter()
                .filter(|r| r.ws == ws)
                .map(|r| r.connect_ms)
                .fold(0.0, f64::max),
        );
    }
    println!(
        "  injected on UDP: {} datagrams received, {} dropped, {} duplicated, {} reordered",
        sum(&|r| r.fault.received, None),
        sum(&|r| r.fault.dropped, None),
        sum(&|r| r.fault.duplicated, None),
        sum(&|r| r.fault.reordered, None),
    );
    let h = |k: &str| get(&after_soak, k);
    println!(
        "  host: frames sent UDP {} WebSocket {}; sessions completed {}; losses the viewers reported {}; keyframe requests {}; loss reports {}; input events {}; retries sent {}; rate-limited {}; handshake failures {}; ends: bye {} error {} no answer {}",
        h("frames_sent_udp"),
        h("frames_sent_ws"),
        h("completed"),
        h("reported_lost"),
        h("keyframe_requests"),
        h("feedback"),
        h("inputs"),
        h("udp_retries_sent"),
        h("udp_rate_limited"),
        h("handshake_failures"),
        h("end_bye"),
        h("end_error"),
        h("end_no_answer"),
    );
    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    check(
        &mut failures,
        errors.is_empty(),
        format!(
            "every viewer connected and ended cleanly ({} errors{})",
            errors.len(),
            errors
                .first()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default()
        ),
    );
    check(
        &mut failures,
        sum(&|r| r.corrupt, None) == 0,
        "no frame corrupted".into(),
    );
    check(
        &mut failures,
        sum(&|r| r.out_of_sequence, None) == 0,
        "every viewer saw each index once, in order, as a frame or in a Lost report".into(),
    );
    let unaccounted = results
        .iter()
        .filter(|r| r.delivered + r.lost != u64::from(a.frames))
        .count();
    check(
        &mut failures,
        unaccounted == 0,
        format!(
            "every frame accounted for: delivered + reported lost == {} for every viewer ({unaccounted} viewers short)",
            a.frames
        ),
    );
    let host_sent = h("frames_sent_udp") + h("frames_sent_ws");
    let got = sum(&|r| r.delivered + r.lost, None);
    check(
        &mut failures,
        host_sent == got && host_sent == viewers * u64::from(a.frames),
        format!(
            "the host sent {host_sent} frames, the viewers accounted for {got} ({viewers} x {})",
            a.frames
        ),
    );
    let low_udp = results
        .iter()
        .filter(|r| !r.ws && (r.delivered as f64) < MIN_DELIVERY * f64::from(a.frames))
        .count();
    check(
        &mut failures,
        low_udp == 0,
        format!(
            "every UDP viewer got at least {:.0}% of its frames ({low_udp} below)",
            MIN_DELIVERY * 100.0
        ),
    );
    let short_ws = results
        .iter()
        .filter(|r| r.ws && r.delivered != u64::from(a.frames))
        .count();
    check(
        &mut failures,
        short_ws == 0,
        format!("every WebSocket viewer got every frame ({short_ws} short)"),
    );
    check(
        &mut failures,
        h("completed") == viewers,
        format!(
            "the host completed all {viewers} sessions ({})",
            h("completed")
        ),
    );

    // --- phase 2: connect cycles, in two halves: what the first half
    // leaves in the allocator is its high-water mark; what the second adds
    // on top of that is memory left behind.
    if a.cycles > 0 {
        println!(
            "\nconnect cycles: {} sessions in two halves, {} at a time",
            a.cycles, a.concurrency
        );
        let before = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        let half = a.cycles / 2;
        let mut cycles = run_cycles(&a, 0, half, &before).await?;
        let mid = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        cycles.extend(run_cycles(&a, half, a.cycles, &mid).await?);
        let after = wait_for(&a.status, Duration::from_secs(90), "quiet", quiet).await?;
        let bad: Vec<&ViewerResult> = cycles
            .iter()
            .filter(|(r, k, _)| {
                r.error.is_some() || r.corrupt > 0 || r.out_of_sequence > 0 || r.delivered != *k
            })
            .map(|(r, _, _)| r)
            .collect();
        let ws = cycles.iter().filter(|c| c.0.ws).count();
        let d = |k: &str| get(&after, k) as i64 - get(&before, k) as i64;
        println!(
            "  host before -> after the first half -> after the second: fds {} -> {} -> {}, tokio tasks {} -> {} -> {}, RSS {:.1} -> {:.1} -> {:.1} MiB (peak {:.1}); sessions accepted +{} UDP +{} WebSocket, handshake failures +{}, ends: bye +{} error +{} no answer +{}; UDP peers expired +{}, validations refused +{}, datagrams held by the 3x limit +{}",
            get(&before, "fds"),
            get(&mid, "fds"),
            get(&after, "fds"),
            get(&before, "tasks"),
            get(&mid, "tasks"),
            get(&after, "tasks"),
            mib(get(&before, "rss_kib")),
            mib(get(&mid, "rss_kib")),
            mib(get(&after, "rss_kib")),
            mib(get(&after, "hwm_kib")),
            d("accepted_udp"),
            d("accepted_ws"),
            d("handshake_failures"),
            d("end_bye"),
            d("end_error"),
            d("end_no_answer"),
            d("udp_peers_expired"),
            d("udp_validation_refused"),
            d("udp_tx_amplification_held"),
        );
        check(
            &mut failures,
            bad.is_empty(),
            format!(
                "every cycle connected and got its frames intact ({} of {} failed{})",
                bad.len(),
                cycles.len(),
                bad.first()
                    .map(|r| format!(", first: {:?}", r.error))
                    .unwrap_or_default()
            ),
        );
        check(
            &mut failures,
            get(&after, "fds") == get(&before, "fds") && get(&mid, "fds") == get(&before, "fds"),
            "no file descriptor left behind".into(),
        );
        check(
            &mut failures,
            get(&after, "tasks") == get(&before, "tasks")
                && get(&mid, "tasks") == get(&before, "tasks"),
            "no tokio task left behind".into(),
        );
        let slabs = slab_kib(&after, &mid);
        let grown = get(&after, "rss_kib") as i64 - get(&mid, "rss_kib") as i64;
        check(
            &mut failures,
            grown - slabs as i64 <= (a.cycle_rss_margin_mib * 1024) as i64,
            format!(
                "host RSS after the second half within {} MiB of after the first besides receive slabs ({:+.1} MiB, receive slabs {:+.1} MiB)",
                a.cycle_rss_margin_mib,
                grown as f64 / 1024.0,
                slabs as f64 / 1024.0
            ),
        );
        check(
            &mut failures,
            d("accepted_ws") == ws as i64,
            format!(
                "the host accepted each WebSocket cycle once (+{})",
                d("accepted_ws")
            ),
        );
    }
    println!();
    if failures.is_empty() {
        println!("soak: all checks passed");
        Ok(true)
    } else {
        println!("soak: {} checks FAILED", failures.len());
        Ok(false)
    }
}

/// Cycles `from..to`: connect, take a few frames, leave (one in ten
/// without a word); `concurrency` at a time.
async fn run_cycles(
    a: &Arc<Args>,
    from: u64,
    to: u64,
    before: &Status,
) -> Result<Vec<(ViewerResult, u64, bool)>, String> {
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(from));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (a, next) = (a.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= to {
                    break;
                }
                let m = mix(a.seed ^ 0xC1C1 ^ i);
                let frames = 1 + m % 8;
                let abrupt = (m >> 8).is_multiple_of(10);
                let r = if i.is_multiple_of(5) {
                    ws_viewer(a.clone(), Some(frames), abrupt, None).await
                } else {
                    // 64 source addresses: each sees a few handshakes a
                    // second, within the endpoint's per-address limit. Every
                    // cycle has its own port: a new client on the address
                    // and port of a session the host still holds (one that
                    // vanished, until its idle timeout) cannot connect, as
                    // the session drops its Hello (see BENCHMARKS.md, Soak).
                    let ip = source(100_000 + i % 64).ip();
                    let port = 20_000 + (i / 64) % 12_000;
                    udp_viewer(
                        a.clone(),
                        i,
                        SocketAddr::new(ip, port as u16),
                        false,
                        Some(frames),
                        abrupt,
                        None,
                    )
                    .await
                };
                out.push((r, frames, abrupt));
            }
            out
        }));
    }
    let mut cycles = Vec::new();
    for w in workers {
        cycles.extend(w.await.map_err(|e| format!("cycle task: {e}"))?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let ran = wait_for(&a.status, Duration::from_secs(5), "up", |_| true).await?;
    let cpu = (get(&ran, "cpu_ticks") - get(before, "cpu_ticks")) as f64 / TICKS;
    let ws = cycles.iter().filter(|c| c.0.ws).count();
    let abrupt = cycles.iter().filter(|c| c.2).count();
    println!(
        "  cycles {from}..{to}: {} ({} WebSocket, {} UDP; {abrupt} vanished without a Bye) in {secs:.1} s ({:.0}/s); host CPU {:.0} µs per cycle",
        cycles.len(),
        ws,
        cycles.len() - ws,
        cycles.len() as f64 / secs,
        cpu * 1e6 / cycles.len().max(1) as f64
    );
    Ok(cycles)
}
