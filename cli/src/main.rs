//! `linkstream`: the command line of linkstream.
//!
//! - `linkstream demo`: synthetic frames from a host to a client over each
//!   link in turn, as a table (or JSON).
//! - `linkstream capture`: raw I420 frames (a test pattern or a Y4M file)
//!   straight into shared-memory slots; spawned by the host.
//! - `linkstream host`: encodes the captured frames (H.264) and serves them
//!   to many viewers over UDP and WebSocket, one session each.
//! - `linkstream client URL`: a native viewer that decodes, checks the
//!   pictures and reports quality and latency by stage.

mod capture;
mod client;
mod demo;
mod host;
mod progress;
mod report;
mod util;
mod workload;
mod x11pattern;

mod web_assets;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// linkstream: low-latency streaming over UDP, shared memory and WebSocket.
#[derive(Debug, Parser)]
#[command(name = "linkstream", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream synthetic frames host -> client over UDP (with loss, FEC and
    /// AES-GCM), shared memory (two processes) and WebSocket, and print a table.
    Demo(demo::DemoArgs),
    /// Encode captured frames (H.264) and serve them to viewers over UDP
    /// and WebSocket, one session each.
    Host(host::HostArgs),
    /// Watch a host's stream: decode, check the pictures, report quality
    /// and latency by stage.
    Client(client::ClientArgs),
    /// Capture raw I420 frames into shared memory for a host (spawned by
    /// `linkstream host`; or connect to one with --connect).
    Capture(capture::CaptureArgs),
    /// (internal) draw the test pattern full-screen on an X display (the
    /// X11 source's test).
    #[command(name = "__x11-pattern", hide = true)]
    X11Pattern(x11pattern::PatternArgs),
    /// (internal) the demo's shared-memory client process.
    #[command(name = "__shm-client", hide = true)]
    ShmClient {
        /// The largest frame, in bytes.
        max_frame: usize,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; errors name
            // the problem and show the usage.
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            let mut cmd = <Cli as clap::CommandFactory>::command();
            cmd.build();
            let sub = std::env::args().nth(1).unwrap_or_default();
            let usage = match cmd.find_subcommand_mut(&sub) {
                Some(sub) => sub.render_usage(),
                None => cmd.render_usage(),
            };
            eprintln!("\n{usage}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linkstream: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match cli.command {
        Command::Demo(args) => rt.block_on(demo::run(args)),
        Command::Host(args) => rt.block_on(host::run(args)),
        Command::Client(args) => rt.block_on(client::run(args)),
        Command::Capture(args) => rt.block_on(capture::run(args)),
        Command::ShmClient { max_frame } => rt.block_on(demo::shm_child(max_frame)),
        Command::X11Pattern(args) => x11pattern::run(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkstream: {e}");
            ExitCode::FAILURE
        }
    }
}
