"""Every example runs in smoke mode (real data, seconds) and writes what it promises; none
imports the command line or a private name.

The examples run as subprocesses, two at a time (CI has 2 cores), started once for the
module; each test then checks one example's exit status and files.
"""

import ast
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Example -> files (relative to --output) that a smoke run must write.
OUTPUTS = {
    "permuted_mnist": ["task_accuracies.png", "results.json"],
    "train_sequence_and_resume": [
        "task_accuracies.png", "accuracy_matrix.png", "epochs.csv",
        "uninterrupted/results.json", "resumed/results.json", "checkpoint/sequence_state.npz",
    ],
    "mnist_fashion": [
        "task_accuracies.png", "accuracy_matrix.png", "m0/results.json", "m1.5/results.json",
    ],
    "stream_learning": ["stream_accuracy.png", "m0/results.json", "m2.5/results.json"],
    "split_mnist": ["accuracy_matrices.png", "m0/results.json", "m1.35/results.json"],
    "baselines_ewc": [
        "accuracy_matrix.png", "task_accuracies.png", "Adam/results.json", "EWC/results.json",
        "random_consolidation/results.json", "metaplastic/results.json",
    ],
    "your_own_data": [
        "accuracy_matrix.png", "m1.35/results.json", "per_layer/results.json",
        "schedule/results.json",
    ],
    "choose_m": [
        "permuted_mnist/trials.csv", "permuted_mnist/trials.txt", "permuted_mnist/objective.png",
    ],
    "export_android": ["model.tflite", "model_float.tflite", "export_report.json"],
    "hidden_weights": [
        "quadratic_toy_d2.png", "quadratic_toy_d50.png", "flip_importance.png",
        "hidden_weights.png", "summary.json",
    ],
}


def test_every_example_is_listed():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(OUTPUTS)


#: Run through the environment variable instead of --smoke (the other way to ask for it).
SMOKE_BY_ENVIRONMENT = "hidden_weights"


def _run(name: str, output: Path) -> dict:
    by_environment = name == SMOKE_BY_ENVIRONMENT
    env = {**os.environ, "LARQ_META_SMOKE": "1" if by_environment else "0",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(EXAMPLES / f"{name}.py"), "--output", str(output)]
    if not by_environment:
        command.append("--smoke")
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return {"process": process, "seconds": time.perf_counter() - started, "output": output}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Start every example in smoke mode, two at a time; name -> future of its run."""
    root = tmp_path_factory.mktemp("examples")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(_run, name, root / name) for name in OUTPUTS}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_smoke(name, smoke_runs):
    run = smoke_runs[name].result()
    process = run["process"]
    assert process.returncode == 0, (
        f"examples/{name}.py in smoke mode exited {process.returncode} after "
        f"{run['seconds']:.0f} s\n"
        f"--- stdout (end) ---\n{process.stdout[-3000:]}\n--- stderr (end) ---\n"
        f"{process.stderr[-5000:]}"
    )
    missing = [f for f in OUTPUTS[name] if not (run["output"] / f).is_file()]
    assert not missing, (
        f"examples/{name}.py in smoke mode did not write {missing} in {run['output']}"
    )
    assert "Traceback" not in process.stderr


@pytest.mark.slow
def test_smoke_environment_variable(smoke_runs):
    """LARQ_META_SMOKE=1 without --smoke gives the smoke run: the toy problem of
    hidden_weights.py has d = 50 in smoke mode, d = 500 otherwise."""
    run = smoke_runs[SMOKE_BY_ENVIRONMENT].result()
    assert run["process"].returncode == 0, run["process"].stderr[-3000:]
    assert (run["output"] / "quadratic_toy_d50.png").is_file()
    assert not (run["output"] / "quadratic_toy_d500.png").exists()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement of a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def _private_attributes(path: Path) -> list[str]:
    """`larq_meta.<...>._name` attribute chains used in a file."""
    used = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "larq_meta":
                used.append(".".join(["larq_meta", *reversed(chain)]))
    return used


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_uses_public_api_only(name):
    path = EXAMPLES / f"{name}.py"
    problems = []
    for module, names in _imports(path):
        if module == "larq_meta.cli" or module.startswith("larq_meta.cli."):
            problems.append(f"imports {module} (examples must not use the command line)")
        if module.startswith("larq_meta") and any(p.startswith("_") for p in module.split(".")):
            problems.append(f"imports the private module {module}")
        if module.startswith("larq_meta"):
            private = [n for n in names if n.startswith("_")]
            if private:
                problems.append(f"imports private names {private} from {module}")
            if "cli" in names:
                problems.append(f"imports cli from {module}")
    problems += [f"uses {chain}" for chain in _private_attributes(path)]
    assert not problems, f"examples/{name}.py: " + "; ".join(problems)


def test_private_name_check_catches_violations(tmp_path):
    """The checks above find what they look for."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import larq_meta._utils\nfrom larq_meta.tasks import _check_data\n"
        "from larq_meta.cli import main\nx = larq_meta.models._uniform\n"
    )
    imports = _imports(bad)
    assert ("larq_meta._utils", []) in imports
    assert ("larq_meta.tasks", ["_check_data"]) in imports
    assert ("larq_meta.cli", ["main"]) in imports
    assert _private_attributes(bad) == ["larq_meta.models._uniform"]


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_has_keras_io_header(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    header = text.split('"""')[1]
    for field in ("Title:", "Author: larq-meta developers", "Date created:", "Description:"):
        assert field in header, f"examples/{name}.py: header lacks {field!r}"
    lines = len(text.splitlines())
    assert 60 <= lines <= 200, f"examples/{name}.py has {lines} lines (60-200)"
    assert "--smoke" in text and "LARQ_META_SMOKE" in text and "--output" in text
