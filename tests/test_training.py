"""Sequence trainer, task-evaluation callback and BatchNorm protocols on small synthetic tasks."""

import csv

import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta.batchnorm import restore_batchnorm, snapshot_batchnorm
from larq_meta.callbacks import TaskEvaluation
from larq_meta.training import reset_optimizer, train_sequence

from checks import small_model, synthetic_tasks


def test_logs_reach_history_and_csv_logger(tmp_path):
    tasks = synthetic_tasks()
    model = small_model()
    log = tmp_path / "log.csv"
    result = train_sequence(
        model, tasks, epochs_per_task=2, batch_size=32, progress=False,
        callbacks=[tf.keras.callbacks.CSVLogger(str(log), append=True)],
    )
    for history in result.fit_history:
        assert {"acc_task_1", "acc_task_2", "acc_mean_seen", "loss"} <= set(history)
        assert len(history["acc_task_1"]) == 2
    rows = list(csv.DictReader(open(log)))
    assert len(rows) == 4 and "acc_task_2" in rows[0]
    # epochs are numbered over the whole sequence, with the task in each row
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [int(float(r["task"])) for r in rows] == [1, 1, 2, 2]
    # the matrix row of a task is the last evaluation of that task's fit
    for i, history in enumerate(result.fit_history):
        for j in range(2):
            assert result.accuracy_matrix[i, j] == pytest.approx(history[f"acc_task_{j + 1}"][-1])
    # mean over tasks seen so far
    assert result.fit_history[0]["acc_mean_seen"][-1] == pytest.approx(result.accuracy_matrix[0, 0])
    assert result.fit_history[1]["acc_mean_seen"][-1] == pytest.approx(result.accuracy_matrix[1].mean())
    assert len(result.history) == 4 and result.history[-1]["task"] == 1
    assert result.accuracy_matrix[0, 0] > 0.5  # learned something


def manual_accuracy(model, task, bn_state=None):
    live = snapshot_batchnorm(model)
    if bn_state is not None:
        restore_batchnorm(model, bn_state)
    logits = model.predict(task.x_test, batch_size=1000, verbose=0)
    restore_batchnorm(model, live)
    return float(np.mean(np.argmax(logits, 1) == task.y_test))


def test_per_task_protocol_evaluates_old_tasks_with_their_snapshot():
    tasks = synthetic_tasks()
    model = small_model()
    evaluation = TaskEvaluation(tasks, bn_protocol="per_task")
    for k, task in enumerate(tasks):  # the loop train_sequence runs, by hand
        evaluation.on_task_begin(k, task)
        model.fit(task.x_train, task.y_train, epochs=1, batch_size=32, verbose=0, callbacks=[evaluation])
        evaluation.on_task_end(k, task)
    snapshots = evaluation.bn_snapshots.snapshots
    assert len(snapshots) == 2 and evaluation.task_index is None
    R = evaluation.accuracy_matrix
    assert R[1, 0] == pytest.approx(manual_accuracy(model, tasks[0], snapshots[0]))
    assert R[1, 1] == pytest.approx(manual_accuracy(model, tasks[1]))
    # the snapshot after task 1 differs from the final state, so the protocol matters
    first, last = snapshots[0]["bn_1"][2], snapshots[1]["bn_1"][2]
    assert not np.allclose(first, last)
    # a fit outside a task is refused with the way out, not counted as a task
    with pytest.raises(RuntimeError, match="no task has begun.*on_task_begin"):
        model.fit(tasks[0].x_train, tasks[0].y_train, epochs=1, verbose=0, callbacks=[evaluation])
    with pytest.raises(ValueError, match="outside the sequence of 2 tasks"):
        evaluation.on_task_begin(2, tasks[0])


def test_shared_protocol_uses_live_state():
    tasks = synthetic_tasks()
    model = small_model()
    result = train_sequence(model, tasks, bn_protocol="shared", batch_size=32, progress=False)
    assert result.accuracy_matrix[1, 0] == pytest.approx(manual_accuracy(model, tasks[0]))


