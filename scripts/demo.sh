#!/usr/bin/env bash
# The main job on a fresh machine: install, fine-tune the shipped MiniLM on Rotten Tomatoes,
# evaluate it on the held-out test file, predict a few sentences, export an int8 copy, and serve it
# over HTTP (one authenticated request, then a clean SIGTERM shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${TUNELAB_VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"

tunelab data prepare rotten-tomatoes data/rotten-tomatoes
tunelab train examples/sentiment.yaml --overwrite
tunelab eval runs/sentiment/best --data data/rotten-tomatoes/test.csv > runs/sentiment/test_metrics.json
printf '%s\n' "the service was slow and rude" "a warm, funny and beautifully acted film" \
  | tunelab predict runs/sentiment/best
tunelab export runs/sentiment/best --to runs/sentiment-int8 --quantize int8 --overwrite > /dev/null

TUNELAB_SERVE_API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
export TUNELAB_SERVE_API_KEY
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
tunelab serve runs/sentiment-int8 --port "$PORT" 2> runs/serve.log &
SERVER=$!
trap 'kill "$SERVER" 2> /dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "127.0.0.1:$PORT/health" > /dev/null && break
  sleep 0.2
done
curl -sf "127.0.0.1:$PORT/v1/predict" -H "Authorization: Bearer $TUNELAB_SERVE_API_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"inputs": ["the service was slow and rude", "a warm, funny and beautifully acted film"]}'
echo
kill -TERM "$SERVER"
wait "$SERVER"
echo "server stopped cleanly; its JSON access log is in runs/serve.log"
