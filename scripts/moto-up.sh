#!/usr/bin/env bash
# Starts a moto server (AWS API mock: KMS, S3, ...) on a free loopback port, or reuses the one a
# previous run started, and prints the line to eval:
#
#   eval "$(scripts/moto-up.sh)"     # -> export COFFER_TEST_MOTO_ENDPOINT=http://127.0.0.1:PORT
#   scripts/moto-up.sh stop          # stops the server this script started
#
# State lives in ${TMPDIR:-/tmp}/coffer-moto/ (pid, port, log, lock). Concurrent callers (several
# test binaries, a bench) are serialised by a lock, so they all get the same server. Installs
# moto[server] with pip when moto_server is missing. Only the export line goes to stdout.
set -euo pipefail

dir="${TMPDIR:-/tmp}/coffer-moto"
pidfile="$dir/moto.pid"
portfile="$dir/moto.port"
logfile="$dir/moto.log"
mkdir -p "$dir"

log() { echo "moto-up: $*" >&2; }

# Serialise callers: the second one waits and then reuses the first one's server.
exec 9>"$dir/lock"
flock -w 120 9 || { log "could not take $dir/lock within 120 s"; exit 1; }

answers() { # port: does a moto server answer there?
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/moto-api/" 2>/dev/null
}

running_port() { # prints the recorded port if our recorded server is alive and answering
  [[ -s "$pidfile" && -s "$portfile" ]] || return 1
  local pid port
  pid=$(<"$pidfile") port=$(<"$portfile")
  [[ "$pid" =~ ^[0-9]+$ && "$port" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  answers "$port" || return 1
  echo "$port"
}

if [[ "${1:-}" == "stop" ]]; then
  if [[ -s "$pidfile" ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
    kill "$(<"$pidfile")" && log "stopped moto_server (pid $(<"$pidfile"))"
  else
    log "no moto_server recorded in $dir"
  fi
  rm -f "$pidfile" "$portfile"
  exit 0
fi
[[ $# -eq 0 ]] || { log "usage: $0 [stop]"; exit 2; }

if port=$(running_port); then
  log "reusing moto_server on 127.0.0.1:$port (pid $(<"$pidfile"))"
  echo "export COFFER_TEST_MOTO_ENDPOINT=http://127.0.0.1:$port"
  exit 0
fi
rm -f "$pidfile" "$portfile"

if ! command -v moto_server >/dev/null 2>&1; then
  log "moto_server not found; installing moto[server] with pip"
  python3 -m pip install --quiet 'moto[server]' >&2
  hash -r
  command -v moto_server >/dev/null 2>&1 || { log "moto_server still not on PATH after pip install"; exit 1; }
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

for attempt in 1 2 3; do
  port=$(free_port)
  # setsid: the server outlives the caller (a test binary), so later runs can reuse it.
  # 9>&-: it must not inherit the lock.
  setsid moto_server -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 9>&- < /dev/null &
  pid=$!
  for _ in $(seq 1 150); do # up to 30 s
    if answers "$port"; then
      echo "$pid" >"$pidfile"
      echo "$port" >"$portfile"
      log "started moto_server on 127.0.0.1:$port (pid $pid, log $logfile)"
      echo "export COFFER_TEST_MOTO_ENDPOINT=http://127.0.0.1:$port"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  log "moto_server did not come up on port $port (attempt $attempt); log:"
  tail -n 20 "$logfile" >&2 || true
done
log "giving up"
exit 1
