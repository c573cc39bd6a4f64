#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly (FUZZ_SECONDS each, default 10). cargo-fuzz needs nightly
# compiler flags; this machine has only stable Rust, so RUSTC_BOOTSTRAP=1 unlocks them for the fuzz
# build alone. Longer campaigns: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target>`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
# Keep fuzz builds apart from the workspace's: they use other compiler flags.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}-fuzz"
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  log=$(mktemp)
  set +e
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|panicked|SUMMARY|^error' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz target $target failed (crash inputs in fuzz/artifacts/$target)" >&2
    exit "$status"
  fi
  rm -f "$log"
done
