#!/usr/bin/env bash
# The shared-memory ring protocol (link-shm/src/ring.rs) under Miri, on a
# heap-backed region (Miri cannot map memory files or use eventfds): a
# writer, a reader and a releasing thread moving every size class, with
# Miri's data-race detector and borrow checks over every access; garbage
# written over every word of a direction between operations; the lazy tail.
# Needs the nightly toolchain with its miri component; installs the
# component when missing and fails if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^miri'; then
    rustup component add miri rust-src --toolchain nightly
fi
cargo +nightly miri setup >/dev/null
cargo +nightly miri test -q -p link-shm --lib ring::
echo "Miri: the shared-memory ring protocol is clean"
