#!/usr/bin/env bash
# Install (dev extras) into the virtualenv, lint, and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
VENV="${TUNELAB_VENV:-.venv}"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
exec "$VENV/bin/python" -m pytest "$@"
