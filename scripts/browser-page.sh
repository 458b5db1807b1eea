#!/usr/bin/env bash
# The browser page (web/) in headless Chromium, driven over WebDriver
# (chromedriver) by web/tests/browser_page.py against a real
# `linkstream host --source testsrc`: load and decode, the burned-in index
# read from the canvas, a screenshot, 200 input events exactly once and in
# order, a page opened mid-stream, reconnection after the host goes away,
# and https/wss with --self-signed. The screenshot is saved to
# $CARGO_TARGET_DIR/browser-page/browser-page.png (target/ by default).
#
# Installs what is missing: chromium + chromium-driver and python3 (apt),
# the wasm32 target (the linkstream binary embeds the page).
# Extra arguments go to the driver (e.g. --measure testsrc:1920x1080@60).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
    || ! command -v python3 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver python3 >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

target_dir=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p linkstream
exec python3 web/tests/browser_page.py \
    --binary "$target_dir/release/linkstream" \
    --out "$target_dir/browser-page" \
    --chromedriver "$(command -v chromedriver)" \
    --chromium "$(command -v chromium)" \
    "$@"
