#!/usr/bin/env bash
# The crates with `unsafe` (system calls, shared memory) under
# AddressSanitizer: link-udp (sendmmsg/recvmmsg/cmsg) and link-shm (mmap,
# SCM_RIGHTS, the segment accessors), including link-shm's second processes
# (relay, hostile scribbler), which are built with the sanitizer too.
# Needs a nightly toolchain (`-Zsanitizer`); installs it when missing, and
# fails (never skips) if that is impossible here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || {
        echo "FAILED: AddressSanitizer needs a nightly toolchain and it could not be installed" >&2
        exit 1
    }
fi
export RUSTFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/asan"
host=$(rustc -vV | sed -n 's/^host: //p')
cargo +nightly build -q -p link-shm --examples --target "$host"
cargo +nightly test -q -p link-shm -p link-udp --tests --target "$host"
echo "AddressSanitizer: link-udp and link-shm tests clean"
