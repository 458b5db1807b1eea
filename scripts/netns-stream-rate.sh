#!/usr/bin/env bash
# A WebSocket viewer behind a slow path, with the real programs: the
# `linkstream host` (testsrc 1280x720@30, asked for BITRATE) in one network
# namespace, one `linkstream client` over ws:// in another, and a token
# bucket (tbf) of RATE on the host's side of the viewer's veth. The host's
# estimate on the stream link (rules session.bwe.stream.*) must bring the
# encoder down to the path.
#
# Prints the viewer's numbers (frames decoded, latency p50/p99, longest
# gap, the encoder's bitrate at the end). Checks (not timings): the
# encoder's bitrate at the end is below the path's rate, and the viewer
# decoded frames with no decode error or index mismatch.
#
# BIN=path runs that binary instead of building this tree's (to measure
# another build side by side). NOCHECK=1 only prints. Addresses from
# 198.18.0.0/15; namespaces and veths carry this shell's pid and are
# removed on exit. Needs root, iproute2 (ip, tc) and jq. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-12}
BITRATE=${BITRATE:-8000000}
RATE=${RATE:-3mbit}
RATE_BPS=${RATE_BPS:-3000000}
HNS=srate-h$$
CNS=srate-c$$
WORK=$(mktemp -d)
PIDS=()

source scripts/lib/netns.sh

cleanup() {
    kill_pids
    ns_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT

need_tools netns-stream-rate ip tc jq

if [[ -z "${BIN:-}" ]]; then
    cargo build --release -q -p linkstream
    BIN="${CARGO_TARGET_DIR:-target}/release/linkstream"
fi
# A private copy: other builds in a shared target directory cannot swap it.
cp "$BIN" "$WORK/linkstream"
BIN="$WORK/linkstream"

ns_add "$HNS" "$CNS"
ns_pair "$HNS" "srh$$" 198.18.200.1/30 "$CNS" "src$$" 198.18.200.2/30
ip netns exec "$HNS" tc qdisc add dev "srh$$" root tbf rate "$RATE" burst 16kb limit 64kb

ip netns exec "$HNS" "$BIN" host --ws 0.0.0.0:7001 --source testsrc:1280x720@30 \
    --bitrate "$BITRATE" --seconds "$SECS" --json >"$WORK/host.json" 2>"$WORK/host.err" &
host_pid=$!
PIDS+=("$host_pid")
for _ in $(seq 100); do
    grep -q "join with" "$WORK/host.err" 2>/dev/null && break
    sleep 0.1
done
ip netns exec "$CNS" "$BIN" client ws://198.18.200.1:7001 --json --timeout 5 \
    >"$WORK/client.json" 2>"$WORK/client.err" &
client_pid=$!
PIDS+=("$client_pid")
status=0
wait "$client_pid" || status=$?
wait "$host_pid" || status=$?
if [[ $status != 0 ]]; then
    tail -n 5 "$WORK"/*.err >&2
    echo "netns-stream-rate: a process failed" >&2
    exit 1
fi
c="$WORK/client.json"
v=$(jq '.viewers[0]' "$WORK/host.json")
printf 'netns-stream-rate: %s through %s for %s s: host sent %s frames, skipped %s (%s skip events); viewer decoded %s, latency p50/p99 %.1f/%.1f ms, longest gap %.0f ms, %s gaps over 250 ms, received %.2f Mbit/s; encoder at %s bit/s at the end\n' \
    "$BITRATE" "$RATE" "$SECS" "$(jq .frames_sent <<<"$v")" "$(jq .frames_skipped <<<"$v")" \
    "$(jq .skip_events <<<"$v")" "$(jq .frames_decoded "$c")" "$(jq .latency_ms.p50 "$c")" \
    "$(jq .latency_ms.p99 "$c")" "$(jq .longest_gap_ms "$c")" "$(jq .gaps_count "$c")" \
    "$(jq .bitrate_mbps "$c")" "$(jq .bitrate_bps "$WORK/host.json")"
if [[ -n "${NOCHECK:-}" ]]; then
    exit 0
fi
jq -e ".bitrate_bps < $RATE_BPS" "$WORK/host.json" >/dev/null ||
    { echo "netns-stream-rate: FAIL: the encoder is at $(jq .bitrate_bps "$WORK/host.json") bit/s behind a $RATE path" >&2; exit 1; }
jq -e '.frames_decoded > 0 and .decode_errors == 0 and .index_mismatches == 0' "$c" >/dev/null ||
    { echo "netns-stream-rate: FAIL: the viewer's pictures do not check" >&2; exit 1; }
echo "netns-stream-rate: passed"
