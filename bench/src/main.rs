//! `link-bench <suite> [--quick] [--json]`: side-by-side benchmarks.
//!
//! Each case runs our code and its baseline alternately in this one process,
//! several rounds, and reports the medians and `ratio = ours / baseline`.
//! With `--json`, one JSON object per line:
//! `{"suite","case","metric","unit","ours","baseline","baseline_name","ratio","better"}`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod handoff;
mod harness;
mod memory;
mod session;
mod shm;
mod udp;
mod ws;

use std::process::ExitCode;

use harness::Runner;

const SUITES: &[&str] = &["memory", "udp", "ws", "shm", "session", "handoff"];

fn usage() -> String {
    format!(
        "usage: link-bench <suite> [--quick] [--json] [--rounds N] [--case NAME] [--side ours|baseline]\nsuites: {}\n--side: run one side only (for a profiler such as callgrind; no ratio is reported)",
        SUITES.join(", ")
    )
}

fn main() -> ExitCode {
    let mut suite = None;
    let mut quick = false;
    let mut json = false;
    let mut rounds = None;
    let mut only = None;
    let mut side = None;
    if std::env::args().nth(1).as_deref() == Some("__shm-child") {
        // The second process of the `shm` suite.
        shm::child(&std::env::args().nth(2).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("__handoff-child") {
        // The writer process of the `handoff` suite.
        handoff::child(&std::env::args().skip(2).collect::<Vec<_>>());
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "--rounds" => match args
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
            {
                Some(n) => rounds = Some(n),
                None => {
                    eprintln!("--rounds takes a positive whole number\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "--case" => match args.next() {
                Some(c) => only = Some(c),
                None => {
                    eprintln!("--case takes a case name\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "--side" => match args.next().as_deref() {
                Some("ours") => side = Some(harness::Side::Ours),
                Some("baseline") => side = Some(harness::Side::Baseline),
                _ => {
                    eprintln!("--side takes `ours` or `baseline`\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            s if suite.is_none() && !s.starts_with('-') => suite = Some(s.to_owned()),
            other => {
                eprintln!("unexpected argument `{other}`\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    let Some(suite) = suite else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let rounds = rounds.unwrap_or(if quick { 3 } else { 7 });
    let mut runner = Runner::new(&suite, rounds, json);
    runner.only = only;
    runner.side = side;
    match suite.as_str() {
        "memory" => memory::run(&mut runner, quick),
        "udp" => udp::run(&mut runner, quick),
        "ws" => ws::run(&mut runner, quick),
        "shm" => shm::run(&mut runner, quick),
        "session" => session::run(&mut runner, quick),
        "handoff" => handoff::run(&mut runner, quick),
        other => {
            eprintln!("unknown suite `{other}`\n{}", usage());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
