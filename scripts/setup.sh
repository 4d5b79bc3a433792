#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install tunelab into it. Usage: scripts/setup.sh [extras]
# With "dev", also the browser the console's browser test drives: Debian's chromium and chromedriver.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TUNELAB_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" scripts/install.py "${1:-}" 2>&1 | grep -v "is ignored"
if [ "${1:-}" = dev ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver; install Debian's" \
      "chromium and chromium-driver packages (no apt-get here)" >&2
    exit 1
  fi
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
