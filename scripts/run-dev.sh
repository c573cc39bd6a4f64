#!/usr/bin/env bash
# `make run`: Coffer's main job on the embedded defaults, for development. Builds the CLI, then in
# ./.coffer-dev/ (gitignored; COFFER_DEV_DIR overrides it) starts `coffer serve --dev` (SQLite key store
# coffer-keys.db, development KEK coffer-dev.key generated on first run), makes an admin token, a
# tenant token for tenant `acme` and the scope `acme:patients`, and prints one curl that encrypts a
# value and one that decrypts it. It stays in the foreground until Ctrl-C.
# Development only: the KEK is a plain file beside the key store (docs/SERVICE.md).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo=${CARGO:-cargo}
dir=${COFFER_DEV_DIR:-$root/.coffer-dev}
port=${COFFER_DEV_PORT:-8200}
tenant=acme
scope=acme:patients

command -v curl >/dev/null || { echo "run-dev: needs curl" >&2; exit 2; }

echo "run-dev: building the coffer CLI (cargo build -p coffer-cli) …" >&2
"$cargo" build --quiet -p coffer-cli --manifest-path "$root/Cargo.toml"
target_dir=$("$cargo" metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
coffer=$target_dir/debug/coffer

mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
# The embedded defaults apply only where no coffer.toml is found.
unset COFFER_CONFIG

# Tokens are made once and kept (mode 0600) beside the key store, so every run prints the same ones.
umask 077
[ -s admin.token ] || "$coffer" tokens create --dev --admin --label run-dev >admin.token
[ -s tenant.token ] || "$coffer" tokens create --dev --tenant "$tenant" --label run-dev >tenant.token
admin=$(cat admin.token)
token=$(cat tenant.token)

# Port 8200 when it is free, else any free one (the service prints the address it bound).
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "run-dev: port $port is taken; asking for a free one" >&2
  port=0
fi
: >serve.out
"$coffer" serve --dev --listen "127.0.0.1:$port" >serve.out 2>serve.log &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; echo "run-dev: stopped" >&2; exit 0' INT TERM
trap 'kill "$pid" 2>/dev/null || true' EXIT

until grep -q '^listening on ' serve.out; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "run-dev: coffer serve stopped; its log ($dir/serve.log):" >&2
    cat serve.log >&2
    exit 1
  fi
  sleep 0.2
done
url=$(sed -n 's/^listening on //p' serve.out | head -n 1)

json='content-type: application/json'
created=$(curl -sS -H "Authorization: Bearer $admin" -H "$json" \
  -d "{\"scope\":\"$scope\",\"tenant\":\"$tenant\"}" "$url/v1/admin/scopes")
case $created in
*'"error"'*) echo "run-dev: creating scope $scope failed: $created" >&2; exit 1 ;;
esac

encrypt_body='{"encoding":"utf8","items":[{"column":"ssn","context":"patient-42","plaintext":"123-45-6789"}]}'
sealed=$(curl -sS -H "Authorization: Bearer $token" -H "$json" -d "$encrypt_body" "$url/v1/scopes/$scope/encrypt")
ciphertext=$(printf '%s' "$sealed" | sed -n 's/.*"ciphertext":"\([^"]*\)".*/\1/p')
if [ -z "$ciphertext" ]; then
  echo "run-dev: the first encryption failed: $sealed" >&2
  exit 1
fi
decrypt_body="{\"encoding\":\"utf8\",\"items\":[{\"column\":\"ssn\",\"context\":\"patient-42\",\"ciphertext\":\"$ciphertext\"}]}"

cat <<EOF

Coffer is serving on $url (development mode: key store and KEK in $dir).
Tenant '$tenant' owns scope '$scope'. From another shell:

# encrypt
curl -s -H 'Authorization: Bearer $token' -H '$json' \\
     -d '$encrypt_body' \\
     $url/v1/scopes/$scope/encrypt

# decrypt
curl -s -H 'Authorization: Bearer $token' -H '$json' \\
     -d '$decrypt_body' \\
     $url/v1/scopes/$scope/decrypt

Admin token: $admin (key administration, no data; docs/SERVICE.md lists every endpoint).
Logs (JSON lines): $dir/serve.log. Ctrl-C stops the service.
EOF

wait "$pid"
