"""Task sequences under `tf.distribute`, on loopback, on this CPU-only machine.

Fast tests (in this process): synchronized BatchNorm in every builder, seen by the BatchNorm
helpers (find, snapshot, restore, recalibrate) and training as plain BatchNorm does without a
strategy; the strategy helpers and the command line's checks.

Slow tests (subprocesses, each bounded by a timeout and killed if it outlives it): the same
permuted-MNIST sequence (real data, 2 tasks x 1 epoch, 2000 training images, 64-64 BNN, EWC,
recalibrated BatchNorm, checkpoints, global batch 100, seed 1) run by `larq-meta
permuted-mnist` in one process (`--strategy none`), under `MirroredStrategy` on 2 logical
CPUs, and under `MultiWorkerMirroredStrategy` with 2 worker processes on 127.0.0.1 (free
ports), the distributed runs with synchronized BatchNorm. Every accuracy-matrix entry must be
within 0.5 point of the single-process run and the final hidden weights within
`HIDDEN_ATOL`; a worker killed after the first task and restarted (with its peer, which stops
on the broken collective) resumes from the checkpoint and ends with the same numbers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from larq_meta import batchnorm, distribute, models
from larq_meta.checkpoint import read_sequence_state
from larq_meta.cli import main

#: Final hidden weights of a distributed run may differ from the single-process ones by float
#: summation order only (measured: 1e-6); a flipped sign would show as far more.
HIDDEN_ATOL = 1e-3
#: Accuracy-matrix entries: within 0.5 point of the single-process run (the issue's bar).
ACCURACY_ATOL = 0.005
#: Seconds any one subprocess may run before it is killed.
TIMEOUT = 240

RUN = [
    "permuted-mnist", "--m", "1.35", "--width", "64", "--epochs", "1", "--tasks", "2",
    "--train-size", "2000", "--batch-size", "100", "--seed", "1", "--checkpoint",
    "--method", "ewc", "--fisher-samples", "64", "--recalibrate-bn",
]
RUN_DIR = "ewc_m1.35"


# -- fast: synchronized BatchNorm and the helpers ------------------------------------------------


def _builders():
    return {
        "paper_mlp": lambda sync: models.paper_mlp((16, 16), synchronized_bn=sync),
        "float_mlp": lambda sync: models.float_mlp((16,), synchronized_bn=sync),
        "binary_convnet": lambda sync: models.binary_convnet((4, 8), synchronized_bn=sync),
        "paper_convnet": lambda sync: models.paper_convnet(
            (4, 4, 4, 4, 4, 4), (8,), input_shape=(16, 16, 1), synchronized_bn=sync
        ),
    }


@pytest.mark.parametrize("name", sorted(_builders()))
def test_every_builder_has_synchronized_batchnorm_the_helpers_see(name):
    build = _builders()[name]
    plain, synced = build(False), build(True)
    layers = batchnorm.batchnorm_layers(synced)
    assert [layer.name for layer in layers] == [
        layer.name for layer in batchnorm.batchnorm_layers(plain)
    ]
    assert layers and all(layer.synchronized for layer in layers)
    assert not any(layer.synchronized for layer in batchnorm.batchnorm_layers(plain))
    # snapshot / restore / using_batchnorm on synchronized layers
    before = batchnorm.snapshot_batchnorm(synced)
    for layer in layers:
        layer.moving_mean.assign(layer.moving_mean + 1.0)
    changed = batchnorm.snapshot_batchnorm(synced)
    with batchnorm.using_batchnorm(synced, before):
        inside = batchnorm.snapshot_batchnorm(synced)
    after = batchnorm.snapshot_batchnorm(synced)
    for layer_name in before:
        np.testing.assert_array_equal(inside[layer_name][2], before[layer_name][2])
        np.testing.assert_array_equal(after[layer_name][2], changed[layer_name][2])
        np.testing.assert_array_equal(after[layer_name][2], before[layer_name][2] + 1.0)
    batchnorm.restore_batchnorm(synced, before)
    np.testing.assert_array_equal(
        batchnorm.snapshot_batchnorm(synced)[layers[0].name][2], before[layers[0].name][2]
    )


def test_recalibration_on_synchronized_batchnorm_gives_exact_statistics():
    tf.keras.utils.set_random_seed(3)
    model = models.paper_mlp((16, 16), synchronized_bn=True)
    x = np.random.default_rng(0).random((300, 784), np.float32)
    counts = batchnorm.recalibrate_batchnorm(model, x, batch_size=64)
    assert counts == {"bn_1": 300, "bn_2": 300, "bn_3": 300}
    first = model.get_layer("bn_1")
    h = tf.keras.Model(model.inputs, first.input)(x, training=False).numpy()
    np.testing.assert_allclose(first.moving_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), h.var(0), rtol=1e-4, atol=1e-5)


def test_synchronized_batchnorm_trains_as_plain_batchnorm_without_a_strategy():
    rng = np.random.default_rng(1)
    x = rng.random((400, 784), np.float32)
    y = (x[:, :392].sum(1) > x[:, 392:].sum(1)).astype(np.int64)  # a learnable rule
    weights = {}
    for sync in (False, True):
        tf.keras.utils.set_random_seed(5)
        model = models.compiled_paper_mlp((16,), synchronized_bn=sync, jit_compile=False)
        model.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
        weights[sync] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # E[x²]-E[x]² vs var


def test_strategy_helpers_without_a_cluster(tmp_path, monkeypatch):
    strategy = distribute.make_strategy("none")
    assert distribute.num_replicas(strategy) == 1 and distribute.num_workers(strategy) == 1
    assert distribute.is_chief(strategy) and distribute.same_on_all_workers(3, strategy)
    assert distribute.worker_directory(str(tmp_path), strategy) == str(tmp_path)
    with pytest.raises(ValueError, match="strategy"):
        distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="cpu_replicas"):
        distribute.make_strategy("none", cpu_replicas=2)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cpu-replicas", "2"], "--cpu-replicas needs --strategy mirrored"),
        (["--strategy", "multi-worker"], "TF_CONFIG"),
    ],
)
def test_cli_refuses_strategy_options_that_cannot_work(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main([*RUN, *extra, "--output", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err


# -- slow: the same sequence in one process, on 2 replicas and on 2 workers ---------------------


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _environment(tmp, tf_config=None) -> dict:
    env = dict(os.environ, TMPDIR=str(tmp), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _start(argv, log, env) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "larq_meta.cli", *argv], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # our own child's process group
    process.wait()


def _finish(processes, logs, timeout=TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            _kill(process)
    codes = [process.returncode for process in processes]
    if any(codes):
        tails = "\n".join(f"--- {log}\n{open(log).read()[-3000:]}" for log in logs)
        pytest.fail(f"runs exited with {codes} (killed after {timeout} s if negative):\n{tails}")
    return codes


def _cluster(ports, index) -> dict:
    return {
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    }


def _start_workers(output, tmp, ports, tag):
    processes, logs = [], []
    for index in range(len(ports)):
        log = tmp / f"{tag}.worker{index}.log"
        argv = [*RUN, "--strategy", "multi-worker", "--no-jit", "--output", str(output)]
        processes.append(_start(argv, log, _environment(tmp, _cluster(ports, index))))
        logs.append(log)
    return processes, logs


def _outcome(output) -> dict:
    """Accuracy matrix and the final model state (hidden weights, BatchNorm, Adam) of a run,
    read from its results and its last checkpoint."""
    run = os.path.join(output, RUN_DIR)
    with open(os.path.join(run, "results.json")) as f:
        results = json.load(f)
    state = read_sequence_state(os.path.join(run, "checkpoint"))
    reader = tf.train.load_checkpoint(os.path.join(run, "checkpoint", state["checkpoint"]))
    variables = {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("model/") and "OPTIMIZER_SLOT" not in name
    }
    return {"matrix": np.array(results["accuracy_matrix"]), "variables": variables,
            "config": results["config"], "state": state}


def _assert_same_run(outcome, reference):
    np.testing.assert_allclose(outcome["matrix"], reference["matrix"], atol=ACCURACY_ATOL)
    assert outcome["state"]["task"] == 2 and outcome["state"]["epochs_done"] == 0
    assert set(outcome["variables"]) == set(reference["variables"])
    kernels = [name for name in reference["variables"] if "kernel" in name]
    assert len(kernels) == 3
    for name, value in reference["variables"].items():
        np.testing.assert_allclose(outcome["variables"][name], value, atol=HIDDEN_ATOL, err_msg=name)
    for name in kernels:
        same = np.mean(np.sign(outcome["variables"][name]) == np.sign(reference["variables"][name]))
        assert same > 0.999, name


@pytest.fixture(scope="module")
def single_and_mirrored(tmp_path_factory):
    """The single-process run and the MirroredStrategy run (2 logical CPUs), side by side."""
    tmp = tmp_path_factory.mktemp("distribute")
    runs = {
        # no XLA in the reference either: XLA:CPU has no collectives, so the distributed
        # runs turn it off by themselves (the mirrored run checks that it does)
        "single": ["--strategy", "none", "--no-jit"],
        "mirrored": ["--strategy", "mirrored", "--cpu-replicas", "2"],
    }
    processes, logs = [], []
    for name, extra in runs.items():
        logs.append(tmp / f"{name}.log")
        processes.append(_start([*RUN, *extra, "--output", str(tmp / name)], logs[-1], _environment(tmp)))
    _finish(processes, logs)
    outcomes = {name: _outcome(tmp / name) for name in runs}
    outcomes["mirrored_log"] = open(logs[1]).read()
    return outcomes


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_matches_one_process(single_and_mirrored):
    reference, mirrored = single_and_mirrored["single"], single_and_mirrored["mirrored"]
    assert mirrored["config"]["strategy"] == "MirroredStrategy"
    assert mirrored["config"]["replicas"] == 2 and reference["config"]["replicas"] == 1
    assert mirrored["config"]["batch_size"] == reference["config"]["batch_size"] == 100
    assert reference["matrix"][1, 1] > 0.6  # it learned (real labels)
    assert "not compiled with XLA" in single_and_mirrored["mirrored_log"]
    _assert_same_run(mirrored, reference)


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_process_and_survive_a_killed_worker(
    single_and_mirrored, tmp_path
):
    """2 workers on 127.0.0.1; worker 1 is killed during task 2, its peer stops on the broken
    collective, both restart with the same command and finish: the run ends with the
    single-process numbers (so also with those of an uninterrupted 2-worker run, which
    matched them to 1e-6 when measured)."""
    output = tmp_path / "workers"
    ports = _free_ports(2)
    processes, logs = _start_workers(output, tmp_path, ports, "first")
    state_file = output / RUN_DIR / "checkpoint" / "sequence_state.npz"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not state_file.exists() and time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(0.2)
        assert state_file.exists(), "no checkpoint after task 1:\n" + open(logs[0]).read()[-2000:]
        _kill(processes[1])  # worker 1 dies during task 2
        try:  # the chief's next collective fails: it stops by itself (measured: ~3 s)
            processes[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    finally:
        for process in processes:
            _kill(process)
    assert processes[0].returncode != 0  # it did not finish without its peer
    state = read_sequence_state(str(output / RUN_DIR / "checkpoint"))
    assert state["task"] == 1 and state["epochs_done"] == 0
    assert not (output / RUN_DIR / "results.json").exists()
    left_by_the_killed = {n for n in os.listdir(tmp_path) if n.startswith("larq-meta-worker")}

    processes, logs = _start_workers(output, tmp_path, ports, "restart")
    _finish(processes, logs)
    outcome = _outcome(output)
    assert outcome["config"]["strategy"] == "CollectiveAllReduceStrategy"
    assert outcome["config"]["workers"] == 2 and outcome["config"]["replicas"] == 2
    assert outcome["config"]["batch_size"] == 100
    restarted = open(logs[0]).read()
    assert "task 2/2" in restarted and "task 1/2" not in restarted  # resumed, not retrained
    _assert_same_run(outcome, single_and_mirrored["single"])
    # only the chief wrote results; the restarted worker removed its temporary folder
    assert sorted(os.listdir(output / RUN_DIR)) == [
        "accuracy_matrix.csv", "checkpoint", "epochs.csv", "hidden_weights.png", "results.json"
    ]
    now = {n for n in os.listdir(tmp_path) if n.startswith("larq-meta-worker")}
    assert now == left_by_the_killed
