#!/usr/bin/env bash
# Load and soak of the host side (issue 16, part 3): one host process (one
# UdpEndpoint, one WsServer, a link-session Host per viewer) and a viewer
# swarm in another process (integration/examples/soak/main.rs says what
# each checks):
#   - the soak: 200 UDP viewers through the fault injector (loss 1-5%,
#     duplication 0-2%, reordering 0-5%, seeded per viewer) and 50
#     WebSocket viewers whose TCP segments nftables drops at random (1% each
#     way: real TCP loss and retransmission; a WebSocket session is a
#     reliable stream, where message loss cannot happen and the session
#     refuses a lossy link). No frame corrupted, every frame delivered or
#     reported lost, >= 90% delivered per UDP viewer (every frame on
#     WebSocket), host RSS flat after the warm-up (curve printed), host CPU
#     per viewer printed;
#   - the connect cycles: no file descriptor, tokio task or memory left
#     behind in the host.
# Both processes run in a network namespace of their own (loopback only),
# removed on exit.
#
#   bash scripts/soak.sh            the long run: 10 minutes, 10,000 cycles
#   bash scripts/soak.sh --short    about 45 s: 12 s of 250 viewers, 500 cycles (scripts/test.sh)
#   SOAK_SHORT=1 bash scripts/soak.sh   the same
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=${SOAK_SHORT:-0}
for arg in "$@"; do
    case "$arg" in
        --short) SHORT=1 ;;
        *) echo "usage: $0 [--short]" >&2; exit 2 ;;
    esac
done

FPS=30
if [ "$SHORT" = 1 ]; then
    SECONDS_=${SOAK_SECONDS:-12}
    CYCLES=${SOAK_CYCLES:-500}
    WARMUP=4
    SAMPLE=1
else
    SECONDS_=${SOAK_SECONDS:-600}
    CYCLES=${SOAK_CYCLES:-10000}
    WARMUP=60
    SAMPLE=10
fi
FRAMES=$((SECONDS_ * FPS))
UDP_VIEWERS=${SOAK_UDP_VIEWERS:-200}
WS_VIEWERS=${SOAK_WS_VIEWERS:-50}
WS_LOSS_PERMILLE=${SOAK_WS_LOSS_PERMILLE:-10}
NS=soak$$
BIN="${CARGO_TARGET_DIR:-target}/release/examples/soak"
OUT=$(mktemp -d)

source scripts/lib/netns.sh
need_tools soak ip nft

cleanup() {
    [ -n "${HOST_PID:-}" ] && kill "$HOST_PID" 2>/dev/null || true
    ns_cleanup
    rm -rf "$OUT"
}
trap cleanup EXIT

cargo build --release -q -p link-integration --example soak

ns_add "$NS"
# Every viewer and cycle has an open socket in the swarm: room for them.
ulimit -n "$(ulimit -Hn)"
ip netns exec "$NS" nft -f - <<NFT
table inet soak {
    chain output {
        type filter hook output priority 0; policy accept;
        tcp sport 7102 numgen random mod 1000 < $WS_LOSS_PERMILLE counter drop
        tcp dport 7102 numgen random mod 1000 < $WS_LOSS_PERMILLE counter drop
    }
}
NFT

COMMON=(--udp 127.0.0.1:7101 --ws 127.0.0.1:7102 --status "$OUT/status" --frames "$FRAMES" --fps "$FPS")
ip netns exec "$NS" "$BIN" host "${COMMON[@]}" 2>"$OUT/host.log" &
HOST_PID=$!

set +e
ip netns exec "$NS" "$BIN" swarm "${COMMON[@]}" \
    --udp-viewers "$UDP_VIEWERS" --ws-viewers "$WS_VIEWERS" --cycles "$CYCLES" \
    --warmup "$WARMUP" --sample "$SAMPLE"
rc=$?
set -e
echo
echo "WebSocket TCP segments dropped by nftables (host->viewer, viewer->host):"
ip netns exec "$NS" nft list chain inet soak output | grep -o 'counter packets [0-9]* bytes [0-9]*' || true
echo "host's last status: $(cat "$OUT/status" 2>/dev/null)"
if ! kill -0 "$HOST_PID" 2>/dev/null; then
    echo "FAILED: the host process died" >&2
    cat "$OUT/host.log" >&2
    exit 1
fi
if [ "$rc" != 0 ]; then
    echo "FAILED: the soak's checks failed (exit $rc)" >&2
    exit 1
fi
echo "soak: passed"
