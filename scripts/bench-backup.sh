#!/usr/bin/env bash
# Backups (issue #4): wall time of `coffer backup` (pg_dump | encrypt into parts) against plain
# `pg_dump` to a file, same database, same run, median of COFFER_BENCH_BACKUP_REPS runs each,
# alternating; then the peak RSS of `coffer backup` for the whole dump and for a tiny one, and the
# time of `coffer restore --verify-only` (decrypt and authenticate everything).
# The database: COFFER_BENCH_BACKUP_ROWS rows (default 400 000) of 512 random bytes and 64 random
# hex characters, about 440 MB of uncompressed dump; created here and dropped at the end.
# COFFER_BENCH_BACKUP_ONLY=default|uncompressed measures one case only.
# Part of scripts/bench.sh; runs alone too (needs PostgreSQL, see scripts/services-up.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p coffer-cli --bin coffer
coffer="$target/release/coffer"
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
rows="${COFFER_BENCH_BACKUP_ROWS:-400000}"
reps="${COFFER_BENCH_BACKUP_REPS:-3}"
db=coffer_bench_backup
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-backup.XXXXXX")
cleanup() {
  rm -rf "$work"
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT

echo "== backups: generating $rows rows in database $db"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "
  CREATE EXTENSION pgcrypto;
  CREATE TABLE readings (id bigint PRIMARY KEY, device int NOT NULL, payload bytea NOT NULL,
                         label text NOT NULL);
  INSERT INTO readings SELECT g, g % 997, gen_random_bytes(512), encode(gen_random_bytes(32), 'hex')
    FROM generate_series(1, $rows) g;
  DROP EXTENSION pgcrypto;" -c "VACUUM ANALYZE readings"

COFFER_BENCH_KEK=$("$coffer" keygen)
export COFFER_BENCH_KEK
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

for variant in "default:" "uncompressed:--compress=0"; do
  name="${variant%%:*}"
  # COFFER_BENCH_BACKUP_ONLY=uncompressed (or default) runs one of the two.
  [ -n "${COFFER_BENCH_BACKUP_ONLY:-}" ] && [ "$name" != "$COFFER_BENCH_BACKUP_ONLY" ] && continue
  extra=()
  [ -n "${variant#*:}" ] && extra=("${variant#*:}")
  plain_times=()
  coffer_times=()
  for _ in $(seq "$reps"); do
    plain_times+=("$(seconds pg_dump --format=custom "${extra[@]}" --dbname="$db" --file="$work/plain.dump")")
    size=$(stat -c %s "$work/plain.dump")
    rm -f "$work/plain.dump"
    args=()
    for a in "${extra[@]}"; do args+=("--pg-dump-arg=$a"); done
    coffer_times+=("$(seconds "$coffer" backup --dbname "$db" -o "$work/backups" \
      --kek env:COFFER_BENCH_KEK "${args[@]}")")
    rm -rf "$work/backups"
  done
  p=$(printf '%s\n' "${plain_times[@]}" | median)
  c=$(printf '%s\n' "${coffer_times[@]}" | median)
  echo "== backups ($name pg_dump compression, dump $size bytes, median of $reps):"
  echo "   pg_dump -Fc --file           ${p}s  (runs: ${plain_times[*]})"
  echo "   coffer backup (pg_dump | enc) ${c}s  (runs: ${coffer_times[*]})"
  echo "   ratio coffer/pg_dump         $(echo "scale=3; $c / $p" | bc)"
done

rss() {
  /usr/bin/time -v "$coffer" backup --dbname "$db" -o "$work/backups" --kek env:COFFER_BENCH_KEK "$@" \
    2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}
echo "== backups: peak RSS of coffer backup (KiB; pg_dump is a separate process)"
echo "   whole database, 1 GiB parts:           $(rss --pg-dump-arg=--compress=0)"
echo "   schema only (a few KiB of dump):       $(rss --pg-dump-arg=--schema-only)"
backup=$(ls -d "$work"/backups/2* | head -1)
echo "== backups: coffer restore --verify-only of the whole database (decrypt + authenticate)"
echo "   $(seconds "$coffer" restore "$backup" --kek env:COFFER_BENCH_KEK --verify-only)s"
