#!/usr/bin/env bash
# The browser page (web/) in headless Chromium, driven over WebDriver
# (chromedriver) by web/tests/browser_page.py against a real
# `linkstream host --source testsrc`: load and decode, the burned-in index
# read from the canvas, a screenshot, 200 input events exactly once and in
# order, a page opened mid-stream, reconnection after the host goes away,
# and https/wss with --self-signed; then web/examples/embed.html, a page of
# another origin (its own HTTP server on another port) using the viewer's
# JavaScript API: frames, events, stats() and close(). The screenshot is
# saved to $CARGO_TARGET_DIR/browser-page/browser-page.png (target/ by
# default). Then the API's own tests (web/tests/viewer.rs, wasm-bindgen-test
# in headless Chromium) against a host started here.
#
# Installs what is missing: chromium + chromium-driver and python3 (apt),
# the wasm32 target (the linkstream binary embeds the page), wasm-bindgen-cli
# at the exact version of the wasm-bindgen crate in Cargo.lock (its test
# runner).
# Extra arguments go to the driver (e.g. --measure testsrc:1920x1080@60,
# --only-embed); with arguments, the API tests are not run.
set -euo pipefail
cd "$(dirname "$0")/.."

WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
    || ! command -v python3 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver python3 >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $WB_VERSION\$"; then
    cargo install -q wasm-bindgen-cli --version "$WB_VERSION"
fi

target_dir=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p linkstream
python3 web/tests/browser_page.py \
    --binary "$target_dir/release/linkstream" \
    --out "$target_dir/browser-page" \
    --chromedriver "$(command -v chromedriver)" \
    --chromium "$(command -v chromium)" \
    "$@"
[ $# -eq 0 ] || exit 0

# The viewer API's tests: LinkstreamViewer in the browser against a host.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
hlog=$(mktemp)
"$target_dir/release/linkstream" host --ws "127.0.0.1:$port" --source testsrc:1280x720@30 >"$hlog" 2>&1 &
host_pid=$!
trap 'kill $host_pid 2>/dev/null || true; rm -f "$hlog"' EXIT
for _ in $(seq 1 300); do
    grep -q 'open in a browser:' "$hlog" && break
    kill -0 $host_pid 2>/dev/null || { echo "host exited:"; cat "$hlog"; exit 1; }
    sleep 0.1
done
grep -q 'open in a browser:' "$hlog" || { echo "host did not start:"; cat "$hlog"; exit 1; }
echo "viewer API tests against the host on 127.0.0.1:$port"
status=0
LINKSTREAM_HOST=127.0.0.1:$port \
    CHROMEDRIVER=${CHROMEDRIVER:-$(command -v chromedriver)} \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300} \
    cargo test -p linkstream-web --target wasm32-unknown-unknown --test viewer -- --nocapture \
    || status=$?
[ $status -eq 0 ] || { echo "host said:"; tail -n 40 "$hlog"; }
exit $status
