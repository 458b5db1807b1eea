#!/usr/bin/env bash
# Real packet loss for the UDP link: two network namespaces joined by a veth
# pair, nftables dropping LOSS% of UDP packets in each direction, and the
# two ends of link-udp/examples/loss_peer.rs talking across it.
#
# Traffic stays inside the namespaces this script creates (addresses from
# 198.18.0.0/15, the range set aside for benchmarking); everything is removed
# on exit, failure included. Needs root, iproute2 and nftables.
set -euo pipefail
cd "$(dirname "$0")/.."

LOSS=${LOSS:-10}
COUNT=${COUNT:-20000}
A=lsA$$
B=lsB$$
BIN="${CARGO_TARGET_DIR:-target}/release/examples/loss_peer"

source scripts/lib/netns.sh
need_tools netns-loss ip nft tc

cleanup() {
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null || true
    ns_cleanup
}
trap cleanup EXIT

cargo build --release -q -p link-udp --example loss_peer

ns_add "$A" "$B"
# A GSO super-packet would cross the veth whole and be dropped whole; a real
# NIC segments before the wire. One segment per packet makes the kernel
# segment in software, so loss hits datagrams one by one.
ns_pair "$A" "va$$" 198.18.0.1/30 "$B" "vb$$" 198.18.0.2/30 1

for ns in "$A" "$B"; do
    ip netns exec "$ns" nft -f - <<NFT
table inet linkstream_loss {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto udp numgen random mod 100 < $LOSS drop
    }
}
NFT
done

ip netns exec "$B" "$BIN" serve 198.18.0.2:5000 &
SERVER_PID=$!
sleep 0.5
ip netns exec "$A" "$BIN" client 198.18.0.1:0 198.18.0.2:5000 "$COUNT" "$LOSS"
wait "$SERVER_PID"
SERVER_PID=
echo "netns loss test passed (loss $LOSS% each way, $COUNT datagrams)"

# Second phase: no loss, a 20 Mbit/s bottleneck with a deep queue on A's
# side and a small socket send buffer, so that the socket buffer fills before
# the queue would drop: the link must wait for the socket, never drop.
for ns in "$A" "$B"; do
    ip netns exec "$ns" nft delete table inet linkstream_loss
done
ip netns exec "$A" tc qdisc add dev "va$$" root tbf rate 20mbit burst 32kb limit 16mb
ip netns exec "$B" "$BIN" serve 198.18.0.2:5001 &
SERVER_PID=$!
sleep 0.5
ip netns exec "$A" "$BIN" client 198.18.0.1:0 198.18.0.2:5001 3000 0 65536
wait "$SERVER_PID"
SERVER_PID=
echo "netns rate-limit test passed (full send buffer: waited, nothing dropped)"
