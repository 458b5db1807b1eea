#!/usr/bin/env bash
# Two UDP viewers of one `linkstream host` (testsrc 1280x720@30, --bitrate
# 8000000, 2 temporal layers, 2 renditions), each in its own network namespace, one
# behind a tbf of SLOW_RATE (2 Mbit/s) and one of FAST_RATE (100 Mbit/s)
# on the host's side of its veth (issue 21: a slow viewer never lowers a
# fast viewer's quality).
#
# Run A (SECONDS_PER_RUN s): the fast viewer alone.
# Run B: the fast viewer and the slow one.
# Bounds (the issue's): the fast viewer's received bitrate within 10 % and
# its mean PSNR within 1 dB of run A; the slow viewer no gap between
# displayed pictures over 300 ms and at least 15 pictures displayed a
# second; every picture of both checks (index, no decode error).
#
# Addresses from 198.18.0.0/15; everything is removed on
# exit. Needs root, iproute2 (ip, tc) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
BITRATE=${BITRATE:-8000000}
SLOW_RATE=${SLOW_RATE:-2mbit}
FAST_RATE=${FAST_RATE:-100mbit}
HOST_NS=layhub-h$$
CLIENTS=(layhub-c1-$$ layhub-c2-$$)
VH=lyh$$- VC=lyc$$-
WORK=$(mktemp -d)
PIDS=()

