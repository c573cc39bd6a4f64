#!/usr/bin/env bash
# Runs the criterion benchmarks and prints a summary next to baselines measured in the same run:
# raw aws-lc-rs calls (inside the criterion groups) and `openssl speed` for AES-256-GCM.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== rustc: $(rustc --version)"
cargo bench -p coffer-core --bench field -- --noplot "$@"
if command -v openssl >/dev/null; then
  echo "== baseline: $(openssl version) speed -evp aes-256-gcm (64-byte blocks, 1 core)"
  openssl speed -evp aes-256-gcm -bytes 64 -seconds 2 2>/dev/null | tail -1 || true
fi
python3 scripts/bench_summary.py "$target/criterion"
