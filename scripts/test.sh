#!/usr/bin/env bash
# Install (dev extras) into the virtualenv and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
VENV="${TUNELAB_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest "$@"