source scripts/lib/netns.sh
cleanup() {
    kill_pids
    ns_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT

need_tools netns-layers ip tc jq

cargo build --release -q -p linkstream
BIN="$WORK/linkstream"
cp "${CARGO_TARGET_DIR:-target}/release/linkstream" "$BIN"

ns_star "$HOST_NS" 198.18 "$VH" "$VC" "${CLIENTS[@]}"
# Viewer 1 (fast) and viewer 2 (slow): a token bucket on the host's side.
ip netns exec "$HOST_NS" tc qdisc add dev "${VH}1" root tbf rate "$FAST_RATE" burst 256kb latency 50ms
ip netns exec "$HOST_NS" tc qdisc add dev "${VH}2" root tbf rate "$SLOW_RATE" burst 16kb latency 50ms

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/key"
URLS=("udp://198.18.1.1:7000" "udp://198.18.2.1:7000")

fail() { echo "netns-layers: FAIL: $*" >&2; exit 1; }

# run NAME VIEWERS...: the host for SECONDS_PER_RUN s, the viewers until its Bye.
run() {
    local name=$1
    shift
    ip netns exec "$HOST_NS" "$BIN" host --udp 0.0.0.0:7000 \
        --psk-file "$WORK/key" --source testsrc:1280x720@30 --bitrate "$BITRATE" --renditions 2 \
        --seconds "$((SECONDS_PER_RUN + 1))" --json >"$WORK/$name-host.json" 2>"$WORK/$name-host.err" &
    local host_pid=$!
    PIDS+=("$host_pid")
    for _ in $(seq 50); do
        grep -q "join with" "$WORK/$name-host.err" 2>/dev/null && break
        sleep 0.1
    done
    local pids=() i
    for i in "$@"; do
        ip netns exec "${CLIENTS[$((i - 1))]}" "$BIN" client "${URLS[$((i - 1))]}" \
            --psk-file "$WORK/key" --json --timeout 5 \
            >"$WORK/$name-c$i.json" 2>"$WORK/$name-c$i.err" &
        pids+=($!)
        PIDS+=($!)
    done
    local failed=0 p
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
    done
    wait "$host_pid" || failed=1
    if [[ $failed != 0 ]]; then
        tail -n 5 "$WORK/$name"-*.err >&2
        fail "run $name: a process failed"
    fi
}

show() {
    local c="$WORK/$1-c$2.json"
    jq -r --arg who "run $1 viewer $2" '"  \($who): \(.bitrate_mbps * 100 | round / 100) Mbit/s received, PSNR mean \(.psnr_db_mean * 100 | round / 100) dB, \(.fps_displayed * 10 | round / 10) pictures/s, longest gap \(.longest_gap_ms) ms, layer TL0..TL\(.layer), rendition \(.rendition) (\(.rendition_changes) changes, pictures per rendition \(.frames_by_rendition)), own target \(.viewer_target_mbps) Mbit/s (encoder \(.target_mbps)), \(.keyframes) keyframes, \(.recovery_frames) recovery frames, \(.frames_broken) broken, \(.frames_lost) lost, decode errors \(.decode_errors), index mismatches \(.index_mismatches)"' "$c"
    jq -r '"    from \(.settled.after_s) s after its first picture: \(.settled.fps_displayed * 10 | round / 10) pictures/s, longest gap \(.settled.longest_gap_ms) ms, latency p99 \(.settled.latency_ms.p99) ms"' "$c"
    jq -e '.decode_errors == 0 and .index_mismatches == 0 and .frames_decoded > 0' "$c" >/dev/null ||
        fail "run $1 viewer $2: its pictures do not check"
}

start=$(date +%s)
echo "netns-layers: run A: the fast viewer alone ($FAST_RATE), ${SECONDS_PER_RUN} s"
run A 1
show A 1
echo "netns-layers: run B: the fast viewer and a slow one ($SLOW_RATE)"
run B 1 2
show B 1
show B 2
jq -r '.viewers[] | "  host: viewer \(.id): rendition \(.rendition) (\(.rendition_changes) changes), layer TL0..TL\(.layer), target \(.target_bps) bit/s, sent \(.frames_sent), \(.frames_filtered) of higher layers not sent, \(.frames_skipped + .frames_skipped_budget) skipped, \(.recovery_frames_sent) recovery frames and \(.keyframes_sent) keyframes sent"' "$WORK/B-host.json"
jq -r '"  host: encoder at \(.bitrate_bps) bit/s at the end, \(.keyframes) keyframes, \(.recovery_frames) recovery frames in \(.frames_encoded) frames"' "$WORK/B-host.json"
jq -r '.renditions[] | select(.frames_encoded > 0) | "  host: rendition \(.rendition) \(.width)x\(.height): \(.frames_encoded) frames, \(.keyframes) keyframes, \(.encoded_mbps * 100 | round / 100) Mbit/s, encode p50 \(.encode_ms.p50) ms"' "$WORK/B-host.json"

failed=0
a_rate=$(jq .bitrate_mbps "$WORK/A-c1.json")
b_rate=$(jq .bitrate_mbps "$WORK/B-c1.json")
a_psnr=$(jq .psnr_db_mean "$WORK/A-c1.json")
b_psnr=$(jq .psnr_db_mean "$WORK/B-c1.json")
jq -ne "($b_rate - $a_rate) | fabs <= 0.1 * $a_rate" >/dev/null ||
    { echo "netns-layers: FAIL: the fast viewer's bitrate $b_rate Mbit/s next to the slow one, $a_rate alone" >&2; failed=1; }
jq -ne "($b_psnr - $a_psnr) | fabs <= 1" >/dev/null ||
    { echo "netns-layers: FAIL: the fast viewer's PSNR $b_psnr dB next to the slow one, $a_psnr alone" >&2; failed=1; }
jq -e '.longest_gap_ms <= 300' "$WORK/B-c2.json" >/dev/null ||
    { echo "netns-layers: FAIL: the slow viewer's longest gap $(jq .longest_gap_ms "$WORK/B-c2.json") ms" >&2; failed=1; }
jq -e '.fps_displayed >= 15' "$WORK/B-c2.json" >/dev/null ||
    { echo "netns-layers: FAIL: the slow viewer displayed $(jq .fps_displayed "$WORK/B-c2.json") pictures/s" >&2; failed=1; }
[[ $failed == 0 ]] || exit 1
echo "netns-layers: passed in $(($(date +%s) - start)) s"
