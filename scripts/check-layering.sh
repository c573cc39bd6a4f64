#!/usr/bin/env bash
# coffer-core must stay free of async runtimes, databases and network stacks (docs/DESIGN.md §L2).
set -euo pipefail
forbidden='^(tokio|sqlx|sqlx-[a-z-]+|redis|aws-sdk-[a-z0-9-]+|reqwest|hyper|hyper-[a-z-]+)$'
for profile in "" "--no-default-features --features fips"; do
  # shellcheck disable=SC2086
  found=$(cargo tree -p coffer-core $profile -e normal,build --prefix none --format '{p}' 2>/dev/null \
    | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
  if [ -n "$found" ]; then
    echo "layering check failed: coffer-core ${profile:-(default)} depends on:" >&2
    echo "$found" >&2
    exit 1
  fi
done
# coffer-keys holds traits for everything remote: no database, cache, HSM or cloud client.
forbidden_keys='^(sqlx|sqlx-[a-z-]+|redis|aws-sdk-[a-z0-9-]+|aws-config|reqwest|hyper|hyper-[a-z-]+|cryptoki)$'
found=$(cargo tree -p coffer-keys -e normal,build --prefix none --format '{p}' 2>/dev/null \
  | awk '{print $1}' | sort -u | grep -E "$forbidden_keys" || true)
if [ -n "$found" ]; then
  echo "layering check failed: coffer-keys depends on:" >&2
  echo "$found" >&2
  exit 1
fi
# The reference application is built only on the public library crates, like any user's app.
found=$(cargo tree -p coffer-ballots -e normal --prefix none --format '{p}' 2>/dev/null \
  | awk '{print $1}' | sort -u | grep -E '^coffer-(server|cli|postgres|s3|pkcs11|aws-kms)$' || true)
if [ -n "$found" ]; then
  echo "layering check failed: apps/ballots depends on:" >&2
  echo "$found" >&2
  exit 1
fi
# Only coffer-core and coffer-aead call the crypto module: no other crate names aws-lc-rs as a
# direct [dependencies] entry (TLS through rustls's aws-lc-rs provider is reached through rustls;
# dev-dependencies, e.g. a benchmark's bare-primitive baseline, are not shipped).
found=$(cargo metadata --no-deps --format-version 1 2>/dev/null | python3 -c '
import json, sys
allowed = {"coffer-core", "coffer-aead"}
for p in json.load(sys.stdin)["packages"]:
    if p["name"] in allowed:
        continue
    for d in p["dependencies"]:
        if d["name"] == "aws-lc-rs" and d.get("kind") is None:
            print(p["name"])
')
if [ -n "$found" ]; then
  echo "layering check failed: these crates name aws-lc-rs in [dependencies] (call coffer_core::digest, token, cache_entry or datakey instead):" >&2
  echo "$found" >&2
  exit 1
fi
# No source file grows past 1 000 lines: a file that does is doing several jobs (docs/DESIGN.md §L12).
long=$(find crates/*/src apps/*/src -name '*.rs' -exec awk 'END { if (NR > 1000) print FILENAME " (" NR " lines)" }' {} \;)
if [ -n "$long" ]; then
  echo "layering check failed: split these files along their seams (at most 1 000 lines each):" >&2
  echo "$long" >&2
  exit 1
fi
echo "layering: coffer-core has no tokio, sqlx, redis, aws-sdk, reqwest or hyper; coffer-keys no database, cache, HSM or cloud client; apps/ballots only the library crates; aws-lc-rs only under coffer-core and coffer-aead; no source file over 1 000 lines"