def test_batch_stats_protocol_uses_batch_statistics_and_leaves_state_alone():
    tasks = synthetic_tasks()
    model = small_model()
    with pytest.warns(DeprecationWarning, match="eval_batch_size"):
        assert TaskEvaluation(tasks, batch_size=500).eval_batch_size == 500
    evaluation = TaskEvaluation(tasks, bn_protocol="batch_stats", eval_batch_size=1000)
    evaluation.on_task_begin(0, tasks[0])
    model.fit(tasks[0].x_train, tasks[0].y_train, epochs=1, batch_size=32, verbose=0, callbacks=[evaluation])
    before = snapshot_batchnorm(model)
    accuracies = evaluation.evaluate()
    after = snapshot_batchnorm(model)
    for name in before:
        for a, b in zip(before[name], after[name]):
            np.testing.assert_array_equal(a, b)
    # batch statistics: identical to a training-mode forward pass over the whole test set
    logits = model(tasks[0].x_test, training=True)
    restore_batchnorm(model, before)
    expected = float(np.mean(np.argmax(logits, 1) == tasks[0].y_test))
    assert accuracies[0] == pytest.approx(expected)


def test_reset_optimizer_zeroes_state():
    tasks = synthetic_tasks(1)
    model = small_model()
    model.fit(tasks[0].x_train, tasks[0].y_train, epochs=1, batch_size=32, verbose=0)
    assert int(model.optimizer.iterations) > 0
    reset_optimizer(model.optimizer)
    assert int(model.optimizer.iterations) == 0
    assert all(not np.any(v.numpy()) for v in model.optimizer.variables)


