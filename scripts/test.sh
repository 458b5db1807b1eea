#!/usr/bin/env bash
# The project's one test command: formatting, lints, every test, the wasm32
# build check and the spec coverage gate. Installs what a fresh machine lacks.
# Idempotent; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Build output of a cold run: about 10 GiB under target/ (see the end).
# Printed first so that a full disk is the first thing a failed log shows.
step "free disk space"
df -h . | sed -n 2p

step "system packages (nftables, iproute2 for the UDP loss and pacing tests, python3 for the pacing test's checks, nasm for OpenH264's SIMD code, jq for the video test, xvfb for the X11 source's tests)"
if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1 || ! command -v nasm >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1 || ! command -v Xvfb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nftables iproute2 python3 nasm jq xvfb >/dev/null
fi
command -v Xvfb >/dev/null || { echo "Xvfb is missing after installing xvfb" >&2; exit 1; }

step "toolchain: what rust-toolchain.toml names (1.95.0, rustfmt, clippy, the wasm32 target); nothing when present"
rustup toolchain install

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (workspace)"
cargo test --workspace

step "documentation: cargo doc for the workspace with -D warnings (a broken intra-doc link fails)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# Every crate not marked `publish = false` (the libraries; a new one is
# picked up by itself), packaged and verified together: each .crate is
# built on its own, and the unpublished workspace crates it depends on
# resolve through cargo's local overlay of the others. About 3 CPU-minutes
# cold (its dependencies, in target/package), 7 CPU-seconds warm.
step "crates.io packaging: cargo package (verified) for every publishable crate"
mapfile -t publishable < <(cargo metadata --no-deps --format-version 1 --locked |
    jq -r '.packages[] | select(.publish != []) | .name')
