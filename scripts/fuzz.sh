#!/usr/bin/env bash
# A bounded fuzz run of every target in src/fuzz.rs (60 s each unless
# FUZZ_SECS says otherwise), on mutations of fuzz/corpus/TARGET/. An input
# that panics is saved into the corpus as crash-*, which the tests replay:
# fix the bug, keep the file. Exits 1 when anything was found.
#
#   scripts/fuzz.sh               every target
#   scripts/fuzz.sh copy 300      one target, 300 s
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
secs=${2:-${FUZZ_SECS:-60}}
# The dev profile: overflow checks and debug assertions on (what a fuzzer
# should see), and the build the tests already made.
cargo run --locked --example fuzz -- "$target" --secs "$secs" --seed "${FUZZ_SEED:-$RANDOM}"
