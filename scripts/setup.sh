#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install tunelab into it. Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TUNELAB_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" scripts/install.py "${1:-}" 2>&1 | grep -v "is ignored"
# With "dev", also what the tests need from Debian, each only when missing: the browser the console's
# browser test drives (chromium, chromedriver) and the Fashion-MNIST images of the vision tests and bench.
MISSING=()
if [ "${1:-}" = dev ]; then
  { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || MISSING+=(chromium chromium-driver)
  [ -d /usr/share/datasets/fashion-mnist ] || MISSING+=(dataset-fashion-mnist)
fi
if [ ${#MISSING[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: the dev tools need Debian's packages ${MISSING[*]} (no apt-get here)" >&2
    exit 1
  fi
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi
