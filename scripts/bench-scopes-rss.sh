#!/usr/bin/env bash
# serve's resident memory while many distinct scopes are touched (issue #19: RSS with 1 000 000
# scopes touched stays under the cache bound + 64 MiB). Creates COFFER_RSS_SCOPES (default
# 1 000 000) scopes owned by one tenant in a scratch PostgreSQL database, starts `coffer serve`
# with the default cache bounds (l1_capacity 10 000) and no Redis, then sends one encrypt to each
# scope in turn (wrk, 64 connections on loopback, COFFER_RSS_SECONDS, default 300, then stops),
# sampling the server's RSS every 5 s. Prints the samples and the peak (VmHWM).
#
#   scripts/bench-scopes-rss.sh                      # release build of coffer
#   COFFER_BIN=path/to/coffer COFFER_RSS_SECONDS=60 scripts/bench-scopes-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n="${COFFER_RSS_SCOPES:-1000000}"
seconds="${COFFER_RSS_SECONDS:-300}"
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
db=coffer_bench_rss
log() { echo "bench-scopes-rss: $*" >&2; }
command -v wrk >/dev/null || {
  log "installing wrk"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null
}
if [ -n "${COFFER_BIN:-}" ]; then
  coffer="$COFFER_BIN"
else
  cargo build --release --quiet -p coffer-cli --bin coffer
  coffer="${CARGO_TARGET_DIR:-$PWD/target}/release/coffer"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench-rss.XXXXXX")
pid=
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
COFFER_RSS_KEK=$("$coffer" keygen)
export COFFER_RSS_KEK
cat >"$work/coffer.toml" <<T
[store]
url = "postgres://$PGUSER@$PGHOST:5432/$db"

[[kek]]
name = "main"
version = 1
source = "env:COFFER_RSS_KEK"
primary = true

[service]
listen = "127.0.0.1:0"
rate_limit = 10000000
rate_burst = 10000000
log_level = "warn"
T
seq -f 'rss:%07g' 0 $((n - 1)) >"$work/scopes.txt"
"$coffer" keys create-scope --config "$work/coffer.toml" --from-file "$work/scopes.txt" >&2
# One tenant owns them all (the admin API would take one request per scope).
psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
  -c "INSERT INTO coffer_scope_owners SELECT scope, 'acme', 0 FROM coffer_scopes WHERE scope LIKE 'rss:%'"
token=$("$coffer" tokens create --config "$work/coffer.toml" --tenant acme --label rss 2>/dev/null)
"$coffer" serve --config "$work/coffer.toml" >"$work/server.out" 2>"$work/server.log" &
pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's|^listening on http://||p' "$work/server.out")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { log "the server did not start"; cat "$work/server.log" >&2; exit 1; }
cat >"$work/walk.lua" <<L
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = '{"encoding":"utf8","items":[{"column":"ssn","plaintext":"123-45-6789"}]}'
local n, tid = 0, 0
setup = function(thread) thread:set("tid", tid); tid = tid + 1 end
request = function()
  local i = (n * 2 + tid) % $n
  n = n + 1
  return wrk.format(nil, string.format("/v1/scopes/rss:%07d/encrypt", i))
end
L
echo "RSS before the walk: $(ps -o rss= -p "$pid") KB"
(while kill -0 "$pid" 2>/dev/null; do echo "$(date -u +%T) $(ps -o rss= -p "$pid") KB"; sleep 5; done) &
sampler=$!
wrk -t2 -c64 -d"${seconds}s" -s "$work/walk.lua" "http://$addr" | sed -n '/requests in/,/Requests\/sec/p'
echo "RSS after the walk: $(ps -o rss= -p "$pid") KB; peak $(sed -n 's/VmHWM:\s*//p' "/proc/$pid/status")"
echo "distinct scopes touched: at most $n (the walk's requests above, if fewer)"
