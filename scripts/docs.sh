#!/usr/bin/env bash
# Build the documentation site strictly into build/site (default), or serve it with live reload:
#   bash scripts/docs.sh            # mkdocs build --strict: a warning or a broken link fails
#   bash scripts/docs.sh serve      # http://127.0.0.1:8000 (extra arguments go to mkdocs)
# Needs the package's venv (bash scripts/setup.sh) with the docs tools; installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh
fi
if ! .venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
    echo "docs.sh: installing the docs tools into .venv (pip install -e '.[docs]')" >&2
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[docs]"
    if ! .venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
        echo "docs.sh: mkdocs, mkdocs-material or mkdocstrings[python] is still missing;" \
             "install them into .venv with pip" >&2
        exit 1
    fi
fi
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's end-of-life banner, not a problem of this site
command="${1:-build}"
case "$command" in
    build) shift || true; exec .venv/bin/python -m mkdocs build --strict "$@" ;;
    serve) shift; exec .venv/bin/python -m mkdocs serve --strict "$@" ;;
    *) echo "usage: bash scripts/docs.sh [build|serve] [mkdocs options]" >&2; exit 2 ;;
esac
