#!/usr/bin/env bash
# The Python package (crates/coffer-py): builds the wheel with maturin and runs its pytest suite
# against the local PostgreSQL. Sets up what it needs, idempotently: a virtualenv under the Cargo
# target directory with maturin, pytest, Django, SQLAlchemy, psycopg and cryptography.
#   scripts/test-python.sh            wheel + suite
#   scripts/test-python.sh --setup    only the virtualenv and the wheel (make bench uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="$TARGET/py-venv"
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "test-python: $PY is older than 3.11 (the wheel is abi3 for 3.11+); set PYTHON=" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r crates/coffer-py/requirements-dev.txt

# The wheel, in the release profile (the figures in docs/BENCHMARKS.md come from the same build).
start=$(date +%s)
rm -rf "$TARGET/wheels"
"$VENV/bin/maturin" build --release --quiet -m crates/coffer-py/Cargo.toml -o "$TARGET/wheels"
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$TARGET"/wheels/coffer-*.whl
echo "test-python: wheel built and installed in $(( $(date +%s) - start )) s"
[ "${1:-}" = "--setup" ] && exit 0

# The CLI and the Rust interop example the suite runs, built as `cargo test --workspace` builds
# them (`make test` runs this target first, so test-default then finds them built).
cargo test --workspace --no-run --quiet 2>/dev/null || cargo test --workspace --no-run
export COFFER_BIN="$TARGET/debug/coffer"
export COFFER_RUST_INTEROP="$TARGET/debug/examples/rust_interop"
export CARGO_TARGET_DIR="$TARGET"
cd crates/coffer-py
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider -o faulthandler_timeout=300
