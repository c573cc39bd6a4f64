#!/usr/bin/env bash
# The FIPS profile must link the certified AWS-LC-FIPS 3.x module (aws-lc-fips-sys 0.13.*, certificate
# #5314) and nothing else that implements cryptography in C: no aws-lc-sys, no ring (docs/DESIGN.md §C9).
set -euo pipefail
tree=$(cargo tree -p coffer-cli --no-default-features --features fips,pkcs11 -e normal,build --prefix none --format '{p}' | awk '{print $1" "$2}' | sort -u)
if ! grep -qE '^aws-lc-fips-sys v0\.13\.' <<<"$tree"; then
  echo "fips tree check failed: aws-lc-fips-sys 0.13.* not found" >&2; exit 1
fi
for bad in aws-lc-sys ring aes-siv argon2; do
  if grep -qE "^$bad v" <<<"$tree"; then
    echo "fips tree check failed: $bad is in the FIPS build" >&2; exit 1
  fi
done
echo "fips tree: $(grep -E '^aws-lc-(fips-sys|rs) ' <<<"$tree" | tr '\n' ' ')— no aws-lc-sys, ring, aes-siv or argon2"
