#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on nightly; fails on the
# first crash (its input is left in fuzz/artifacts/TARGET/).
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is needed: cargo install cargo-fuzz"; exit 1; }
for target in $(cargo +nightly fuzz list); do
  log=$(mktemp)
  if cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$SECONDS_EACH" > "$log" 2>&1; then
    echo "$target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1), no crash"
  else
    echo "$target: CRASH"; grep -E "panicked|SUMMARY|deadly signal|Test unit written" "$log" || tail -20 "$log"
    rm -f "$log"; exit 1
  fi
  rm -f "$log"
done
