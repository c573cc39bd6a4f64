#!/usr/bin/env bash
# The encryption service under load (coffer serve): requests/s, p50/p99 latency and server CPU
# time per 1 000 fields for POST /v1/scopes/{scope}/encrypt with batches of 1 and 100 items of 50
# bytes, at 1 000 concurrent connections (wrk), beside the same traffic to
# POST /v1/bench/echo/{scope} in the same run: the same token check, tenant check, JSON and
# base64 work, no cryptography. The difference is what the cryptography costs.
#
# The server's CPU time is utime + stime of its process (/proc/PID/stat, every thread) read before
# and after each measured run; fields = requests completed × batch size. wrk runs on the same
# machine as the server and takes part of the same cores.
#
# Environment:
#   BENCH_SERVICE_SECONDS      length of each measured run (default 15)
#   BENCH_SERVICE_WARMUP       length of the warm-up before each run (default 3)
#   BENCH_SERVICE_CONNECTIONS  concurrent connections (default 1000)
#   BENCH_SERVICE_THREADS      wrk threads (default 2)
#   BENCH_SERVICE_LOG_LEVEL    the server's [service] log_level (default warn: no line per request;
#                              info writes one redacted JSON line per request)
#   BENCH_SERVICE_EXTRA_CONFIG more [service] lines, e.g. 'token_cache_ttl = "1h"'
#   BENCH_SERVICE_CACHE_CONFIG more [cache] lines, e.g. 'l1_ttl = "5s"' (a lifetime shorter than
#                              the run, so that the run crosses key expiries)
#   BENCH_SERVICE_ONLY         measure only these runs, e.g. "encrypt:1 echo:1" (default: all four)
#   BENCH_SERVICE_KEEP=1       keep the work directory (config, wrk output, server log) and say where
#   COFFER_BIN                 a coffer binary to use instead of building one (release)
#   PGHOST, PGUSER             PostgreSQL (default 127.0.0.1, postgres; trust auth)
#   COFFER_BENCH_REDIS_URL     the L2 key cache (default redis://127.0.0.1:6379)
# Part of scripts/bench.sh (BENCH_SERVICE=0 skips it there); runs alone too. Exits non-zero if any
# run saw a non-2xx response or a socket error.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${BENCH_SERVICE_SECONDS:-15}"
warmup="${BENCH_SERVICE_WARMUP:-3}"
conns="${BENCH_SERVICE_CONNECTIONS:-1000}"
threads="${BENCH_SERVICE_THREADS:-2}"
log_level="${BENCH_SERVICE_LOG_LEVEL:-warn}"
redis_url="${COFFER_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
db=coffer_bench_service
scope="bench:s"
tenant="bench"

log() { echo "bench-service: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for tool in wrk jq curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${COFFER_BIN:-}" ]; then
  coffer="$COFFER_BIN"
else
  target="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --release --quiet -p coffer-cli --bin coffer
  coffer="$target/release/coffer"
fi
[ -x "$coffer" ] || { log "no coffer binary at $coffer"; exit 1; }

# wrk and the server each hold one descriptor per connection, plus their own.
hard=$(ulimit -Hn)
want=$((conns * 2 + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || log "cannot raise the hard descriptor limit ($hard) to $want"
  hard=$(ulimit -Hn)
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then
    ulimit -n "$want"
  else
    ulimit -n "$hard"
  fi
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$((conns + 64))" ]; then
  log "the descriptor limit ($(ulimit -n)) is too low for $conns connections"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-service.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "${BENCH_SERVICE_KEEP:-0}" = 1 ]; then
    log "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null

COFFER_BENCH_SVC_KEK=$("$coffer" keygen)
COFFER_BENCH_SVC_CACHE_KEY=$("$coffer" keygen)
export COFFER_BENCH_SVC_KEK COFFER_BENCH_SVC_CACHE_KEY
cat >"$work/coffer.toml" <<EOF
[store]
url = "postgres://$PGUSER@$PGHOST:5432/$db"

[[kek]]
name = "main"
version = 1
source = "env:COFFER_BENCH_SVC_KEK"
primary = true

[cache]
redis_url = "$redis_url"
cache_key = "env:COFFER_BENCH_SVC_CACHE_KEY"
${BENCH_SERVICE_CACHE_CONFIG:-}

[service]
listen = "127.0.0.1:0"
rate_limit = 10000000
rate_burst = 10000000
max_batch = 1000
bench_endpoints = true
log_level = "$log_level"
${BENCH_SERVICE_EXTRA_CONFIG:-}
EOF
config="$work/coffer.toml"

"$coffer" serve --config "$config" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's|^listening on http://||p' "$work/server.out")
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  log "the server did not start; its log:"
  cat "$work/server.log" >&2
  exit 1
