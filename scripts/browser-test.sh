#!/usr/bin/env bash
# The WebSocket link in headless Chromium: starts the native test peer,
# then runs link-ws's browser tests (compiled with the peer's address) with
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
log=$(mktemp)
"$target_dir/$profile/examples/test_peer" browser 127.0.0.1:0 >"$log" 2>&1 &
peer_pid=$!
trap 'kill $peer_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    grep -q '^LISTENING ' "$log" && break
    sleep 0.1
done
addr=$(sed -n 's/^LISTENING //p' "$log")
[ -n "$addr" ] || { echo "test peer did not start:"; cat "$log"; exit 1; }
echo "browser test peer on $addr"

export LINK_WS_PEER=$addr
export CHROMEDRIVER=${CHROMEDRIVER:-$(command -v chromedriver)}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
out=$(mktemp)
status=0
cargo test "${cargo_profile[@]}" -p link-ws --target wasm32-unknown-unknown --test browser -- --nocapture 2>&1 | tee "$out" || status=$?
grep -o 'BROWSER_RX {.*}' "$out" || true
rm -f "$out"
exit $status
