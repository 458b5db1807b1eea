#!/usr/bin/env bash
# Address validation under a spoofed flood (issue 16, `session.handshake.*`,
# `udp.endpoint.*`): a session host on one UdpEndpoint in namespace H; in
# namespace F a raw-socket flooder sends COUNT Hellos from SOURCES forged
# addresses (198.18.4.0/22, port 4433) while a real client (198.18.0.2)
# connects and streams FRAMES frames. The forged addresses route back to F,
# which owns none of them: nobody answers for them, as in a real reflection
# attack. Asserted, per mode:
#   - bytes sent to the forged addresses <= 3x bytes received from them, on
#     the wire (nftables counters in H, IP+UDP headers included, and UDP
#     payload alone) and in the host's own counters (every unvalidated
#     address, the real client's before it proved its address included);
#   - the real client connects within CONNECT_MS and loses no frame;
#   - the host's resident memory grows by at most RSS_MB during the flood.
# Modes (MODES, default "retry plain"): `retry` = the endpoint with the
# session's RetryGate (stateless retry tokens once 32 unvalidated peers
# exist); `plain` = the README's host, default configs (bounded unvalidated
# table, per-source rate limit, 3x limit). Everything is removed on exit.
#
#   bash scripts/netns-flood.sh                      100,000 Hellos, 1,000 sources
#   COUNT=30000 FRAMES=120 bash scripts/netns-flood.sh   the short version (scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-100000}
SOURCES=${SOURCES:-1000}
PPS=${PPS:-15000}
FRAMES=${FRAMES:-300}
MODES=${MODES:-retry plain}
CONNECT_MS=${CONNECT_MS:-1000}
RSS_MB=${RSS_MB:-64}
H=ampH$$
F=ampF$$
VH=ampvh$$
VF=ampvf$$
BIN="${CARGO_TARGET_DIR:-target}/release/examples/amp_flood"
OUT=$(mktemp -d)

source scripts/lib/netns.sh
need_tools netns-flood ip nft jq

cleanup() {
    for p in ${HOST_PID:-} ${SPOOF_PID:-}; do kill "$p" 2>/dev/null || true; done
    ns_cleanup
    rm -rf "$OUT"
}
trap cleanup EXIT

cargo build --release -q -p link-integration --example amp_flood

ns_add "$H" "$F"
ns_pair "$H" "$VH" 198.18.0.1/24 "$F" "$VF" 198.18.0.2/24
# Answers to the forged sources go back to F (which drops them: it owns none).
ip -n "$H" route add 198.18.4.0/22 via 198.18.0.2
ip netns exec "$H" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
ip netns exec "$H" nft -f - <<NFT
table inet ampflood {
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr 198.18.4.0/22 counter
    }
    chain output {
        type filter hook output priority 0; policy accept;
        ip daddr 198.18.4.0/22 counter
    }
}
NFT

# "<packets> <bytes>" of the chain's counter.
counter() {
    ip netns exec "$H" nft list chain inet ampflood "$1" |
        awk '/counter packets/ { for (i = 1; i <= NF; i++) { if ($i == "packets") p = $(i+1); if ($i == "bytes") b = $(i+1) } } END { print p, b }'
}

# Packets the kernel's per-CPU input backlogs dropped (all namespaces).
softnet_drops() {
    local n=0 d
    while read -r _ d _; do n=$((n + 16#$d)); done </proc/net/softnet_stat
    echo "$n"
}

flood_s=$(( (COUNT + PPS - 1) / PPS ))
secs=$(( flood_s + FRAMES / 60 + 5 ))
port=5000
for mode in $MODES; do
    port=$((port + 1))
    read -r in_p0 in_b0 < <(counter input)
    read -r out_p0 out_b0 < <(counter output)
    softnet_before=$(softnet_drops)
    extra=""
    [[ "$mode" == retry ]] && extra=retry
    ip netns exec "$H" "$BIN" host "198.18.0.1:$port" "$secs" "$FRAMES" $extra >"$OUT/host-$mode.json" &
    HOST_PID=$!
    sleep 0.5
    ip netns exec "$F" "$BIN" spoof "198.18.0.1:$port" "$COUNT" "$SOURCES" 198.18.4.0 "$PPS" >"$OUT/spoof-$mode.json" &
    SPOOF_PID=$!
    sleep 1
    client_ok=1
    ip netns exec "$F" "$BIN" client 198.18.0.2:0 "198.18.0.1:$port" "$FRAMES" >"$OUT/client-$mode.json" || client_ok=0
    wait "$SPOOF_PID"; SPOOF_PID=
    wait "$HOST_PID"; HOST_PID=
    read -r in_p in_b < <(counter input)
    read -r out_p out_b < <(counter output)
    in_p=$((in_p - in_p0)); in_b=$((in_b - in_b0)); out_p=$((out_p - out_p0)); out_b=$((out_b - out_b0))
    c=$(cat "$OUT/client-$mode.json"); h=$(cat "$OUT/host-$mode.json"); s=$(cat "$OUT/spoof-$mode.json")
    echo "== $mode"
    echo "spoofer: $s"
    echo "client:  $c"
    echo "host:    $h"
    echo "kernel input backlog drops during the run: $(( $(softnet_drops) - softnet_before ))"
    echo "wire (nft, forged range): in $in_p packets $in_b bytes, out $out_p packets $out_b bytes"
    in_payload=$((in_b - 28 * in_p)); out_payload=$((out_b - 28 * out_p))
    uv_rx=$(jq .unvalidated_rx_bytes <<<"$h"); uv_tx=$(jq .unvalidated_tx_bytes <<<"$h")
    connect_ms=$(( $(jq '.connect_us // 999999999' <<<"${c:-null}") / 1000 ))
    rss_growth_mb=$(( ($(jq .rss_peak_kib <<<"$h") - $(jq .rss_start_kib <<<"$h")) / 1024 ))
    awk -v a="$out_b" -v b="$in_b" -v c="$out_payload" -v d="$in_payload" -v e="$uv_tx" -v f="$uv_rx" 'BEGIN {
        printf "amplification: wire %.2fx, UDP payload %.2fx, host counters %.2fx (limit 3x)\n",
            (b ? a / b : 0), (d ? c / d : 0), (f ? e / f : 0) }'
    echo "real client connected in $connect_ms ms (bound $CONNECT_MS ms); RSS grew $rss_growth_mb MB (bound $RSS_MB MB)"
    fail() { echo "FAILED ($mode): $*" >&2; exit 1; }
    (( client_ok )) || fail "the real client did not connect or did not receive every frame intact and in order"
    (( in_p >= COUNT * 9 / 10 )) || fail "only $in_p of $COUNT forged packets reached the host"
    (( out_b <= 3 * in_b )) || fail "wire bytes out $out_b > 3 x in $in_b"
    (( out_payload <= 3 * in_payload )) || fail "payload out $out_payload > 3 x in $in_payload"
    (( uv_tx <= 3 * uv_rx )) || fail "host counters: to unvalidated $uv_tx > 3 x from them $uv_rx"
    (( connect_ms <= CONNECT_MS )) || fail "the real client took $connect_ms ms to connect"
    [[ $(jq .lost <<<"$c") == 0 && $(jq .delivered <<<"$c") == "$FRAMES" ]] || fail "frames lost: $c"
    (( rss_growth_mb <= RSS_MB )) || fail "host RSS grew by $rss_growth_mb MB"
    (( $(jq .sessions <<<"$h") == 1 )) || fail "sessions other than the real client's were established: $h"
done
echo "netns flood test passed ($COUNT forged Hellos from $SOURCES addresses at $PPS/s; modes: $MODES)"