fi
base="http://$addr"

admin=$("$coffer" tokens create --config "$config" --admin --label bench 2>/dev/null)
token=$("$coffer" tokens create --config "$config" --tenant "$tenant" --label bench 2>/dev/null)
status=$(curl -sS -o "$work/scope.json" -w '%{http_code}' -H "Authorization: Bearer $admin" \
  -H 'content-type: application/json' -d "{\"scope\":\"$scope\",\"tenant\":\"$tenant\"}" \
  "$base/v1/admin/scopes")
case "$status" in
  2*) ;;
  *) log "creating scope $scope: HTTP $status: $(cat "$work/scope.json")"; exit 1 ;;
esac

# A request body of n items, each with a 50-byte plaintext of text.
body() {
  local n=$1 i pt items=""
  for i in $(seq 1 "$n"); do
    pt=$(printf 'bench value %05d ' "$i")
    while [ ${#pt} -lt 50 ]; do pt="${pt}abcdefghij"; done
    pt=${pt:0:50}
    [ -n "$items" ] && items="$items,"
    items="$items{\"column\":\"ssn\",\"context\":\"row-$i\",\"plaintext\":\"$pt\"}"
  done
  printf '{"encoding":"utf8","items":[%s]}' "$items"
}

# One wrk Lua script per body: POST, headers, the body, and a done() that prints the figures in
# a form this script reads (latencies in microseconds).
lua() {
  local bodyfile=$1
  cat <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local f = assert(io.open("$bodyfile", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.0f " ..
    "max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}

for n in 1 100; do
  body "$n" >"$work/body-$n.json"
  lua "$work/body-$n.json" >"$work/post-$n.lua"
  # Check both endpoints answer 200 with n items before loading them.
  for path in "v1/scopes/$scope/encrypt" "v1/bench/echo/$scope"; do
    status=$(curl -sS -o "$work/check.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
      -H 'content-type: application/json' --data-binary "@$work/body-$n.json" "$base/$path")
    got=$(jq '.items | length' "$work/check.json" 2>/dev/null || echo "?")
    if [ "$status" != 200 ] || [ "$got" != "$n" ]; then
      log "POST /$path with $n items: HTTP $status, $got items: $(head -c 400 "$work/check.json")"
      exit 1
    fi
    case $path in
      */encrypt)
        if ! jq -e 'all(.items[]; .ciphertext | startswith("cf1:"))' "$work/check.json" >/dev/null; then
          log "POST /$path did not return ciphertexts: $(head -c 400 "$work/check.json")"
          exit 1
        fi ;;
    esac
  done
done

clk=$(getconf CLK_TCK)
# utime + stime of the server process (all threads), in clock ticks.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$server_pid/stat")
  stat=${stat##*) }
  # After the command name: field 3 is the state; utime and stime are fields 14 and 15.
  echo "$stat" | awk '{ print $12 + $13 }'
}
# Busy and total clock ticks of the whole machine (every core), from /proc/stat.
machine_ticks() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

echo "== service: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== service: coffer serve (pid $server_pid) at $base ($("$coffer" --version 2>/dev/null || echo coffer)), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), ulimit -n $(ulimit -n)"
# What else is running: the machine's busy cores over 3 s with the server idle.
read -r m_busy0 m_all0 < <(machine_ticks)
sleep 3
read -r m_busy1 m_all1 < <(machine_ticks)
echo "== service: before the runs, other processes kept $(awk -v b=$((m_busy1 - m_busy0)) -v a=$((m_all1 - m_all0)) -v c="$(nproc)" 'BEGIN { printf "%.2f", (a > 0 ? b / a * c : 0) }') of $(nproc) cores busy (load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo "== service: wrk -t$threads -c$conns -d${seconds}s --timeout 30s --latency, after a ${warmup}s warm-up; 50-byte items; wrk shares the cores with the server"

results="$work/results.txt"
: >"$results"
failed=0
# Each encrypt run is followed by the echo run of the same batch size, so each pair is measured
# close together.
for n in 1 100; do
  for kind in encrypt echo; do
    case $kind in
      encrypt) path="v1/scopes/$scope/encrypt" ;;
      echo) path="v1/bench/echo/$scope" ;;
    esac
    if [ -n "${BENCH_SERVICE_ONLY:-}" ] && [[ " $BENCH_SERVICE_ONLY " != *" $kind:$n "* ]]; then
      continue
    fi
    url="$base/$path"
    wrk -t"$threads" -c"$conns" -d"${warmup}s" --timeout 30s -s "$work/post-$n.lua" "$url" \
      >"$work/warmup-$kind-$n.txt" 2>&1 || true
    read -r m_busy0 m_all0 < <(machine_ticks)
    times >"$work/times-0.txt"
    before=$(cpu_ticks)
    wrk -t"$threads" -c"$conns" -d"${seconds}s" --timeout 30s --latency -s "$work/post-$n.lua" "$url" \
      >"$work/wrk-$kind-$n.txt" 2>&1 || { log "wrk failed:"; cat "$work/wrk-$kind-$n.txt" >&2; exit 1; }
    after=$(cpu_ticks)
    # CPU time of this shell's children (wrk, mostly), from the builtin, which must run in this
    # shell: a subshell starts counting from zero.
    times >"$work/times-1.txt"
    read -r m_busy1 m_all1 < <(machine_ticks)
    wrk_s=$(awk 'FNR == 2 { split($1, u, "m"); split($2, k, "m"); t = u[1] * 60 + u[2] + k[1] * 60 + k[2]; if (NR == FNR) a = t; else b = t }
      END { printf "%.2f", b - a }' "$work/times-0.txt" "$work/times-1.txt")
    line=$(grep '^RESULT ' "$work/wrk-$kind-$n.txt" || true)
    if [ -z "$line" ]; then
      log "no result from wrk:"
      cat "$work/wrk-$kind-$n.txt" >&2
      exit 1
    fi
    # Cross-check against wrk's own text report.
    rps_text=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk-$kind-$n.txt")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$work/wrk-$kind-$n.txt")
    echo "$kind $n ticks=$((after - before)) wrk_s=$wrk_s mbusy=$((m_busy1 - m_busy0)) mall=$((m_all1 - m_all0)) non2xx=${non2xx:-0} rps_text=$rps_text ${line#RESULT }" >>"$results"
    # Every RESULT field, as shell variables.
    eval "$(echo "${line#RESULT }" | tr ' ' '\n' | sed 's/^/r_/')"
    # wrk counts responses with a status of 400 or more as status errors, and prints the same
    # count as "Non-2xx or 3xx responses".
    errs=$((r_connect + r_read + r_write + r_status + r_timeout))
    if [ "$errs" -ne 0 ]; then
      log "$kind, batch $n: non-2xx ${non2xx:-0}, status errors $r_status, socket errors connect $r_connect read $r_read write $r_write timeout $r_timeout"
      failed=1
    fi
  done
done

awk -v clk="$clk" -v ncpu="$(nproc)" '
  {
    kind = $1; n = $2
    for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    dur = f["duration_us"] / 1e6
    rps[kind, n] = f["requests"] / dur
    fps[kind, n] = rps[kind, n] * n
    p50[kind, n] = f["p50_us"] / 1000
    p99[kind, n] = f["p99_us"] / 1000
    cpu_ms = f["ticks"] * 1000 / clk
    per1k[kind, n] = cpu_ms / (f["requests"] * n / 1000)
    cores[kind, n] = cpu_ms / 1000 / dur
    # Busy share of all cores over the run, as cores: server + wrk + anything else running.
    busy[kind, n] = f["mall"] > 0 ? f["mbusy"] / f["mall"] * ncpu : 0
    wrkc[kind, n] = f["wrk_s"] / dur
    # What neither the server nor wrk used: other processes (and the kernel work of neither).
    other[kind, n] = busy[kind, n] - cores[kind, n] - wrkc[kind, n]
    if (other[kind, n] < 0) other[kind, n] = 0
    err[kind, n] = f["connect"] + f["read"] + f["write"] + f["status"] + f["timeout"]
    reqs[kind, n] = f["requests"]
  }
  END {
    printf "\n%-20s %8s %8s %8s %9s %13s %7s %6s %6s %7s\n", "endpoint", "req/s", "p50 ms", "p99 ms", "fields/s", "CPU ms/1k fld", "server", "wrk", "other", "errors"
    for (n = 1; n <= 100; n += 99) {
      for (k = 0; k < 2; k++) {
        kind = k == 0 ? "encrypt" : "echo"
        if (!((kind, n) in rps)) continue
        label = sprintf("%s, batch %d", kind, n)
        printf "%-20s %8.0f %8.2f %8.2f %9.0f %13.2f %7.2f %6.2f %6.2f %7d\n", label, rps[kind, n], p50[kind, n], p99[kind, n], fps[kind, n], per1k[kind, n], cores[kind, n], wrkc[kind, n], other[kind, n], err[kind, n]
      }
    }
    print ""
    for (n = 1; n <= 100; n += 99) {
      if (!(("encrypt", n) in rps) || !(("echo", n) in rps)) continue
      printf "batch %3d: encrypt/echo  req/s %.2fx, CPU per field %.2fx; the crypto path adds %.1f us of server CPU per field (%.1f vs %.1f)\n", n, rps["encrypt", n] / rps["echo", n], per1k["encrypt", n] / per1k["echo", n], per1k["encrypt", n] - per1k["echo", n], per1k["encrypt", n], per1k["echo", n]
    }
  }' "$results"
echo "(CPU ms/1k fld = server utime+stime per 1 000 fields, i.e. us per field; server, wrk, other ="
echo " cores each used during the run: the server process, wrk, and the rest of the machine's busy"
echo " time, i.e. other processes; clock ticks of 1/${clk} s)"

# Fields the encrypt endpoint sealed (warm-ups included; requests still in flight when wrk stopped
# are not counted), against the encryptions the server leased from the key store's counter.
sealed=$((1 + 100))
for f in "$work"/warmup-encrypt-*.txt "$work"/wrk-encrypt-*.txt; do
  [ -f "$f" ] || continue
  n=${f##*-}
  n=${n%.txt}
  r=$(sed -n 's/^RESULT requests=\([0-9]*\) .*/\1/p' "$f")
  sealed=$((sealed + ${r:-0} * n))
done
curl -sS -o "$work/scope-info.json" -H "Authorization: Bearer $admin" "$base/v1/admin/scopes/$scope"
jq -r --argjson sealed "$sealed" '"== service: scope \(.scope) now has \(.versions | length) key version(s); the key store counts " +
  "\([.versions[].encryptions] | add) encryptions leased for about \($sealed) fields sealed (\(([.versions[].encryptions] | add) / $sealed * 100 | floor / 100)x)"' \
  "$work/scope-info.json"

if [ -s "$work/server.log" ]; then
  warnings=$(wc -l <"$work/server.log")
  echo "== service: the server logged $warnings line(s) (log_level $log_level); the first:"
  head -3 "$work/server.log" | cut -c1-300
fi
if [ "$failed" -ne 0 ]; then
  log "FAILED: a run had non-2xx responses or socket errors (see above)"
  exit 1
fi
