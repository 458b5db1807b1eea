#!/usr/bin/env bash
# The WebSocket link in headless Chromium: starts the native test peers,
# then runs link-ws's browser tests and link-integration's browser session
# test (each compiled with its peer's address) with
# wasm-bindgen-test-runner and chromedriver. Installs what is missing:
# chromium + chromium-driver (apt), wasm-bindgen-cli at the exact version of
# the wasm-bindgen crate in Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $WB_VERSION\$"; then
    cargo install -q wasm-bindgen-cli --version "$WB_VERSION"
fi

# RELEASE=1 builds the peer and the wasm tests optimised (for the
# throughput number in BENCHMARKS.md); the default is a debug build.
profile=debug
cargo_profile=()
if [ "${RELEASE:-0}" = 1 ]; then
    profile=release
    cargo_profile=(--release)
fi
target_dir=${CARGO_TARGET_DIR:-target}
cargo build -q "${cargo_profile[@]}" -p link-ws --example test_peer
cargo build -q "${cargo_profile[@]}" -p link-integration --example browser_session_peer
log=$(mktemp)
slog=$(mktemp)
"$target_dir/$profile/examples/test_peer" browser 127.0.0.1:0 >"$log" 2>&1 &
peer_pid=$!
"$target_dir/$profile/examples/browser_session_peer" 127.0.0.1:0 >"$slog" 2>&1 &
session_pid=$!
trap 'kill $peer_pid $session_pid 2>/dev/null || true; rm -f "$log" "$slog"' EXIT
listening() {
    for _ in $(seq 1 100); do
        grep -q '^LISTENING ' "$1" && break
        sleep 0.1
    done
    sed -n 's/^LISTENING //p' "$1"
}
addr=$(listening "$log")
[ -n "$addr" ] || { echo "test peer did not start:"; cat "$log"; exit 1; }
saddr=$(listening "$slog")
[ -n "$saddr" ] || { echo "browser session peer did not start:"; cat "$slog"; exit 1; }
echo "browser test peer on $addr, session peer on $saddr"

export LINK_WS_PEER=$addr
export LINK_SESSION_PEER=$saddr
export CHROMEDRIVER=${CHROMEDRIVER:-$(command -v chromedriver)}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
out=$(mktemp)
status=0
cargo test "${cargo_profile[@]}" -p link-ws --target wasm32-unknown-unknown --test browser -- --nocapture 2>&1 | tee "$out" || status=$?
grep -o 'BROWSER_RX {.*}' "$out" || true
rm -f "$out"
# The streaming session over the browser link (above every layer, so in
# link-integration; see tests/tests/layering.rs).
cargo test "${cargo_profile[@]}" -p link-integration --target wasm32-unknown-unknown --test browser_session -- --nocapture || status=$?
if [ -s "$slog" ]; then
    echo "browser session peer said:"
    cat "$slog"
fi
exit $status
