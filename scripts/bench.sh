#!/usr/bin/env bash
# Runs the criterion benchmarks and prints a summary next to baselines measured in the same run:
# raw aws-lc-rs calls (inside the criterion groups) and `openssl speed` for AES-256-GCM.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== rustc: $(rustc --version)"
scripts/services-up.sh
cargo bench -p coffer-core --bench field -- --noplot "$@"
cargo bench -p coffer-core --bench stream -- --noplot "$@"
# `coffer file` end to end: 256 MiB and 2 GiB, one thread and every core, peak RSS, beside openssl enc.
scripts/bench-files.sh
# Keys: L1 hit, local-KEK unwrap, L1 miss served by L2 (Redis) or the KEK, SoftHSM2 wrap/unwrap.
cargo bench -p coffer-store --bench keyring -- --noplot "$@"
cargo bench -p coffer-pkcs11 --bench pkcs11 -- --noplot "$@"
# AWS KMS through moto (a long release build of the AWS SDK): BENCH_KMS=1 make bench
if [ "${BENCH_KMS:-0}" = 1 ]; then
  cargo bench -p coffer-aws-kms --bench kms -- --noplot "$@"
fi
# S3 client-side encryption through moto: 64 MiB put/get and a 64 KiB range, each beside plain
# unencrypted object_store calls of the same size in the same run.
cargo bench -p coffer-s3 --bench s3 -- --noplot "$@"
# The key store at many scopes: first encrypt on a never-touched scope (L1+L2 miss) vs a warm
# encrypt, and bulk scope creation vs one by one, on SQLite and PostgreSQL.
cargo bench -p coffer-store --bench scale -- --noplot "$@"
# rotate-kek of COFFER_BENCH_DEKS (default 100 000) DEKs on PostgreSQL, DEKs/s.
cargo bench -p coffer-store --bench rotate_kek
# Encrypted PostgreSQL columns vs the same table in plaintext, same run: inserts, select-by-id,
# migration and re-encryption of COFFER_BENCH_ROWS (default 1 000 000) rows with 1 and 2 workers,
# blind-index equality and prefix search latency. BENCH_COLUMNS=0 skips it.
if [ "${BENCH_COLUMNS:-1}" = 1 ]; then
  cargo bench -p coffer-postgres --bench columns
fi
# Backups: pg_dump alone vs coffer backup (pg_dump | encrypt), same database, same run; peak RSS.
# COFFER_BENCH_BACKUP_ROWS (default 400 000, ~440 MB of dump); BENCH_BACKUP=0 skips it.
if [ "${BENCH_BACKUP:-1}" = 1 ]; then
  scripts/bench-backup.sh
fi
# Server CPU of one encrypt request at batch 1 beside the no-crypto echo, in process (thread CPU
# time, blocks of the two alternating; about 30 s).
cargo bench -p coffer-server --bench encrypt_path
# The encryption service under load (coffer serve, wrk, 1 000 connections): encrypt with batches
# of 1 and 100 beside the no-crypto echo endpoint in the same run; req/s, p50/p99, server CPU per
# 1 000 fields. BENCH_SERVICE=0 skips it.
if [ "${BENCH_SERVICE:-1}" = 1 ]; then
  scripts/bench-service.sh
fi
# The ballots app under 10 000 voter connections, encryption on vs off interleaved (3 pairs of
# 60 s runs, about 8 min): votes/s, p50/p99, KEK calls, peak RSS. BENCH_BALLOTS=0 skips it.
if [ "${BENCH_BALLOTS:-1}" = 1 ]; then
  scripts/bench-ballots.sh
fi
# Python (crates/coffer-py): the wheel against cryptography's AESGCM and Fernet per value and per
# 10 000-value batch, and Django bulk_create of 10 000 rows encrypted vs unencrypted, same run.
# BENCH_PYTHON=0 skips it.
if [ "${BENCH_PYTHON:-1}" = 1 ]; then
  scripts/test-python.sh --setup
  cargo build -q -p coffer-cli
  "$target/py-venv/bin/python" crates/coffer-py/bench/bench.py --coffer "$target/debug/coffer"
fi
if command -v openssl >/dev/null; then
  echo "== baseline: $(openssl version) speed -evp aes-256-gcm (64-byte blocks, 1 core)"
  openssl speed -evp aes-256-gcm -bytes 64 -seconds 2 2>/dev/null | tail -1 || true
  echo "== baseline: openssl speed -evp aes-256-gcm -bytes 65536 (1 core)"
  openssl speed -evp aes-256-gcm -bytes 65536 -seconds 2 2>/dev/null | tail -1 || true
fi
python3 scripts/bench_summary.py "$target/criterion"
