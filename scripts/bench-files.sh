#!/usr/bin/env bash
# `coffer file` end to end: wall time, throughput and peak RSS of encrypt and decrypt for a
# 256 MiB and a 2 GiB file (page cache warm; output to /dev/null, so the figures are Coffer's and
# not the disk's), on one thread and on every core, beside `openssl enc -aes-256-ctr` over the
# same file (a one-core streaming cipher baseline; openssl enc has no GCM streaming mode).
#   scripts/bench-files.sh [SIZES_MIB...]      (default: 256 2048; BENCH_FILES_REPS runs each, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p coffer-cli
bin="$target/release/coffer"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export BENCH_KEK
BENCH_KEK=$("$bin" keygen)
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256 2048)
cores=$(nproc)
reps=${BENCH_FILES_REPS:-5}
measure() { # label, command...: median wall time of $reps runs, throughput, largest peak RSS
  local label=$1; shift
  : > "$dir/times"
  for _ in $(seq "$reps"); do
    /usr/bin/time -f "%e %M" -o "$dir/time" "$@" > /dev/null
    cat "$dir/time" >> "$dir/times"
  done
  sort -n "$dir/times" | awk -v l="$label" -v m="$mib" -v n="$reps" '
    { s[NR] = $1; if ($2 > k) k = $2 }
    END { med = s[int((n + 1) / 2)];
          printf "%-44s %7.2f s %7.2f GiB/s  peak RSS %6.1f MiB  (runs %.2f-%.2f s)\n", l, med, (m/1024)/med, k/1024, s[1], s[n] }'
}
for mib in "${sizes[@]}"; do
  head -c "${mib}M" /dev/urandom > "$dir/plain"
  cat "$dir/plain" > /dev/null
  "$bin" file encrypt "$dir/plain" -o "$dir/msg" --kek env:BENCH_KEK
  echo "== coffer file, ${mib} MiB, 64 KiB frames, $cores cores"
  measure "baseline: openssl enc -aes-256-ctr (1 core)" \
    openssl enc -aes-256-ctr -K "$(printf '%064d' 0)" -iv "$(printf '%032d' 0)" -in "$dir/plain"
  for t in 1 "$cores"; do
    measure "encrypt --threads $t" "$bin" file encrypt "$dir/plain" --kek env:BENCH_KEK --threads "$t"
    measure "decrypt --threads $t" "$bin" file decrypt "$dir/msg" --kek env:BENCH_KEK --threads "$t"
  done
  rm -f "$dir/msg"
done
