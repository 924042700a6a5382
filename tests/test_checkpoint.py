"""A sequence run stopped between epochs resumes and ends with exactly the uninterrupted numbers.

The run includes EWC and hidden-weight snapshots, so their state must survive the stop too.
One case is a hard kill of a separate process (no cleanup at all); the others stop the run in
process by raising from a callback, which leaves the checkpoint folder exactly as a kill at
the same point would (the checkpoint callbacks come after every user callback)."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from larq_meta.callbacks import HiddenWeightSnapshots
from larq_meta.checkpoint import STATE_FILE, CheckpointError, read_sequence_state
from larq_meta.consolidation import EWC
from larq_meta.training import train_sequence

from checks import small_model, synthetic_tasks

EPOCHS = [2, 2, 1]


class Stop(Exception):
    pass


class StopAfter(tf.keras.callbacks.Callback):
    """Raise at the end of the n-th epoch of this process (before the checkpoint saves it)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.epochs = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        if self.epochs == self.n:
            raise Stop


def run(directory, stop_after=0, **kwargs):
    tasks = synthetic_tasks(3)
    snapshots = HiddenWeightSnapshots()
    callbacks = [EWC(lambda_=50.0, fisher_samples=64), snapshots]
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    options = dict(epochs_per_task=EPOCHS, batch_size=32, shuffle_seed=5, deterministic=True,
                   progress=False, callbacks=callbacks)
    options.update(kwargs)
    model = small_model(width=options.pop("width", 32))
    result = train_sequence(
        model, tasks, checkpoint_dir=None if directory is None else str(directory), **options
    )
    return result, snapshots


def untimed(fit_history):  # wall-clock time differs between runs
    return [{k: v for k, v in task.items() if k != "train_seconds"} for task in fit_history]


@pytest.fixture(scope="module")
def uninterrupted():
    return run(None)


def assert_same_run(resumed, uninterrupted):
    (result, snapshots), (expected, expected_snapshots) = resumed, uninterrupted
    np.testing.assert_array_equal(result.accuracy_matrix, expected.accuracy_matrix)
    assert result.history == expected.history
    assert untimed(result.fit_history) == untimed(expected.fit_history)
    for a, b in zip(result.bn_snapshots[-1]["bn_2"], expected.bn_snapshots[-1]["bn_2"]):
        np.testing.assert_array_equal(a, b)
    # per-task artefacts are part of the resumable state: one snapshot per task, the right one
    assert len(snapshots.snapshots) == 3
    for got, want in zip(snapshots.snapshots, expected_snapshots.snapshots):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


# Stopped in epoch 3 (task 2's first): resumes from the end of task 1 (a task boundary);
# stopped in epoch 4: resumes in the middle of task 2.
@pytest.mark.parametrize("stop_after", [3, 4])
def test_resume_after_stop_matches_uninterrupted_run(tmp_path, uninterrupted, stop_after):
    csv_path = str(tmp_path / "epochs.csv")
    with pytest.raises(Stop):
        run(tmp_path, stop_after, epochs_csv=csv_path)
    state = read_sequence_state(str(tmp_path))
    assert (state["task"], state["epochs_done"]) == ((1, 0) if stop_after == 3 else (1, 1))
    resumed = run(tmp_path, epochs_csv=csv_path)
    assert_same_run(resumed, uninterrupted)
    rows = list(csv.DictReader(open(csv_path)))  # one row per epoch, none repeated
    assert [int(r["epoch"]) for r in rows] == list(range(sum(EPOCHS)))
    assert [int(r["task"]) for r in rows] == [1, 1, 2, 2, 3]


SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    import larq_meta
    import tensorflow as tf
    import test_checkpoint

    class Kill(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                os._exit(17)  # a hard kill: no cleanup, no finally blocks

    test_checkpoint.StopAfter = lambda n: Kill()
    test_checkpoint.run(sys.argv[1], stop_after=1)
    """
)


def test_hard_kill_of_the_process_resumes_exactly(tmp_path, uninterrupted):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert read_sequence_state(str(tmp_path / "ckpt"))["epochs_done"] == 1  # mid task 2
    assert_same_run(run(tmp_path / "ckpt"), uninterrupted)


@pytest.fixture
def stopped(tmp_path):
    with pytest.raises(Stop):
        run(tmp_path, 4)
    return tmp_path


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"batch_size": 64}, "batch_size: 32 -> 64"),
        ({"settings": {"train_size": 1000}}, "settings.train_size: <unset> -> 1000"),
        ({"width": 48}, "model_signature"),  # refused by name, not with a shape error
        ({"recalibrate_bn": True}, "recalibrate_bn: false -> true"),
    ],
)
def test_checkpoint_of_another_run_is_refused_listing_the_settings(stopped, kwargs, expected):
    with pytest.raises(CheckpointError, match="belongs to another run") as error:
        run(stopped, **kwargs)
    assert expected in str(error.value)


def test_damaged_latest_state_names_its_file_and_the_previous_one_resumes(stopped, uninterrupted):
    latest = stopped / STATE_FILE
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=f"{STATE_FILE}: damaged.*--resume-previous"):
        run(stopped)
    assert_same_run(run(stopped, resume_previous=True), uninterrupted)


def test_checkpoint_of_version_0_1_is_refused_clearly(stopped):
    path = stopped / STATE_FILE
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    skeleton = json.loads(str(arrays["__skeleton__"]))
    skeleton["fingerprint"] = skeleton.pop("settings")
    arrays["__skeleton__"] = np.array(json.dumps(skeleton))
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="larq-meta 0.1"):
        run(stopped)


def test_finished_checkpointed_run_without_seed_reloads(tmp_path):
    tasks = synthetic_tasks()
    first = train_sequence(small_model(), tasks, batch_size=32, progress=False,
                           checkpoint_dir=str(tmp_path))
    # A new process would draw another seed; the checkpoint keeps the one the run drew.
    again = train_sequence(small_model(seed=1), tasks, batch_size=32, progress=False,
                           checkpoint_dir=str(tmp_path))
    np.testing.assert_array_equal(again.accuracy_matrix, first.accuracy_matrix)
    assert again.config["shuffle_seed"] == first.config["shuffle_seed"]


def test_a_stop_between_the_csv_write_and_the_checkpoint_leaves_no_duplicate_row(
    tmp_path, monkeypatch, uninterrupted
):
    """The CSV is rewritten from the checkpointed history, so an epoch written to the CSV but
    not to the checkpoint is written once more, not twice, after the resume."""
    from larq_meta.checkpoint import SequenceCheckpoint

    save = SequenceCheckpoint.save
    calls = []

    def save_then_stop(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 3 (task 2's first) is in the CSV, not in the checkpoint
            raise Stop
        return save(self, *args, **kwargs)

    csv_path = str(tmp_path / "epochs.csv")
    monkeypatch.setattr(SequenceCheckpoint, "save", save_then_stop)
    with pytest.raises(Stop):
        run(tmp_path, epochs_csv=csv_path)
    assert len(list(csv.DictReader(open(csv_path)))) == 3
    monkeypatch.setattr(SequenceCheckpoint, "save", save)
    assert_same_run(run(tmp_path, epochs_csv=csv_path), uninterrupted)
    rows = list(csv.DictReader(open(csv_path)))
    assert [int(r["epoch"]) for r in rows] == list(range(sum(EPOCHS)))
