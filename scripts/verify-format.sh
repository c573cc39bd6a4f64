#!/usr/bin/env bash
# Independent check of docs/FORMAT.md: a Python implementation written from the document decodes
# every golden vector. Installs Python's `cryptography` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet 'cryptography>=42'
python3 tests/golden/verify_format.py
python3 tests/golden/verify_stream.py
