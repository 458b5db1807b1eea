#!/usr/bin/env bash
# The Autobahn WebSocket test cases (run by kosoku, from PyPI, in a venv)
# against our server link (an echo server) and our client link. Compression
# cases (12.*, 13.*) are excluded: the link does not negotiate
# permessage-deflate. Every other case must end OK, NON-STRICT or
# INFORMATIONAL. Reports go to target/autobahn/ (not in git).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${KOSOKU_VENV:-/opt/kosoku-venv}
if [ ! -x "$venv/bin/kosoku" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q kosoku
fi

target_dir=${CARGO_TARGET_DIR:-target}
cargo build -q -p link-ws --example test_peer
peer="$target_dir/debug/examples/test_peer"
out="$target_dir/autobahn"
rm -rf "$out"
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

wait_for() { # file pattern
    for _ in $(seq 1 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:"; cat "$1"; return 1
}

echo "--- server mode: kosoku drives our echo server"
"$peer" echo 127.0.0.1:0 >"$out/echo.log" 2>&1 &
pids+=($!)
wait_for "$out/echo.log" '^LISTENING '
addr=$(sed -n 's/^LISTENING //p' "$out/echo.log")
(cd "$out" && "$venv/bin/kosoku" "$addr" -x '12.*' -x '13.*' -o server-reports >kosoku-server.log 2>&1)
tail -n 2 "$out/kosoku-server.log"

echo "--- client mode: our client runs the cases of kosoku's fuzzing server"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$out" && exec "$venv/bin/kosoku" -m fuzzingserver "127.0.0.1:$port" -x '12.*' -x '13.*' -o client-reports >kosoku-client.log 2>&1) &
pids+=($!)
wait_for "$out/kosoku-client.log" 'listening'
timeout 600 "$peer" autobahn-client "ws://127.0.0.1:$port"
wait_for "$out/kosoku-client.log" 'cases passed\|cases failed\|wrote reports'
sleep 0.5

python3 - "$out/server-reports" "$out/client-reports" <<'PY'
import collections, glob, json, sys
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
failed = False
for d in sys.argv[1:]:
    counts, bad = collections.Counter(), []
    for f in glob.glob(f"{d}/*.json"):
        if f.endswith("index.json"):
            continue
        r = json.load(open(f))
        for key in ("behavior", "behaviorClose"):
            counts[r[key]] += 1
            if r[key] not in ok:
                bad.append((r.get("id"), key, r[key]))
    cases = sum(counts.values()) // 2
    print(f"{d}: {cases} cases, outcomes {dict(counts)}")
    if cases < 290 or bad:
        failed = True
        print(f"  FAILED: {bad[:20]} (cases: {cases})")
sys.exit(1 if failed else 0)
PY
