#!/usr/bin/env bash
# Set up (if needed), then run the test suite: every test but those marked `slow` (the long
# real-data runs and the examples in smoke mode), under 10 minutes on 2 cores. CI runs this,
# then the slow tests (`.venv/bin/python -m pytest -m slow`). Arguments go to pytest; a
# `-m` of your own replaces the default selection (e.g. `bash scripts/test.sh -m ""` for all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
selection=(-m "not slow")
for arg in "$@"; do
    case "$arg" in -m|-m*) selection=() ;; esac
done
exec .venv/bin/python -m pytest "${selection[@]}" "$@"
