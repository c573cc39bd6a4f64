#!/usr/bin/env bash
# Sets up a SoftHSM2 token for the PKCS#11 tests and benchmarks of coffer-pkcs11. Idempotent.
#
#   eval "$(scripts/softhsm-setup.sh [DIR])"
#
# DIR defaults to ${TMPDIR:-/tmp}/coffer-softhsm. The script installs softhsm2 (apt-get, as root)
# if it is missing, writes DIR/softhsm2.conf with tokens under DIR/tokens, initializes a token
# labelled coffer-test (SO PIN 5678, user PIN 1234) unless it exists, writes the user PIN to
# DIR/user.pin, and prints `export` lines for SOFTHSM2_CONF, COFFER_TEST_PKCS11_MODULE,
# COFFER_TEST_PKCS11_TOKEN and COFFER_TEST_PKCS11_PIN_FILE on stdout. Everything else goes to
# stderr. These PINs are for throwaway test tokens only.
set -euo pipefail

dir=${1:-${TMPDIR:-/tmp}/coffer-softhsm}
label=coffer-test
so_pin=5678
user_pin=1234

candidates=(
  /usr/lib/softhsm/libsofthsm2.so
  /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
  /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so
  /usr/local/lib/softhsm/libsofthsm2.so
  /opt/homebrew/lib/softhsm/libsofthsm2.so
)

find_module() {
  if [ -n "${COFFER_TEST_PKCS11_MODULE:-}" ] && [ -f "$COFFER_TEST_PKCS11_MODULE" ]; then
    echo "$COFFER_TEST_PKCS11_MODULE"
    return 0
  fi
  for m in "${candidates[@]}"; do
    if [ -f "$m" ]; then
      echo "$m"
      return 0
    fi
  done
  return 1
}

if ! module=$(find_module) || ! command -v softhsm2-util >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "softhsm-setup: installing softhsm2 with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y softhsm2 >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y softhsm2 >&2; }
  fi
  if ! module=$(find_module) || ! command -v softhsm2-util >/dev/null 2>&1; then
    echo "softhsm-setup: SoftHSM2 is not installed (no libsofthsm2.so or softhsm2-util);" \
      "install it, e.g. 'apt-get install softhsm2', or set COFFER_TEST_PKCS11_MODULE" >&2
    exit 1
  fi
fi

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd -P)
conf="$dir/softhsm2.conf"
cat >"$conf.tmp" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
mv "$conf.tmp" "$conf"
export SOFTHSM2_CONF=$conf

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]*${label}[[:space:]]*$"; then
  echo "softhsm-setup: token '$label' already exists in $dir/tokens" >&2
else
  softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$user_pin" >&2
fi

printf '%s\n' "$user_pin" >"$dir/user.pin.tmp"
mv "$dir/user.pin.tmp" "$dir/user.pin"

printf 'export SOFTHSM2_CONF=%q\n' "$conf"
printf 'export COFFER_TEST_PKCS11_MODULE=%q\n' "$module"
printf 'export COFFER_TEST_PKCS11_TOKEN=%q\n' "$label"
printf 'export COFFER_TEST_PKCS11_PIN_FILE=%q\n' "$dir/user.pin"
