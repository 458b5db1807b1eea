#!/usr/bin/env bash
# link-video's examples against each other: `minimal_host` (test pattern,
# OpenH264, the hub) on a loopback UDP port and `minimal_viewer` decoding
# 90 frames from it, each picture's burned-in index checked against its
# envelope. Fails unless every frame decodes with its index, the viewer's
# session ends cleanly and the host served exactly that one viewer. About
# 5 s once built.
set -euo pipefail
cd "$(dirname "$0")/.."

FRAMES="${FRAMES:-90}"
cargo build --release -q -p link-video --example minimal_host --example minimal_viewer
bin="${CARGO_TARGET_DIR:-target}/release/examples"
work=$(mktemp -d)
host=""
cleanup() {
    [ -n "$host" ] && kill "$host" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "video examples: $*" >&2
    echo "--- host stderr" >&2
    cat "$work/host.err" >&2 || true
    exit 1
}

"$bin/minimal_host" 127.0.0.1:0 60 >"$work/host.out" 2>"$work/host.err" &
host=$!
addr=""
for _ in $(seq 100); do
    addr=$(sed -n 's|^listening on udp://||p' "$work/host.out")
    [ -n "$addr" ] && break
    kill -0 "$host" 2>/dev/null || fail "minimal_host exited early"
    sleep 0.1
done
[ -n "$addr" ] || fail "minimal_host printed no address within 10 s"

"$bin/minimal_viewer" "$addr" "$FRAMES" >"$work/viewer.out" 2>"$work/viewer.err" ||
    fail "minimal_viewer failed: $(cat "$work/viewer.err")"
cat "$work/viewer.out"
grep -qx "viewer: $FRAMES frames decoded, $FRAMES indices match" "$work/viewer.out" ||
    fail "the viewer did not decode $FRAMES frames with matching indices"

# The host ends once its viewer has left.
wait "$host" || fail "minimal_host failed"
host=""
cat "$work/host.out"
grep -q ', 1 viewers joined, 0 handshakes failed$' "$work/host.out" ||
    fail "the host did not serve exactly one viewer"
echo "video examples: ok"
