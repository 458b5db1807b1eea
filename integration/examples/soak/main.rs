//! Load and soak of the host side (issue 16, part 3; run by `scripts/soak.sh`).
//!
//! ```text
//! soak host  --udp ADDR --ws ADDR --status FILE --frames N [--fps F]
//! soak swarm --udp ADDR --ws ADDR --status FILE --frames N [--fps F]
//!            [--udp-viewers 200] [--ws-viewers 50] [--cycles 10000]
//!            [--concurrency 32] [--warmup S] [--sample S] [--seed S]
//!            [--rss-margin-mib M] [--cycle-rss-margin-mib M]
//! soak rebind --udp ADDR --ws ADDR --status FILE --frames N
//! ```
//!
//! `host` is one process with one `UdpEndpoint` (with the session's
//! `RetryGate`, as `linkstream host` binds it) and one `WsServer`, and a
//! link-session `Host` per viewer with the default `HostConfig`. Every
//! session gets the same synthetic stream: `N` frames at `F` frames per
//! second, each frame's bytes derived from its index (a keyframe of 8000
//! bytes every 60 frames, 1000..1600 bytes between: about 0.34 Mbit/s), then
//! the session's `Bye`. The host rewrites `FILE` every 500 ms with its
//! counters, resident memory, open file descriptors, live tokio tasks and
//! CPU time (`key=value` words).
//!
//! `swarm` runs in another process:
//! 1. the soak: `--udp-viewers` UDP viewers, each through the fault
//!    injector (`link_types::fault`: loss, duplication, reordering drawn
//!    per viewer from `--seed`), and `--ws-viewers` WebSocket viewers, all
//!    at once. Every viewer checks each frame's bytes and that every index
//!    is either delivered or reported lost (`ClientEvent::Lost`), in order;
//!    it sends one input event a second. The host's memory and CPU are
//!    sampled every `--sample` seconds. Asserted: no corrupted frame, every
//!    frame accounted for (delivered + lost == N per viewer, and the sum
//!    equals the host's count of frames sent), at least 90% delivered per
//!    viewer (every frame on WebSocket), resident memory after the warm-up
//!    grows by at most `--rss-margin-mib` besides the receive slabs the
//!    UDP endpoint added (counted by the endpoint, printed apart: a known
//!    ratchet, see BENCHMARKS.md, Soak).
//! 2. the connect cycles: `--cycles` sessions (one in five over WebSocket),
//!    `--concurrency` at a time, each receiving a few frames and then
//!    closing (nine in ten) or vanishing without a word (one in ten, the
//!    host frees it after its idle timeout), in two halves. When the host
//!    is quiet again its file descriptors and tokio tasks must be what they
//!    were before the cycles, and its resident memory after the second
//!    half within `--cycle-rss-margin-mib` of after the first (the first
//!    sets the allocator's high-water mark; receive slabs apart, as above).
//!
//! `rebind` replays a bug the cycles found (BENCHMARKS.md, Soak; it
//! prints, it checks nothing; the session tests check the fix): a UDP
//! client that vanishes, then two new clients from the same address and
//! port against a running `host`. Each new client's Hello reaches the old
//! session; it used to drop them, so neither connected. Now the old
//! session ends as a restart once the vanished client was silent for the
//! host's `restart_grace`, and the new client gets a session of its own.
//!
//! One module per mode ([`host`], [`swarm`], [`rebind`]) and what they
//! share: the synthetic stream ([`frames`]), a viewer ([`viewer`]), the
//! host's status file ([`status`]) and its `/proc` counters ([`procfs`]).

mod frames;
mod host;
mod procfs;
mod rebind;
mod status;
mod swarm;
mod viewer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use host::host;
use rebind::rebind;
use swarm::swarm;

#[derive(Debug, Clone)]
struct Args {
    pub(crate) udp: SocketAddr,
    pub(crate) ws: SocketAddr,
    pub(crate) status: PathBuf,
    pub(crate) frames: u32,
    pub(crate) fps: u32,
    pub(crate) udp_viewers: u64,
    pub(crate) ws_viewers: u64,
    pub(crate) cycles: u64,
    pub(crate) concurrency: u64,
    pub(crate) warmup: f64,
    pub(crate) sample: f64,
    pub(crate) seed: u64,
    pub(crate) rss_margin_mib: u64,
    pub(crate) cycle_rss_margin_mib: u64,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut m: HashMap<&str, &str> = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        m.insert(k.trim_start_matches("--"), v);
    }
    fn val<T: std::str::FromStr>(
        m: &HashMap<&str, &str>,
        k: &str,
        d: Option<T>,
    ) -> Result<T, String> {
        match m.get(k) {
            Some(v) => v.parse().map_err(|_| format!("--{k} {v:?} is not valid")),
            None => d.ok_or(format!("--{k} is required")),
        }
    }
    let a = Args {
        udp: val(&m, "udp", None)?,
        ws: val(&m, "ws", None)?,
        status: val(&m, "status", None)?,
        frames: val(&m, "frames", None)?,
        fps: val(&m, "fps", Some(30))?,
        udp_viewers: val(&m, "udp-viewers", Some(200))?,
        ws_viewers: val(&m, "ws-viewers", Some(50))?,
        cycles: val(&m, "cycles", Some(10_000))?,
        concurrency: val(&m, "concurrency", Some(32))?,
        warmup: val(&m, "warmup", Some(60.0))?,
        sample: val(&m, "sample", Some(5.0))?,
        seed: val(&m, "seed", Some(16))?,
        rss_margin_mib: val(&m, "rss-margin-mib", Some(16))?,
        cycle_rss_margin_mib: val(&m, "cycle-rss-margin-mib", Some(16))?,
    };
    if a.fps == 0 || a.concurrency == 0 || a.sample <= 0.0 {
        return Err("--fps, --concurrency and --sample must be above 0".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match (
        args.get(1).map(String::as_str),
        parse(args.get(2..).unwrap_or(&[])),
    ) {
        (Some("host"), Ok(a)) => rt.block_on(host(&a)),
        (Some("swarm"), Ok(a)) => rt.block_on(swarm(Arc::new(a))),
        (Some("rebind"), Ok(a)) => rt.block_on(rebind(Arc::new(a))),
        (_, Err(e)) => Err(e),
        _ => Err("usage: soak host|swarm --udp ADDR --ws ADDR --status FILE --frames N ...".into()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
