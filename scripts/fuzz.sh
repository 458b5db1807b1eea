#!/usr/bin/env bash
# Fuzz the receive paths with cargo-fuzz (libFuzzer, nightly): the session
# client (with reassembly) and host, every handshake message, the wire
# headers, the shared-memory offer and the ring validation. Targets and
# harnesses: fuzz/ (not a workspace member).
#
#   bash scripts/fuzz.sh            each target FUZZ_SECONDS (default 20) s
#   bash scripts/fuzz.sh --long     each target 10 minutes (FUZZ_SECONDS wins if set)
#   FUZZ_TARGETS="client host" ...  only these targets
#
# Starts from the committed seeds (fuzz/corpus/<target>, recorded from real
# traffic by `cargo run --bin gen_corpus` in fuzz/) plus whatever earlier
# runs on this machine found (kept under the target directory, never
# committed). Any crash, leak, timeout (10 s per input) or out-of-memory
# fails the script; the input is left in fuzz/artifacts/<target>/.
# Installs nightly and cargo-fuzz when missing; fails if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
if [[ "${1:-}" == "--long" ]]; then
    seconds="${FUZZ_SECONDS:-600}"
fi
targets="${FUZZ_TARGETS:-wire handshake client host shm_offer shm_ring udp_endpoint}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version >/dev/null || { echo "FAILED: cargo-fuzz missing" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
work="$CARGO_TARGET_DIR/corpus"
cd fuzz
start=$(date +%s)
cargo +nightly fuzz build --features fuzzing
echo "fuzz build: $(( $(date +%s) - start )) s"

host=$(rustc -vV | sed -n 's/^host: //p')
for t in $targets; do
    mkdir -p "$work/$t" "artifacts/$t"
    log="$CARGO_TARGET_DIR/$t.log"
    echo "==> fuzz $t for $seconds s"
    # The binary cargo fuzz built, run directly (what `cargo fuzz run` does
    # after building).
    if ! "$CARGO_TARGET_DIR/$host/release/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "$work/$t" "corpus/$t" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAILED: fuzz target $t found a crash; input in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    # The last status line (coverage, features, corpus) and the totals.
    grep -E '^#[0-9]+\s+(DONE|NEW|REDUCE|pulse)' "$log" | tail -n 1
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' '
    echo
done
echo "fuzzing: every target clean ($seconds s each, $(( $(date +%s) - start )) s in all)"
