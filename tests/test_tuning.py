"""Keras Tuner search of m over whole task sequences: metrics, resume, distributed, bad input.

Tiny synthetic tasks and models: the time goes into tracing and process start-up.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import larq_meta  # noqa: F401  (legacy Keras first)
import tensorflow as tf

pytest.importorskip("keras_tuner")

import checks  # noqa: E402
from larq_meta.cli import main  # noqa: E402
from larq_meta.training import train_sequence  # noqa: E402
from larq_meta.tuning import COMBINED_OBJECTIVE, MetaplasticTuner, make_objective  # noqa: E402

def synthetic_tasks():  # smaller than the trainer tests': many trials run on it
    return checks.synthetic_tasks(n=256, dim=12)


def build_model(hp):
    """A user's build_model: reads m and the (searched) learning rate from hp."""
    return larq_meta.models.compiled_paper_mlp(
        (16,), m=hp.Float("m", 0.0, 3.0), learning_rate=hp.values.get("learning_rate", 0.02),
        num_classes=4, input_shape=(12,), jit_compile=False,
    )


def read_trials(project_dir):
    trials = {}
    for name in os.listdir(project_dir):
        path = os.path.join(project_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            trials[state["trial_id"]] = state
    return trials


@pytest.mark.slow
def test_trial_metrics_equal_a_direct_run_and_results_are_written(tmp_path):
    tasks = synthetic_tasks()
    weights = {"average_accuracy": 1.0, "forgetting": -0.5}
    tuner = MetaplasticTuner(
        build_model, tasks, objective=weights, max_trials=1, seed=3,
        learning_rate_range=(1e-3, 1e-1), directory=str(tmp_path), project_name="eq",
    )
    tuner.search(epochs_per_task=1, batch_size=32, shuffle_seed=5, verbose=0)
    trial = tuner.oracle.get_best_trials(1)[0]
    assert trial.status == "COMPLETED"
    hp = trial.hyperparameters
    assert 0.0 <= hp["m"] <= 3.0 and 1e-3 <= hp["learning_rate"] <= 1e-1

    tf.keras.utils.set_random_seed(3)
    direct = train_sequence(
        build_model(hp), tasks, epochs_per_task=1, batch_size=32, shuffle_seed=5, progress=False
    ).metrics()
    reported = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
    assert reported["average_accuracy"] == direct["average_accuracy"]
    for name in ("backward_transfer", "forgetting", "last_task_accuracy"):
        assert reported[name] == direct[name]
    combined = direct["average_accuracy"] - 0.5 * direct["forgetting"]
    assert reported[COMBINED_OBJECTIVE] == pytest.approx(combined, abs=1e-12)
    assert trial.score == reported[COMBINED_OBJECTIVE] and reported["seconds"] > 0

    project = tmp_path / "eq"
    for name in ("trials.csv", "trials.txt", "objective.png", "larq_meta_search.json"):
        assert (project / name).stat().st_size > 0
    rows = (project / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,status,m,learning_rate,objective,average_accuracy")
    assert len(rows) == 2 and ",COMPLETED," in rows[1]
    assert "*0" in (project / "trials.txt").read_text()
    saved = json.loads((project / "trial_0" / "execution_0" / "results.json").read_text())
    assert saved["metrics"]["average_accuracy"] == direct["average_accuracy"]


class InterruptFourthFit(tf.keras.callbacks.Callback):
    """Ctrl-C when the 4th `fit` starts: the 2nd task of the 2nd trial (2 tasks a trial)."""

    fits = 0

    def on_train_begin(self, logs=None):
        type(self).fits += 1
        if type(self).fits == 4:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_search_resumes_and_reruns_the_unfinished_trial(tmp_path):
    tasks = synthetic_tasks()
    InterruptFourthFit.fits = 0

    def make_tuner():
        # A grid of two points: m = 0 and 3.
        return MetaplasticTuner(
            build_model, tasks, oracle="grid", m_step=3.0, directory=str(tmp_path),
            project_name="resume",
        )

    tuner = make_tuner()
    with pytest.raises(KeyboardInterrupt):
        tuner.search(epochs_per_task=1, batch_size=64, verbose=0, callbacks=[InterruptFourthFit()])
    assert InterruptFourthFit.fits == 4
    project = tmp_path / "resume"
    on_disk = read_trials(project)
    first, second = sorted(on_disk)  # ids "0000", "0001" (no max_trials: 4 digits)
    assert {k: v["status"] for k, v in on_disk.items()} == {first: "COMPLETED", second: "RUNNING"}
    assert on_disk[second]["score"] is None  # not recorded as finished
    interrupted_m = on_disk[second]["hyperparameters"]["values"]["m"]

    resumed = make_tuner()
    resumed.search(epochs_per_task=1, batch_size=64, verbose=0)
    # Only the unfinished trial ran again, with its own hyperparameters; nothing else.
    assert [t["trial_id"] for t in resumed.executed_trials] == [second]
    assert resumed.executed_trials[0]["hyperparameters"]["m"] == interrupted_m
    on_disk = read_trials(project)
    assert {k: v["status"] for k, v in on_disk.items()} == {first: "COMPLETED", second: "COMPLETED"}
    assert sorted(v["hyperparameters"]["values"]["m"] for v in on_disk.values()) == [0.0, 3.0]
    assert resumed.get_best_hyperparameters()[0]["m"] in (0.0, 3.0)
    assert (project / "trials.txt").read_text().count("COMPLETED") == 2

    # A finished search stays finished; other settings are refused before any training.
    again = make_tuner()
    again.search(epochs_per_task=1, batch_size=64, verbose=0)
    assert again.executed_trials == []
    with pytest.raises(ValueError, match="other settings"):
        make_tuner().search(epochs_per_task=2, batch_size=64, verbose=0)


WORKER_SCRIPT = '''
import json, os, sys, time
import numpy as np
import larq_meta
from larq_meta.tuning import MetaplasticTuner, paper_mlp_builder
sys.path.insert(0, {tests_dir!r})
from checks import synthetic_tasks
role, directory = sys.argv[1], sys.argv[2]
tuner = MetaplasticTuner(
    paper_mlp_builder((8,), num_classes=4, input_shape=(12,), learning_rate=0.02,
                      jit_compile=False),
    synthetic_tasks(n=256, dim=12), oracle="grid", m_range=(0.0, 3.0), m_step=1.0, max_trials=4,
    directory=directory, project_name="dist")
if role != "chief":
    # Start both workers together, so that each gets trials.
    open(os.path.join(directory, "ready_" + role), "w").close()
    deadline = time.time() + 120
    while not all(os.path.exists(os.path.join(directory, f"ready_tuner{{i}}")) for i in range(2)):
        if time.time() > deadline:
            sys.exit("barrier timed out")
        time.sleep(0.05)
tuner.search(epochs_per_task=1, batch_size=64, verbose=0)
if role != "chief":
    with open(os.path.join(directory, role + ".ran.json"), "w") as f:
        json.dump(tuner.executed_trials, f)
'''


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_on_loopback_shares_trials_without_duplicates(tmp_path):
    script = tmp_path / "tune_process.py"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script.write_text(textwrap.dedent(WORKER_SCRIPT).format(tests_dir=tests_dir))
    port = str(free_port())
    processes = {}
    try:
        for role in ("chief", "tuner0", "tuner1"):
            env = dict(
                os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=port, TF_CPP_MIN_LOG_LEVEL="2",
            )
            processes[role] = subprocess.Popen(
                [sys.executable, str(script), role, str(tmp_path)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        deadline = time.time() + 240
        for role, process in processes.items():
            output, _ = process.communicate(timeout=max(1, deadline - time.time()))
            assert process.returncode == 0, f"{role} failed:\n{output[-3000:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    trials = read_trials(tmp_path / "dist")
    assert sorted(trials) == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" and t["score"] is not None for t in trials.values())
    grid = sorted(t["hyperparameters"]["values"]["m"] for t in trials.values())
    assert grid == [0.0, 1.0, 2.0, 3.0]
    ran = {
        role: json.loads((tmp_path / f"{role}.ran.json").read_text())
        for role in ("tuner0", "tuner1")
    }
    ids = {role: [t["trial_id"] for t in runs] for role, runs in ran.items()}
    assert ids["tuner0"] and ids["tuner1"], ids  # both workers took trials
    assert not set(ids["tuner0"]) & set(ids["tuner1"]), ids  # no trial ran twice
    assert sorted(ids["tuner0"] + ids["tuner1"]) == ["0", "1", "2", "3"], ids  # none lost
    for runs in ran.values():
        for run in runs:
            recorded = trials[run["trial_id"]]["hyperparameters"]["values"]
            assert run["hyperparameters"]["m"] == recorded["m"]
    # The chief wrote the results table of all trials.
    table = (tmp_path / "dist" / "trials.csv").read_text().splitlines()
    assert len(table) == 5 and all(",COMPLETED," in row for row in table[1:])


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"m_range": (2.0, 1.0)}, "m_range"),
        ({"m_range": (1.0, 1.0)}, "m_range"),
        ({"m_range": (-1.0, 1.0)}, "m_range"),
        ({"m_step": 0.0}, "m_step"),
        ({"learning_rate_range": (0.0, 0.1)}, "learning_rate_range"),
        ({"learning_rate_range": (0.1, 0.01)}, "learning_rate_range"),
        ({"objective": "accuracy"}, "objective"),
        ({"objective": {"average_accuracy": 1.0, "plasticity": 1.0}}, "objective"),
        ({"objective": {}}, "objective"),
        ({"max_trials": 0}, "max_trials"),
        ({"oracle": "hyperband"}, "oracle"),
        ({"tasks": None}, "tasks"),
    ],
)
def test_bad_input_is_refused_before_anything_happens(tmp_path, kwargs, argument):
    arguments = {"build_model": build_model, "tasks": synthetic_tasks(), "max_trials": 2,
                 "directory": str(tmp_path), "project_name": "bad", **kwargs}
    with pytest.raises(ValueError, match=argument):
        MetaplasticTuner(**arguments)
    assert not (tmp_path / "bad").exists()