(( ${#publishable[@]} > 0 )) || { echo "FAILED: no publishable crate found" >&2; exit 1; }
echo "publishable: ${publishable[*]}"
cargo package --locked --allow-dirty "${publishable[@]/#/--package=}"

step "wasm32: link-types, the session, link-video's core and the browser WebSocket link build; clippy on the wasm code"
cargo check -p link-types --target wasm32-unknown-unknown
cargo check -p link-session --target wasm32-unknown-unknown
cargo clippy -p link-session --target wasm32-unknown-unknown -- -D warnings
cargo build -p link-ws --target wasm32-unknown-unknown
LINK_WS_PEER=127.0.0.1:1 cargo clippy -p link-ws --target wasm32-unknown-unknown --lib --tests -- -D warnings
cargo clippy -p linkstream-web --target wasm32-unknown-unknown -- -D warnings
cargo check -p link-video --target wasm32-unknown-unknown --no-default-features
cargo clippy -p link-video --target wasm32-unknown-unknown --no-default-features -- -D warnings

step "spec coverage"
cargo test -p link-spec --test coverage -- --nocapture every_rule_is_implemented_and_verified

step "AddressSanitizer (nightly): link-udp and link-shm, both processes"
bash scripts/sanitize.sh

step "Miri (nightly): the shared-memory ring protocol on heap memory"
bash scripts/miri.sh

step "fuzzing (nightly, cargo-fuzz): session client, host, handshake, wire headers, shm offer and ring; a crash fails"
(cd fuzz && cargo fmt --check &&
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target}" cargo clippy -q --all-targets -- -D warnings)
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz.sh

step "UDP under real packet loss (network namespaces, nftables)"
LOSS=10 bash scripts/netns-loss.sh

step "address validation under a spoofed flood: 30,000 forged Hellos from 1,000 addresses while a real client streams; <= 3x amplification, connect, no lost frame, bounded RSS (network namespaces, nftables, raw sockets)"
COUNT=30000 FRAMES=120 bash scripts/netns-flood.sh

step "pacing on a real path: link-session over UDP through a tbf bottleneck (network namespaces)"
command -v python3 >/dev/null || { echo "python3 is missing (needed by scripts/netns-pacing.sh)" >&2; exit 1; }
# Cases (a) 20 Mbit/s through 40, (b) 50 through 200 with a 5 ms queue,
# (c) a target-following stream through a 50 -> 10 Mbit/s step, (d) the
# ramp, (e) the share beside a TCP bulk flow (about 95 s).
bash scripts/netns-pacing.sh quick a b c d e

step "pacing grid, short (issue 21 item 4): 20 Mbit/s fixed through 40 Mbit/s, tbf bucket/queue 8 KB/10 ms, 32 KB/50 ms, 64 KB/20 ms, 10 s each: 0 frames lost (about 40 s; the 9-cell grid, which still loses 1-8 frames in one or two cells a run, is bash scripts/netns-pacing.sh f)"
bash scripts/netns-pacing.sh quick f:8:10 f:32:50 f:64:20

step "WebSocket link in headless Chromium (conformance suite and browser tests)"
bash scripts/browser-test.sh

step "browser page in headless Chromium over WebDriver against a real host: decode, canvas index, screenshot, input, mid-stream join, reconnect, wss with --self-signed; a page of another origin using the viewer API (events, stats, close); the API's wasm-bindgen tests"
bash scripts/browser-page.sh

step "Autobahn WebSocket test cases (kosoku) against our server and our client"
bash scripts/autobahn.sh

step "shared memory: capture -> encoder example across two processes (checksums checked)"
report=$(cargo run --release -q -p link-shm --example capture_encoder -- --frames 120)
echo "$report"
grep -q ' 0 bad checksums' <<<"$report"
grep -q '^encoder: 120 frames' <<<"$report"

step "video across network namespaces: host and capture in one, viewers in others (UDP and WebSocket, 720p30 at 4 Mbit/s, a throttled viewer)"
bash scripts/netns-video.sh

step "a WebSocket viewer behind a 3 Mbit/s path with the host asking 8: the stream link's estimate brings the encoder below the path; every picture checks; from 3 s after the first picture latency p99 < 200 ms, no gap over 300 ms, >= 15 pictures a second (network namespaces, tbf; about 20 s)"
bash scripts/netns-stream-rate.sh


step "reconnect and resume across network namespaces: a viewer's veth down for 2 s (it resumes in its session, the other viewer unaffected), a viewer killed and restarted (its old session timed out and counted)"
bash scripts/netns-reconnect.sh

step "linkstream demo (the README's run command): UDP with loss and AES-GCM, shared memory across two processes, WebSocket, the video pipeline"
cargo run --release -q -p linkstream -- demo --seconds 3

step "load and soak, short version: one host, 200 UDP viewers with loss/duplication/reordering and 50 WebSocket viewers with TCP loss for 12 s (no frame corrupted, every frame accounted for, RSS flat), then 500 connect cycles (no fd, task or memory left behind); the 10-minute run is bash scripts/soak.sh"
bash scripts/soak.sh --short

step "video encoder benchmark smoke run (numbers are not checked here)"
cargo run --release -q -p link-video --example encoder_fps -- --frames 10 >/dev/null

step "link-video examples: minimal_host and minimal_viewer over loopback UDP, 90 frames decoded with their burned-in index (about 5 s once built)"
bash scripts/video-examples.sh

step "benchmark harness smoke run (numbers are not checked here)"
cargo run --release -q -p link-bench -- memory --quick --json --rounds 1 >/dev/null
cargo run --release -q -p link-bench -- udp --quick --json --rounds 1 >/dev/null
cargo run --release -q -p link-bench -- ws --quick --json --rounds 1 >/dev/null
cargo run --release -q -p link-bench -- shm --quick --json --rounds 1 >/dev/null
cargo run --release -q -p link-bench -- session --quick --json --rounds 1 >/dev/null
cargo run --release -q -p link-bench -- handoff --quick --json --rounds 1 >/dev/null

step "host CPU per viewer benchmark smoke run: 1 and 2 viewers, 2 s windows (numbers are not checked; every viewer's frames are)"
bash scripts/bench-viewers.sh --viewers "1 2" --window 2 --warm 1 >/dev/null

step "build output left by this run"
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
df -h . | sed -n 2p

printf '\nall checks passed\n'
