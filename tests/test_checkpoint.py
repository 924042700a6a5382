"""A sequence run killed between epochs resumes and ends with exactly the uninterrupted numbers.

The run includes an EWC callback, so its consolidation state must survive the kill too."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import larq_meta
    import numpy as np
    import tensorflow as tf
    from test_training import small_model, synthetic_tasks
    from larq_meta.consolidation import EWC
    from larq_meta.training import train_sequence

    kill_after = int(sys.argv[2])

    class Kill(tf.keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Kill.epochs += 1
            if Kill.epochs == kill_after:
                os._exit(17)  # a hard kill: no cleanup, no finally blocks

    tasks = synthetic_tasks(3)
    result = train_sequence(
        small_model(), tasks, epochs_per_task=[2, 2, 1], batch_size=32,
        shuffle_seed=5, deterministic=True, checkpoint_dir=sys.argv[1], progress=False,
        callbacks=[EWC(lambda_=50.0, fisher_samples=64, tasks=tasks), Kill()],
    )
    weights = [w.tolist() for w in result.bn_snapshots[-1]["bn_2"]]
    print(json.dumps({{"matrix": result.accuracy_matrix.tolist(), "history": result.history,
                      "fit_history": result.fit_history, "bn": weights}}))
    """
)


def run(directory, kill_after, script):
    return subprocess.run(
        [sys.executable, script, str(directory), str(kill_after)],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "run.py"
    path.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    return str(path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, script):
    done = run(tmp_path_factory.mktemp("full"), 0, script)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# The kill comes before the run saves the epoch it happens in: killed in epoch 3 (task 2's
# first) resumes from the end of task 1; killed in epoch 4 resumes mid task 2.
@pytest.mark.parametrize("kill_after", [3, 4])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, script, uninterrupted, kill_after):
    killed = run(tmp_path, kill_after, script)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert os.path.exists(tmp_path / "sequence_state.npz")
    resumed = run(tmp_path, 0, script)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["matrix"] == uninterrupted["matrix"]
    assert result["history"] == uninterrupted["history"]
    untimed = lambda history: [  # noqa: E731  (wall-clock time differs between runs)
        {k: v for k, v in task.items() if k != "train_seconds"} for task in history
    ]
    assert untimed(result["fit_history"]) == untimed(uninterrupted["fit_history"])
    np.testing.assert_array_equal(np.array(result["bn"]), np.array(uninterrupted["bn"]))


def test_checkpoint_of_another_run_is_refused(tmp_path, script):
    killed = run(tmp_path, 2, script)  # killed in epoch 2's end: epoch 1 is saved
    assert killed.returncode == 17
    path = tmp_path / "sequence_state.npz"
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    skeleton = json.loads(str(arrays["__skeleton__"]))
    skeleton["fingerprint"]["batch_size"] = 64
    arrays["__skeleton__"] = np.array(json.dumps(skeleton))
    np.savez(path, **arrays)
    refused = run(tmp_path, 0, script)
    assert refused.returncode != 0 and "belongs to another run" in refused.stderr
    assert "differ: batch_size)" in refused.stderr


def test_checkpoint_from_before_a_setting_existed_resumes(tmp_path, script, uninterrupted):
    """A checkpoint written before `recalibrate_bn` joined the settings ran without it."""
    killed = run(tmp_path, 4, script)
    assert killed.returncode == 17
    path = tmp_path / "sequence_state.npz"
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    skeleton = json.loads(str(arrays["__skeleton__"]))
    del skeleton["fingerprint"]["recalibrate_bn"]
    arrays["__skeleton__"] = np.array(json.dumps(skeleton))
    np.savez(path, **arrays)
    resumed = run(tmp_path, 0, script)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["matrix"] == uninterrupted["matrix"]
