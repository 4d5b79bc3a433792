#!/usr/bin/env bash
# Install (dev extras) into the virtualenv, lint (ruff, mypy), and run the whole test suite, slow
# end-to-end tests included (import-linter's contracts run inside it, in tests/test_contracts.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
VENV="${TUNELAB_VENV:-.venv}"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
