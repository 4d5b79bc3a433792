#!/usr/bin/env bash
# The main job on a fresh machine: install, fine-tune the shipped MiniLM on Rotten Tomatoes,
# evaluate it on the held-out test file, and predict a few sentences.
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