def test_bad_search_arguments_and_cli_input(tmp_path, capsys):
    tuner = MetaplasticTuner(build_model, synthetic_tasks(), max_trials=1,
                             directory=str(tmp_path), project_name="p")
    with pytest.raises(ValueError, match="epochs_per_task"):
        tuner.search(epochs_per_task=0)
    with pytest.raises(ValueError, match="bn_protocol"):
        tuner.search(bn_protocol="nope")
    with pytest.raises(TypeError, match="learning_rate"):
        tuner.search(learning_rate=0.1)
    assert tuner.executed_trials == []
    assert not [name for name in os.listdir(tmp_path / "p") if name.startswith("trial_")]
    for argv, argument in (
        (["--m-range", "2", "1"], "--m-range"),
        (["--objective", "accuracy"], "--objective"),
        (["--max-trials", "0"], "--max-trials"),
        (["--seed", "-1"], "--seed"),
        (["--lr-step", "10"], "--lr-step"),
    ):
        assert main(["tune", *argv, "--directory", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert argument in err and "Traceback" not in err
    # The command line's own copies of the library's choices.
    import larq_meta.cli.tune
    from larq_meta.batchnorm import BN_PROTOCOLS
    from larq_meta.tuning import ORACLES

    assert larq_meta.cli.tune.BN_PROTOCOLS == BN_PROTOCOLS
    assert larq_meta.cli.tune.ORACLES == ORACLES


def cli_tasks(args):
    """`larq-meta tune`'s task loader for the tests: synthetic tasks, `--train-size` and
    `--test-size` applied as the MNIST loader applies them (the first images)."""
    from larq_meta.tasks import Task, TaskSequence

    tasks = synthetic_tasks()
    return TaskSequence([
        Task(t.name, train=(t.x_train[:args.train_size], t.y_train[:args.train_size]),
             test=(t.x_test[:args.test_size], t.y_test[:args.test_size]))
        for t in tasks
    ], name="synthetic")


CLI_SEARCH = ["--width", "8", "--depth", "1", "--epochs", "1", "--batch-size", "64",
              "--max-trials", "1", "--quiet"]


@pytest.mark.slow
def test_command_line_search_and_resume_safety(tmp_path, monkeypatch, capsys):
    import larq_meta.cli.tune

    monkeypatch.setattr(larq_meta.cli.tune, "load_tasks", cli_tasks)
    where = ["--directory", str(tmp_path), "--project-name", "cli"]
    code = main(["tune", *CLI_SEARCH, *where, "--objective", "average_accuracy=1,forgetting=-0.5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "best hyperparameters: m=" in out and "combined_objective" in out
    assert (tmp_path / "cli" / "objective.png").exists()

    # Resuming with another model width or training-set size is refused, before any
    # training, by one line that lists each differing setting with its old and new value.
    def refused(*changed):
        argv = [*CLI_SEARCH, *where, "--objective", "average_accuracy=1,forgetting=-0.5"]
        for option, value in zip(changed[::2], changed[1::2]):
            if option in argv:
                argv[argv.index(option) + 1] = value
            else:
                argv += [option, value]
        assert main(["tune", *argv]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert "--overwrite" in lines[0]
        return lines[0]

    message = refused("--width", "16")
    assert main(["tune", *CLI_SEARCH, *where, "--objective", "mean_accuracy"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "warning: The tuning metric 'mean_accuracy'" in err[0]
    assert 'objective: {"weights"' in err[1] and '{"name": "average_accuracy"' in err[1]
    assert "other settings" in message
    assert "QuantDense 8 >" in message and "QuantDense 16 >" in message
    message = refused("--train-size", "100")
    assert "train_sizes: [128, 128] -> [100, 100]" in message
    assert "data_digest" in message and "model:" not in message
    message = refused("--width", "16", "--lr", "0.01", "--test-size", "50")
    for setting in ("model:", "optimizer.learning_rate: 0.005 -> 0.01", "test_sizes:"):
        assert setting in message
    trials = read_trials(tmp_path / "cli")
    assert len(trials) == 1  # nothing ran

    # A truncated oracle.json: one line naming the file and what to do.
    oracle = tmp_path / "cli" / "oracle.json"
    oracle.write_text(oracle.read_text()[:20])
    assert main(["tune", *CLI_SEARCH, *where]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(oracle) in err and "truncated or corrupt" in err and "--overwrite" in err


@pytest.mark.slow
def test_a_search_recorded_with_mean_accuracy_resumes(tmp_path):
    """A search directory of an earlier version (metric `mean_accuracy`, fewer settings
    recorded) resumes with the deprecated objective name, and its trials keep their values."""
    project = tmp_path / "old"

    def make_tuner(max_trials):
        return MetaplasticTuner(build_model, synthetic_tasks(), objective="average_accuracy",
                                max_trials=max_trials, seed=1, directory=str(tmp_path),
                                project_name="old")

    make_tuner(1).search(epochs_per_task=1, batch_size=64, verbose=0)
    first = read_trials(project)
    (trial_id, state), = first.items()
    value = state["metrics"]["metrics"]["average_accuracy"]["observations"][0]["value"][0]
    # Rewrite it as the earlier version wrote it.
    trial_json = project / f"trial_{trial_id}" / "trial.json"
    state["metrics"]["metrics"]["mean_accuracy"] = state["metrics"]["metrics"].pop(
        "average_accuracy")
    trial_json.write_text(json.dumps(state))
    settings = json.loads((project / "larq_meta_search.json").read_text())["settings"]
    old = {
        "search": {k: settings[k] for k in ("epochs_per_task", "batch_size", "shuffle_seed")},
        "objective": {"name": "mean_accuracy", "direction": "max"},
        **{k: settings[k] for k in ("m_range", "m_step", "learning_rate_range",
                                    "learning_rate_step", "seed", "executions_per_trial")},
        "tasks": {"name": settings["sequence"], "task_names": settings["task_names"],
                  "scenario": settings["scenario"], "info": settings["task_info"]},
    }
    (project / "larq_meta_search.json").write_text(json.dumps(old))

    with pytest.warns(DeprecationWarning, match="average_accuracy"):
        tuner = MetaplasticTuner(build_model, synthetic_tasks(), objective="mean_accuracy",
                                 max_trials=2, seed=1, directory=str(tmp_path),
                                 project_name="old")
    assert tuner.oracle.objective.name == "average_accuracy"
    with pytest.warns(UserWarning, match="earlier larq-meta"):
        tuner.search(epochs_per_task=1, batch_size=64, verbose=0)
    assert len(tuner.executed_trials) == 1  # only the new trial ran
    rows = (project / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",COMPLETED," in row for row in rows[1:])
    old_row = next(r for r in rows[1:] if r.startswith(f"{trial_id},"))
    assert old_row.split(",")[3] == repr(value)  # objective column of the old trial
    # The record now holds every setting: another epoch count is refused.
    with pytest.raises(ValueError, match="epochs_per_task: 1 -> 2"):
        make_tuner(2).search(epochs_per_task=2, batch_size=64, verbose=0)


def test_objective_names():
    objective, weights = make_objective({"average_accuracy": 1, "forgetting": -0.5})
    assert objective.name == COMBINED_OBJECTIVE and weights == {
        "average_accuracy": 1.0, "forgetting": -0.5}
    assert make_objective("forgetting")[0].direction == "min"
    with pytest.warns(DeprecationWarning, match="mean_accuracy"):
        objective, weights = make_objective({"mean_accuracy": 1.0, "average_accuracy": 1.0})
    assert weights == {"average_accuracy": 2.0}
    with pytest.warns(DeprecationWarning):
        assert make_objective("mean_accuracy")[0].name == "average_accuracy"
    with pytest.raises(ValueError, match="weight of `forgetting`"):
        make_objective({"forgetting": float("nan")})


def test_oracles_by_name_and_instance(tmp_path):
    import keras_tuner

    common = {"build_model": build_model, "tasks": synthetic_tasks(), "directory": str(tmp_path)}
    grid = MetaplasticTuner(oracle="grid", project_name="g", **common)
    assert [v for v in grid.oracle.get_space().space[0].values] == [0.25 * i for i in range(13)]
    own = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("forgetting", "min"), max_trials=3)
    tuner = MetaplasticTuner(oracle=own, m_range=(0.5, 2.0), project_name="o", **common)
    assert tuner.oracle.objective.name == "forgetting" and tuner.oracle.max_trials == 3
    assert tuner.oracle.get_space().get("m") == 0.5
    pytest.importorskip("sklearn")
    bayes = MetaplasticTuner(oracle="bayesian", max_trials=4, num_initial_points=2,
                             project_name="b", **common)
    assert isinstance(bayes.oracle, keras_tuner.oracles.BayesianOptimizationOracle)


def test_damaged_search_records_are_refused_by_name(tmp_path):
    from larq_meta.tuning import SearchSettingsError, check_resume, check_state_files

    settings = {"batch_size": 64, "model": "input (12,) > QuantDense 8"}
    check_resume(str(tmp_path), settings)  # records
    check_resume(str(tmp_path), dict(settings))  # same settings: resumes
    with pytest.raises(SearchSettingsError) as error:
        check_resume(str(tmp_path), {**settings, "batch_size": 32, "seed": 2},
                     defaults={"seed": 1})
    assert error.value.differences == {"batch_size": (64, 32), "seed": (1, 2)}
    record = tmp_path / "larq_meta_search.json"
    record.write_text(record.read_text()[:25])
    with pytest.raises(ValueError, match="larq_meta_search.json is truncated or corrupt"):
        check_resume(str(tmp_path), settings)
    trial = tmp_path / "trial_0" / "trial.json"
    trial.parent.mkdir()
    trial.write_bytes(b'{"trial_id": "0", "hyperpar\xff')
    with pytest.raises(ValueError, match=r"trial_0/trial\.json is truncated or corrupt.*overwrite"):
        check_state_files(str(tmp_path), [str(tmp_path / "oracle.json"), str(trial)])


def test_command_line_search_writes_tensorboard_logs_per_trial(tmp_path, monkeypatch):
    import tensorflow as tf

    import larq_meta.cli.tune

    monkeypatch.setattr(larq_meta.cli.tune, "load_tasks", cli_tasks)
    argv = [*CLI_SEARCH, "--max-trials", "2", "--directory", str(tmp_path / "search"),
            "--project-name", "tb", "--tensorboard", str(tmp_path / "tb")]
    assert main(["tune", *argv]) == 0
    trials = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert len(trials) == 2 and all(name.startswith("trial_") for name in trials)
    for name in trials:  # each trial its own curve, epochs numbered over both tasks
        folder = tmp_path / "tb" / name / "train"
        steps = sorted(
            (event.wall_time, event.step)
            for file in folder.iterdir()
            for event in tf.compat.v1.train.summary_iterator(str(file))
            for value in event.summary.value
            if value.tag == "epoch_acc_task_1"
        )
        assert [step for _, step in steps] == [0, 1]
