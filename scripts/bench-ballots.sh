#!/usr/bin/env bash
# The ballots app under 10 000 voter connections, encryption on versus off (the benchmark-only
# `encryption = false`), interleaved in the same run: votes/s, vote p50/p99, KEK calls, peak RSS.
#
# Each run: a fresh PostgreSQL database, 100 ballots created, the app restarted with an empty
# Redis (so every ballot key is unwrapped from the KEK during the run), then `ballots load` for
# BENCH_BALLOTS_SECONDS (default 60) with every acknowledged vote verified against the tallies.
#   BENCH_BALLOTS_ROUNDS   on/off pairs (default 3; the table shows medians)
#   BENCH_BALLOTS_VOTERS   connections (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
seconds="${BENCH_BALLOTS_SECONDS:-60}"
rounds="${BENCH_BALLOTS_ROUNDS:-3}"
voters="${BENCH_BALLOTS_VOTERS:-10000}"
scripts/services-up.sh
cargo build --release -q -p coffer-ballots
bin="$target/release/ballots"
work=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" >/dev/null
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS ballots_bench WITH (FORCE)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export COFFER_MASTER_KEY COFFER_CACHE_KEY BALLOTS_METRICS_TOKEN
BALLOTS_METRICS_TOKEN=$(head -c 32 /dev/urandom | base64)
COFFER_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
COFFER_CACHE_KEY=$(head -c 32 /dev/urandom | base64)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start() {
  "$bin" serve --config "$work/ballots.toml" 2>>"$work/serve.log" &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "ballots did not start" >&2; cat "$work/serve.log" >&2; exit 1
}
# CPU ticks (user + system) of every PostgreSQL process.
pgcpu() { local t=0; for p in $(pgrep -u postgres); do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
stop() { kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""; }

run() { # $1 = true|false
  psql -q postgres://postgres@127.0.0.1:5432/postgres \
    -c "DROP DATABASE IF EXISTS ballots_bench WITH (FORCE)" -c "CREATE DATABASE ballots_bench"
  cat >"$work/ballots.toml" <<EOF
[store]
url = "postgres://postgres@127.0.0.1:5432/ballots_bench"

[[kek]]
name = "main"
version = 1
source = "env:COFFER_MASTER_KEY"
primary = true

[cache]
redis_url = "redis://127.0.0.1:$redis_port"
cache_key = "env:COFFER_CACHE_KEY"

[app]
listen = "127.0.0.1:$port"
environment = "development"
encryption = $1
metrics_token = "env:BALLOTS_METRICS_TOKEN"
EOF
  rm -f "$work/state.json"
  start
  "$bin" load --url "http://127.0.0.1:$port" --create-only --ballots 100 --state "$work/state.json" 2>/dev/null
  stop
  redis-cli -p "$redis_port" flushall >/dev/null
  start
  sleep 10 # a quiet machine before the run
  local cpu0 pg0
  cpu0=$(awk '{print $14+$15}' "/proc/$server/stat")
  pg0=$(pgcpu)
  "$bin" load --url "http://127.0.0.1:$port" --state "$work/state.json" --connections "$voters" \
    --duration "${seconds}s" --ramp 5s --verify --json >"$work/summary.json"
  local kek rss
  kek=$(curl -s -H "Authorization: Bearer $BALLOTS_METRICS_TOKEN" "http://127.0.0.1:$port/metrics" | awk '/^coffer_keys_kek_unwraps_total /{print $2}')
  local l2err
  l2err=$(curl -s -H "Authorization: Bearer $BALLOTS_METRICS_TOKEN" "http://127.0.0.1:$port/metrics" | awk '/^coffer_keys_l2_errors_total /{print $2}')
  rss=$(awk '/VmHWM/{print $2}' "/proc/$server/status")
  local cpu=$(( $(awk '{print $14+$15}' "/proc/$server/stat") - cpu0 ))
  local pg=$(( $(pgcpu) - pg0 ))
  stop
  python3 - "$1" "${kek:-0}" "$rss" "$work/summary.json" "$cpu" "$pg" "${l2err:-0}" <<'PY'
import json, os, sys
mode, kek, rss, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
hz = os.sysconf("SC_CLK_TCK")
app_cpu, pg_cpu = int(sys.argv[5]) / hz, int(sys.argv[6]) / hz
s = json.load(open(path))
print(json.dumps({"encryption": mode == "true", "votes_per_second": s["votes_per_second"],
                  "p50": s["vote_p50_ms"], "p99": s["vote_p99_ms"], "votes": s["votes"],
                  "errors": s["error_count"], "mismatches": len(s["mismatches"] or []),
                  "peak": s["peak_connected"], "kek": float(kek), "l2_errors": float(sys.argv[7]),
                  "rss_mib": rss / 1024,
                  "app_cpu_us_per_vote": app_cpu / s["votes"] * 1e6,
                  "pg_cpu_us_per_vote": pg_cpu / s["votes"] * 1e6}))
PY
}

echo "== ballots: $voters voter connections, 100 ballots, ${seconds} s per run, $rounds on/off pairs"
: >"$work/runs.jsonl"
for r in $(seq 1 "$rounds"); do
  for mode in true false; do
    run "$mode" | tee -a "$work/runs.jsonl"
  done
done
python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(mode, key):
    return statistics.median(r[key] for r in runs if r["encryption"] == mode)
print("| encryption | votes/s (median) | vote p50 ms | vote p99 ms | app CPU µs/vote | PostgreSQL CPU µs/vote | KEK unwraps | peak RSS MiB | errors | mismatches |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for mode in (True, False):
    rs = [r for r in runs if r["encryption"] == mode]
    print(f"| {'on' if mode else 'off'} | {med(mode,'votes_per_second'):,.0f} "
          f"({min(r['votes_per_second'] for r in rs):,.0f}–{max(r['votes_per_second'] for r in rs):,.0f}) "
          f"| {med(mode,'p50'):.0f} | {med(mode,'p99'):.0f} | {med(mode,'app_cpu_us_per_vote'):.1f} "
          f"| {med(mode,'pg_cpu_us_per_vote'):.1f} | {med(mode,'kek'):.0f} | {med(mode,'rss_mib'):.0f} "
          f"| {sum(r['errors'] for r in rs)} | {sum(r['mismatches'] for r in rs)} |")
on, off = med(True, "votes_per_second"), med(False, "votes_per_second")
print(f"throughput with encryption: {on/off:.3f}x of plaintext ({(1-on/off)*100:+.1f} % loss; target <= 5 %)")
pairs = [(a["votes_per_second"], b["votes_per_second"]) for a, b in zip(runs[0::2], runs[1::2])]
print("per pair loss: " + ", ".join(f"{(1-a/b)*100:+.1f} %" for a, b in pairs))
PY
