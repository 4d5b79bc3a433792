#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install tunelab into it. Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TUNELAB_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" scripts/install.py "${1:-}" 2>&1 | grep -v "is ignored"
