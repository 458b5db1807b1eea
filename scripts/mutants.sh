#!/usr/bin/env bash
# Mutation testing with cargo-mutants over the code where a silent mistake
# costs most (TESTING.md has the scores and every survivor explained).
#
#   bash scripts/mutants.sh            # every module below (about 2 h on 2 cores)
#   bash scripts/mutants.sh quick      # a short slice (the envelope, about 2 min)
#   bash scripts/mutants.sh NAME...    # the named modules only
#
# Each module is one cargo-mutants run: the crate, the files mutated, and
# the tests run against each mutant (scoped to the fast tests beside the
# code). Results go to $OUT/<name>/mutants.out; a summary line per module
# is printed at the end, and the script fails when a module's score (caught
# of caught + missed; unviable mutants do not count, timeouts count as
# caught) is below its floor. Installs cargo-mutants (pinned) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTANTS_VERSION=27.1.0
OUT=${OUT:-target/mutants}
# Each of cargo-mutants' build directories needs its own target directory:
# with one shared CARGO_TARGET_DIR, concurrent builds of different mutants
# overwrite each other's artifacts and mutants "survive" untested.
unset CARGO_TARGET_DIR
JOBS=${JOBS:-2}

# name | package | files (comma-separated) | cargo-mutants options (features)
#      | cargo test args | floor (%)
MODULES=(
    "video-envelope|link-video|link-video/src/envelope.rs,link-video/src/index.rs|--no-default-features --features native|--lib|90"
    "envelope|link-video|link-video/src/envelope.rs|--no-default-features --features native|--lib|90"
    "session-wire|link-session|session/src/wire.rs||--lib|90"
    "session-reassembly|link-session|session/src/reassembly.rs||--lib|90"
    "session-replay|link-session|session/src/crypto.rs||--lib|90"
    "session-fec-params|link-session|session/src/fec.rs||--lib|90"
    "session-negotiate|link-session|session/src/handshake/negotiate.rs,session/src/handshake/messages.rs||--lib|90"
    "session-input|link-session|session/src/input.rs||--lib|90"
    "session-bwe|link-session|session/src/bwe/mod.rs,session/src/bwe/trendline.rs||--lib|90"
    "session-pacer|link-session|session/src/pacer.rs||--lib|90"
    "types-memory|link-types|link-types/src/memory.rs,link-types/src/fault.rs|||90"
    "udp-admission|link-udp|link-udp/src/endpoint.rs,link-udp/src/peer.rs||--test validation --test udp|90"
    "shm-ring|link-shm|link-shm/src/ring.rs||--lib|90"
)
# The test command's slice: the envelope alone (22 mutants, about 2 min).
QUICK=(envelope)

if ! command -v cargo-mutants >/dev/null 2>&1 ||
    ! cargo mutants --version | grep -q "$MUTANTS_VERSION"; then
    echo "mutants: installing cargo-mutants $MUTANTS_VERSION"
    cargo install --locked "cargo-mutants@$MUTANTS_VERSION"
fi
command -v jq >/dev/null || { echo "mutants: jq is missing" >&2; exit 1; }

want=("$@")
if [[ ${#want[@]} == 0 ]]; then
    want=()
    # Every module once ("envelope" is inside "video-envelope").
    for m in "${MODULES[@]}"; do
        [[ ${m%%|*} == envelope ]] || want+=("${m%%|*}")
    done
elif [[ ${want[0]} == quick ]]; then
    want=("${QUICK[@]}")
fi

summary=()
failed=0
for name in "${want[@]}"; do
    line=""
    for m in "${MODULES[@]}"; do
        [[ ${m%%|*} == "$name" ]] && line=$m
    done
    [[ -n $line ]] || { echo "mutants: no module named $name" >&2; exit 1; }
    IFS='|' read -r _ pkg files opts args floor <<<"$line"
    file_args=()
    IFS=',' read -ra fs <<<"$files"
    for f in "${fs[@]}"; do file_args+=(--file "$f"); done
    dir="$OUT/$name"
    mkdir -p "$dir"
    echo "==> mutants: $name ($pkg: $files)"
    # cargo-mutants exits non-zero when a mutant survives; the score below
    # is the verdict.
    # shellcheck disable=SC2086
    cargo mutants --package "$pkg" "${file_args[@]}" $opts --jobs "$JOBS" \
        --timeout-multiplier 3 --minimum-test-timeout 20 --output "$dir" \
        --no-shuffle -- $args || true
    outcomes="$dir/mutants.out/outcomes.json"
    [[ -f $outcomes ]] || { echo "mutants: $name produced no outcomes" >&2; exit 1; }
    read -r caught missed timeout unviable < <(jq -r '
        [.outcomes[] | select(.scenario != "Baseline") | .summary] as $s
        | [($s | map(select(. == "CaughtMutant")) | length),
           ($s | map(select(. == "MissedMutant")) | length),
           ($s | map(select(. == "Timeout")) | length),
           ($s | map(select(. == "Unviable")) | length)] | @tsv' "$outcomes")
    viable=$((caught + missed + timeout))
    score=$(( viable == 0 ? 100 : (100 * (caught + timeout)) / viable ))
    summary+=("$(printf '%-20s caught %4d  missed %3d  timeout %3d  unviable %3d  score %3d%% (floor %d%%)' \
        "$name" "$caught" "$missed" "$timeout" "$unviable" "$score" "$floor")")
    if (( score < floor )); then
        failed=1
        echo "mutants: $name scored $score%, below its floor of $floor%; missed:" >&2
        cat "$dir/mutants.out/missed.txt" >&2
    fi
done
echo
echo "mutation scores:"
printf '  %s\n' "${summary[@]}"
exit $failed