def test_result_save_and_table(tmp_path):
    tasks = synthetic_tasks()
    result = train_sequence(small_model(), tasks, batch_size=32, progress=False)
    paths = result.save(str(tmp_path))
    import json

    saved = json.load(open(paths["json"]))
    assert saved["bn_protocol"] == "per_task"
    assert np.allclose(saved["accuracy_matrix"], result.accuracy_matrix)
    assert saved["config"]["optimizer"]["config"]["m"] == 1.0
    assert "per_task" in result.table() and "t2" in result.table()
    assert open(paths["csv"]).readline().strip() == "after_task,t1,t2"
    rows = list(csv.DictReader(open(paths["epochs"])))
    assert [(r["task"], r["epoch"]) for r in rows] == [("1", "0"), ("2", "1")]
    assert not any(key.startswith("val_") for key in rows[0])  # no empty validation columns
    assert float(rows[1]["acc_task_1"]) == pytest.approx(result.accuracy_matrix[1, 0])
    assert saved["recalibrate_bn"] is False and saved["seconds"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs_per_task": 0}, "epochs_per_task"),
        ({"epochs_per_task": [1]}, "epochs_per_task"),
        ({"batch_size": 0}, "batch_size"),
        ({"bn_protocol": "magic"}, "bn_protocol"),
        ({"evaluate_every": 0}, "evaluate_every"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_sequence(small_model(), synthetic_tasks(), progress=False, **kwargs)


def test_uncompiled_model_is_refused():
    model = larq_meta.models.paper_mlp((8, 8), num_classes=4, input_shape=(20,))
    with pytest.raises(ValueError, match="compiled"):
        train_sequence(model, synthetic_tasks(), progress=False)


def test_two_protocols_side_by_side_and_epoch_timing():
    tasks = synthetic_tasks()
    shared = TaskEvaluation(tasks, bn_protocol="shared", log_prefix="shared/")
    result = train_sequence(
        small_model(), tasks, batch_size=32, progress=False, callbacks=[shared]
    )
    history = result.fit_history[1]
    assert {"shared/acc_task_1", "acc_task_1", "train_seconds"} <= set(history)
    assert history["train_seconds"][0] > 0
    np.testing.assert_allclose(shared.accuracy_matrix[:, 1], result.accuracy_matrix[:, 1])
    assert shared.accuracy_matrix[1, 0] == pytest.approx(history["shared/acc_task_1"][-1])


def test_evaluate_every_n_epochs_keeps_rows_and_the_matrix(tmp_path):
    tasks = synthetic_tasks()
    log = tmp_path / "log.csv"
    every = train_sequence(
        small_model(), tasks, epochs_per_task=[3, 4], batch_size=32, progress=False,
        shuffle_seed=3, evaluate_every=2,
        callbacks=[tf.keras.callbacks.CSVLogger(str(log), append=True)],
    )
    full = train_sequence(
        small_model(), tasks, epochs_per_task=[3, 4], batch_size=32, progress=False,
        shuffle_seed=3,
    )
    # evaluated: every 2nd epoch of the sequence (global epochs 1, 3, 5) and each task's last
    # (2, 6); the history counts epochs from the task's first
    assert [(r["task"], r["epoch"]) for r in every.history] == [(0, 1), (0, 2), (1, 0), (1, 2), (1, 3)]
    assert np.isnan(every.fit_history[0]["acc_task_1"][0])
    assert np.isnan(every.fit_history[1]["acc_task_1"][1])
    assert not np.isnan(every.fit_history[1]["acc_task_1"][-1])
    rows = list(csv.DictReader(open(log)))
    assert len(rows) == 7 and "acc_task_2" in rows[0]  # one row per epoch, columns from epoch 1
    # evaluation does not touch training: same matrix as evaluating every epoch
    np.testing.assert_allclose(every.accuracy_matrix, full.accuracy_matrix)
    path = larq_meta.plots.plot_task_accuracies(every, str(tmp_path / "acc.png"))
    assert (tmp_path / "acc.png").stat().st_size > 0 and path.endswith("acc.png")


def test_plots_of_a_stream_draw_one_curve_and_no_crowded_legend(tmp_path, monkeypatch):
    import dataclasses

    import larq_meta.plots as plots
    from larq_meta.training import SequenceResult

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    n = 30
    history = [{"task": k, "epoch": e, "accuracies": [0.5 + 0.01 * k] * n}
               for k in range(n) for e in range(2)]
    stream = SequenceResult(
        accuracy_matrix=np.full((n, n), 0.6), task_names=[f"s{k}" for k in range(n)],
        history=history, fit_history=[], bn_snapshots=[], bn_protocol="shared",
    )
    plots.plot_task_accuracies({"stream": stream}, str(tmp_path / "a.png"))
    def curves(ax):  # task-boundary lines are unlabelled
        return [line for line in ax.get_lines() if not line.get_label().startswith("_")]

    ax = figures[-1].axes[0]
    assert len(curves(ax)) == 1 and ax.get_legend() is not None  # one labelled curve
    varied = dataclasses.replace(stream, history=[
        {**r, "accuracies": list(np.linspace(0, 1, n))} for r in history])
    plots.plot_task_accuracies({"tasks": varied}, str(tmp_path / "b.png"))
    ax = figures[-1].axes[0]
    assert len(curves(ax)) == n and ax.get_legend() is None  # 30 entries would hide it
    plots.plot_accuracy_matrix({"stream": stream}, str(tmp_path / "c.png"))
    assert not figures[-1].axes[0].texts  # no numbers crammed into 900 cells


def test_recalibrated_evaluation_snapshots_exact_statistics():
    from larq_meta.batchnorm import recalibrate_batchnorm

    tasks = synthetic_tasks()
    model = small_model()
    result = train_sequence(model, tasks, batch_size=32, recalibrate_bn=True, progress=False)
    assert result.recalibrate_bn is True and result.config["recalibrate_bn"] is True
    assert "BatchNorm protocol: per_task, recalibrated" in result.table()
    # The last task's snapshot holds the exact statistics of its training inputs under the
    # final weights (Keras' moving averages differ from them).
    recalibrate_batchnorm(model, tasks[1].train)
    exact = snapshot_batchnorm(model)
    for name, weights in result.bn_snapshots[1].items():
        for a, b in zip(weights, exact[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # and row 2 of the matrix is the accuracy with those statistics
    assert result.accuracy_matrix[1, 1] == pytest.approx(manual_accuracy(model, tasks[1]))
    with pytest.raises(ValueError, match="recalibrate_bn.*batch_stats"):
        TaskEvaluation(tasks, bn_protocol="batch_stats", recalibrate_bn=True)


def test_a_bad_scheduled_m_under_xla_stops_the_sequence_naming_the_step():
    """Under XLA the optimizer cannot raise inside the step; the trainer raises the fault it
    recorded at the end of the epoch."""
    schedule = tf.keras.optimizers.schedules.PiecewiseConstantDecay([3], [1.0, -0.5])
    tf.keras.utils.set_random_seed(0)
    model = larq_meta.models.compiled_paper_mlp(
        (16, 16), m=schedule, learning_rate=0.01, num_classes=4, input_shape=(20,),
        jit_compile=True,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="step 4"):
        train_sequence(model, synthetic_tasks(), batch_size=32, progress=False)
