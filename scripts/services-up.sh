#!/usr/bin/env bash
# Everything the integration tests talk to, started if it is not running. Idempotent.
#   PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379): the machine's own
#   servers, started with the commands the machine documents if they are down.
#   SoftHSM2: installed (apt-get) if missing; tokens are made per test run by softhsm-setup.sh.
#   moto (AWS KMS mock): pip-installed if missing; started per run by moto-up.sh.
#   aws-encryption-sdk[MPL] (Python): pip-installed if missing, for the streaming-format interop
#   tests and the backup disaster-recovery test (tools/dr_decrypt.py).
#   HAProxy: installed (apt-get) if missing; the scale-out test starts its own haproxy in the
#   foreground with a generated configuration (never the system service).
# The Redis tests start private redis-server processes of their own (they stop and restart them).
#   Redis Cluster (127.0.0.1:7000-7005, 3 masters with one replica each) for the L2 cluster tests,
#   data under $COFFER_REDIS_CLUSTER_DIR (default /tmp/coffer-redis-cluster), formed only once.
set -euo pipefail

log() { echo "services-up: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
command -v redis-server >/dev/null || { log "redis-server is not installed"; exit 1; }

# Redis Cluster: six loopback nodes, each in its own directory (nodes.conf is the node's cluster
# identity; a node restarted on it rejoins its cluster). A short node timeout makes a failed master's
# replica take over within seconds.
cluster_dir="${COFFER_REDIS_CLUSTER_DIR:-/tmp/coffer-redis-cluster}"
cluster_ports="7000 7001 7002 7003 7004 7005"
mkdir -p "$cluster_dir"
for port in $cluster_ports; do
  if ! redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    log "starting Redis Cluster node $port"
    mkdir -p "$cluster_dir/$port"
    (cd "$cluster_dir/$port" && redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --dir "$cluster_dir/$port" --logfile "$cluster_dir/$port/redis.log" \
      --pidfile "$cluster_dir/$port/redis.pid" --save "" --appendonly no >/dev/null)
  fi
done
for port in $cluster_ports; do
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 || { log "Redis Cluster node $port did not start (see $cluster_dir/$port/redis.log)"; exit 1; }
done
cluster_state() { redis-cli -h 127.0.0.1 -p 7000 cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }
known_nodes() { redis-cli -h 127.0.0.1 -p 7000 cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
if [ "$(known_nodes)" != "6" ]; then
  # Not formed yet (each node knows only itself): form it. A partly formed cluster is not
  # repaired here: stop the nodes and remove the directory to start over.
  if [ "$(known_nodes)" = "1" ]; then
    log "forming the Redis Cluster (3 masters, 3 replicas)"
    redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 \
      127.0.0.1:7003 127.0.0.1:7004 127.0.0.1:7005 --cluster-replicas 1 --cluster-yes >/dev/null
  else
    log "the Redis Cluster on 7000-7005 is partly formed ($(known_nodes) nodes known); to start over:"
    log "  for p in $cluster_ports; do redis-cli -p \$p shutdown nosave; done; rm -rf $cluster_dir"
    exit 1
  fi
fi
for _ in $(seq 1 150); do [ "$(cluster_state)" = "ok" ] && break; sleep 0.2; done
[ "$(cluster_state)" = "ok" ] || { log "Redis Cluster state is not ok: redis-cli -p 7000 cluster info"; exit 1; }

if ! [ -f /usr/lib/softhsm/libsofthsm2.so ] && ! command -v softhsm2-util >/dev/null; then
  log "installing SoftHSM2"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq softhsm2 >/dev/null
fi

# HAProxy: the load balancer of the scale-out test (crates/coffer-server/tests/scale_out.rs). Only
# the binary is needed; the package's own service is not started by the test.
if ! command -v haproxy >/dev/null; then
  log "installing haproxy"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq haproxy >/dev/null
fi

# Headless Chromium and its WebDriver: the ballots app's browser test.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null
fi

if ! command -v moto_server >/dev/null; then
  log "installing moto[server]"
  python3 -m pip install -q 'moto[server]'
fi
# The official AWS Encryption SDK for Python: the other side of the streaming-format interop tests;
# with the Material Providers Library (MPL), whose raw AES keyring tools/dr_decrypt.py uses.
if ! python3 -c 'import aws_encryption_sdk, aws_cryptographic_material_providers' 2>/dev/null; then
  log "installing aws-encryption-sdk[MPL] (Python)"
  python3 -m pip install -q 'aws-encryption-sdk[MPL]'
fi
log "PostgreSQL, Redis, Redis Cluster, SoftHSM2, HAProxy, Chromium, moto and the Python AWS Encryption SDK ready"
