#!/usr/bin/env bash
# Set up (if needed), then run the main job: permuted MNIST with m=0 vs m=1.35 (~5 min, 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/larq-meta demo "$@"
