"""Keras callbacks for continual learning, with one task protocol.

A `TaskCallback` is a Keras `Callback` that also hears where tasks begin and end:
`on_task_begin(task_index, task)` before a task's `model.fit` and `on_task_end(task_index,
task)` after it. Whoever runs the sequence calls them: `larq_meta.training.train_sequence`
does, and a hand-written loop does it in two lines (below). The task index comes from that
caller alone; no callback counts `fit` calls. `get_state()` / `set_state()` give what a
checkpoint must keep to resume a run (`larq_meta.checkpoint`).

`TaskEvaluation` evaluates every task at the end of each epoch and writes the accuracies
(and the task number) into `logs`, so `History`, `CSVLogger` and `TensorBoard` record them
like any other metric. `BatchNormSnapshots` keeps each task's BatchNorm state for the
paper's evaluation protocol; `HiddenWeightSnapshots` keeps the hidden weights at each task's
end.

!!! example
    ```python
    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3)
    evaluation = larq_meta.callbacks.TaskEvaluation(tasks, bn_protocol="per_task")
    callbacks = [evaluation, tf.keras.callbacks.CSVLogger("log.csv", append=True)]
    for k, task in enumerate(tasks):
        evaluation.on_task_begin(k, task)
        model.fit(larq_meta.tasks.make_dataset(task.train, 100, shuffle=True), epochs=2,
                  callbacks=callbacks)
        evaluation.on_task_end(k, task)
    print(evaluation.accuracy_matrix)
    ```
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from larq_meta._utils import check_int
from larq_meta.batchnorm import (
    check_bn_protocol,
    recalibrate_batchnorm,
    snapshot_batchnorm,
    using_batchnorm,
)
from larq_meta.tasks import Task, TaskSequence, as_sequence, make_dataset

__all__ = [
    "BatchNormSnapshots",
    "HiddenWeightSnapshots",
    "TaskCallback",
    "TaskEvaluation",
    "task_callbacks",
]


class TaskCallback(tf.keras.callbacks.Callback):
    """A Keras callback that also hears where tasks begin and end.

    Subclasses override any of the Keras hooks and the task hooks below. A sequence runner
    (`train_sequence`, or your own loop) calls `on_task_begin` before the task's first `fit`
    and `on_task_end` after its last; `set_model` must have been called (Keras does it in
    `fit`; `train_sequence` does it before `on_task_begin`).

    !!! example
        ```python
        class PrintTask(TaskCallback):
            def on_task_end(self, task_index, task, logs=None):
                print(f"finished task {task_index + 1}: {task.name}")
        ```
    """

    def on_task_begin(self, task_index: int, task: Task, logs: dict | None = None) -> None:
        """Called before task `task_index` (0-based) is trained."""

    def on_task_end(self, task_index: int, task: Task, logs: dict | None = None) -> None:
        """Called after task `task_index` was trained."""

    def get_state(self) -> dict:
        """What a checkpoint must keep to resume (numpy arrays, numbers, lists, dicts)."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore what `get_state` returned."""


def task_callbacks(callbacks: Sequence[tf.keras.callbacks.Callback]) -> list[TaskCallback]:
    """The callbacks in `callbacks` that follow the task protocol (`TaskCallback`s)."""
    return [c for c in callbacks if isinstance(c, TaskCallback)]


class BatchNormSnapshots(TaskCallback):
    """Save every BatchNorm layer's state (gamma, beta, moving statistics) when a task ends.

    The paper evaluates task `k` with the BatchNorm state saved after task `k`
    (`TaskEvaluation(bn_protocol="per_task")` reads these snapshots); the snapshots also
    travel with an exported model (`larq-meta export --bn-snapshots`).

    # Attributes
        snapshots: One `{layer name: [weights]}` per finished task, in task order.
    """

    def __init__(self):
        super().__init__()
        self.snapshots: list[dict] = []

    def on_task_end(self, task_index, task, logs=None):
        del self.snapshots[task_index:]  # a task trained again replaces its snapshot
        self.snapshots.append(snapshot_batchnorm(self.model))

    def get_state(self) -> dict:
        return {"snapshots": list(self.snapshots)}

    def set_state(self, state: dict) -> None:
        self.snapshots = list(state["snapshots"])


class HiddenWeightSnapshots(TaskCallback):
    """Keep the hidden weights of every binarized kernel when a task ends (for histograms of
    |W_h| over the sequence, `larq_meta.plots.plot_hidden_weights`).

    # Attributes
        snapshots: One `{layer name: array}` per finished task, in task order.
    """

    def __init__(self):
        super().__init__()
        self.snapshots: list[dict] = []

    def on_task_end(self, task_index, task, logs=None):
        from larq_meta.hidden_weights import hidden_weights

        del self.snapshots[task_index:]
        self.snapshots.append(hidden_weights(self.model))

    def get_state(self) -> dict:
        return {"snapshots": list(self.snapshots)}

    def set_state(self, state: dict) -> None:
        self.snapshots = list(state["snapshots"])


def _data_key(data) -> tuple:
    """Identity of a task's test data (the same arrays or dataset object -> the same key)."""
    if isinstance(data, tf.data.Dataset):
        return ("dataset", id(data))
    return ("arrays", id(data[0]), id(data[1]))


class TaskEvaluation(TaskCallback):
    """Evaluate every task at the end of each epoch; keep the accuracy matrix.

    At the end of each evaluated epoch it writes to `logs`:

    - `task`: the number (1-based) of the task being trained;
    - `acc_task_<j>` (j = 1..T): test accuracy on task j (each task, seen or not);
    - `acc_mean_seen`: mean accuracy over the tasks trained so far (1..current).

    When a task ends (`on_task_end`), row `i` of `accuracy_matrix` (after training task i,
    accuracy on task j; NaN until known) is filled from the task's last evaluation.

    # Arguments
        tasks: A `TaskSequence` or list of `Task`s, in training order.
        bn_protocol: How BatchNorm is used when evaluating task `k`: `"per_task"` (the
            paper's: task k's snapshot saved when task k ended; the live state for the
            current and future tasks), `"batch_stats"` (the reference code's current
            protocol: test batches normalized with their own statistics, task k's gamma and
            beta), or `"shared"` (the live state for all tasks).
        bn_snapshots: The `BatchNormSnapshots` callback whose snapshots `"per_task"` and
            `"batch_stats"` use. None: the evaluation keeps its own (and takes its snapshot
            when a task ends).
        eval_batch_size: Test batch size. It matters for `"batch_stats"` (reference: 1000).
        log_prefix: Prefix of the `logs` keys, so that several evaluations (e.g. one per
            BatchNorm protocol) can run side by side: `log_prefix="shared/"` writes
            `shared/acc_task_1`, ...
        evaluate_every: Evaluate every `evaluate_every`-th epoch (counted over the whole
            sequence) and always at a task's last epoch. Epochs not evaluated log NaN, so
            `History` and `CSVLogger` keep one row per epoch.
        recalibrate_bn: Before each evaluation, set the live BatchNorm moving statistics to
            the exact inference-mode statistics of the current task's training inputs
            (`larq_meta.batchnorm.recalibrate_batchnorm`), so the evaluation and the task's
            snapshot use them instead of Keras' moving averages. Costs one pass over the
            task's training inputs per BatchNorm layer. Not with `"batch_stats"`.
        verbose: Log the per-task accuracies after each evaluation (`logging`, INFO).

    Under a `tf.distribute` strategy (model built in `strategy.scope()`), every worker
    evaluates the full test sets with its copy of the weights (the same on all workers), so
    the accuracies are those of one process; no replica tests only its share.

    # Attributes
        accuracy_matrix: `(T, T)` array, `R[i, j]` = accuracy on task j after task i.
        history: One record per evaluation: `{"task": i, "epoch": e, "accuracies": [...]}`,
            `e` counted from the task's first epoch.
        task_index: The task being trained (set by `on_task_begin`), None between tasks.
    """

    def __init__(
        self,
        tasks: TaskSequence | Sequence[Task],
        *,
        bn_protocol: str = "per_task",
        bn_snapshots: BatchNormSnapshots | None = None,
        eval_batch_size: int = 1000,
        log_prefix: str = "",
        evaluate_every: int = 1,
        recalibrate_bn: bool = False,
        verbose: bool = False,
        batch_size: int | None = None,
    ):
        super().__init__()
        if batch_size is not None:
            warnings.warn(
                "TaskEvaluation(batch_size=...) is deprecated; use eval_batch_size=...",
                DeprecationWarning,
                stacklevel=2,
            )
            eval_batch_size = batch_size
        self.tasks = as_sequence(tasks)
        self.bn_protocol = check_bn_protocol(bn_protocol)
        if recalibrate_bn and self.bn_protocol == "batch_stats":
            raise ValueError(
                "`recalibrate_bn=True` has no effect with bn_protocol='batch_stats' (test "
                "batches use their own statistics); use 'per_task' or 'shared'."
            )
        self.recalibrate_bn = bool(recalibrate_bn)
        self.eval_batch_size = check_int(eval_batch_size, "eval_batch_size", 1)
        self.evaluate_every = check_int(evaluate_every, "evaluate_every", 1)
        self.log_prefix = log_prefix
        self.verbose = verbose
        self._own_snapshots = bn_snapshots is None
        self.bn_snapshots = BatchNormSnapshots() if bn_snapshots is None else bn_snapshots
        num_tasks = len(self.tasks)
        self.accuracy_matrix = np.full((num_tasks, num_tasks), np.nan)
        self.history: list[dict] = []
        self.task_index: int | None = None
        self._task_first_epoch: int | None = None
        self._last_accuracies: list[float] | None = None
        # Tasks that share one test set (a stream's subsets) share its pipeline and, when the
        # protocol gives them the same BatchNorm state, its evaluation.
        self._test_keys = [_data_key(task.test) for task in self.tasks]
        self._test_sets = {}
        for key, task in zip(self._test_keys, self.tasks):
            if key not in self._test_sets:
                self._test_sets[key] = make_dataset(task.test, self.eval_batch_size)
        self._predict = None

    @property
    def batch_size(self) -> int:
        """Deprecated name of `eval_batch_size`."""
        return self.eval_batch_size

    # -- the task protocol -------------------------------------------------------------------
    def set_model(self, model):
        if model is not self.model:  # Keras calls this at every fit: keep the traced function
            self._predict = None
        super().set_model(model)
        self.bn_snapshots.set_model(model)

    def on_task_begin(self, task_index, task=None, logs=None):
        if not 0 <= task_index < len(self.tasks):
            raise ValueError(
                f"TaskEvaluation: task index {task_index} is outside the sequence of "
                f"{len(self.tasks)} tasks."
            )
        self.task_index = int(task_index)
        self._task_first_epoch = None
        self._last_accuracies = None

    def on_task_end(self, task_index, task=None, logs=None):
        self._require_task("on_task_end")
        if self._last_accuracies is None:  # no epoch ran: evaluate the model as it is
            self._last_accuracies = self.evaluate()
        self.accuracy_matrix[self.task_index] = self._last_accuracies
        if self._own_snapshots:
            self.bn_snapshots.on_task_end(task_index, task, logs)
        self.task_index = None
        self._last_accuracies = None

    def get_state(self) -> dict:
        state = {
            "accuracy_matrix": self.accuracy_matrix.copy(),
            "history": list(self.history),
            "task_index": self.task_index,
            "task_first_epoch": self._task_first_epoch,
            "last_accuracies": self._last_accuracies,
        }
        if self._own_snapshots:
            state["bn_snapshots"] = self.bn_snapshots.get_state()
        return state

    def set_state(self, state: dict) -> None:
        self.accuracy_matrix = np.array(state["accuracy_matrix"], dtype=float)
        self.history = list(state["history"])
        self.task_index = state["task_index"]
        self._task_first_epoch = state["task_first_epoch"]
        self._last_accuracies = state["last_accuracies"]
        if self._own_snapshots:
            self.bn_snapshots.set_state(state["bn_snapshots"])

    # -- Keras hooks -------------------------------------------------------------------------
    def _require_task(self, hook: str) -> None:
        if self.task_index is None:
            raise RuntimeError(
                f"TaskEvaluation.{hook}: no task has begun. Call "
                "`on_task_begin(task_index, task)` before each task's `fit` and "
                "`on_task_end(task_index, task)` after it, or train with "
                "`larq_meta.training.train_sequence`, which does."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._require_task("on_epoch_begin")
        if self._task_first_epoch is None:
            self._task_first_epoch = int(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._require_task("on_epoch_end")
        last = self.params is not None and epoch + 1 == self.params.get("epochs")
        if logs is not None:
            logs["task"] = self.task_index + 1
        if not last and (epoch + 1) % self.evaluate_every:
            self._last_accuracies = None
            if logs is not None:
                logs.update(self.accuracy_logs([float("nan")] * len(self.tasks)))
            return
        if self.recalibrate_bn:
            recalibrate_batchnorm(
                self.model, self.tasks[self.task_index].train, self.eval_batch_size
            )
        accuracies = self.evaluate()
        self._last_accuracies = accuracies
        first = self._task_first_epoch if self._task_first_epoch is not None else epoch
        self.history.append(
            {"task": self.task_index, "epoch": int(epoch - first), "accuracies": list(accuracies)}
        )
        if logs is not None:
            logs.update(self.accuracy_logs(accuracies))
        if self.verbose:
            import logging

            shown = " ".join(f"{a:.4f}" for a in accuracies)
            logging.getLogger(__name__).info(
                "task %d epoch %d: test accuracies %s", self.task_index + 1, epoch + 1, shown
            )

    # -- evaluation --------------------------------------------------------------------------
    def accuracy_logs(self, accuracies: Sequence[float]) -> dict[str, float]:
        """The `logs` entries for one evaluation (`acc_task_<j>`, `acc_mean_seen`)."""
        current = 0 if self.task_index is None else self.task_index
        logs = {f"acc_task_{j + 1}": float(a) for j, a in enumerate(accuracies)}
        logs["acc_mean_seen"] = float(np.mean(accuracies[: current + 1]))
        return {self.log_prefix + key: value for key, value in logs.items()}

    def bn_state_for(self, task_index: int) -> dict | None:
        """The BatchNorm snapshot to evaluate `task_index` with (None: the live state)."""
        snapshots = self.bn_snapshots.snapshots
        if self.bn_protocol == "shared" or task_index >= len(snapshots):
            return None
        return snapshots[task_index]

    def evaluate(self) -> list[float]:
        """Test accuracy on every task, each with the BatchNorm state the protocol gives it."""
        if self._predict is None:
            training = self.bn_protocol == "batch_stats"
            model = self.model
            self._predict = tf.function(lambda x: model(x, training=training))
        done: dict[tuple, float] = {}
        accuracies = []
        for j, task in enumerate(self.tasks):
            state = self.bn_state_for(j)
            key = (self._test_keys[j], id(state), getattr(task, "classes", None))
            if key not in done:
                done[key] = self._evaluate_task(j, state)
            accuracies.append(done[key])
        return accuracies

    def _evaluate_task(self, j: int, state: dict | None) -> float:
        if state is None and self.bn_protocol == "batch_stats":
            state = snapshot_batchnorm(self.model)  # batch statistics move the averages
        correct = total = 0
        with using_batchnorm(self.model, state):
            for x, y in self._test_sets[self._test_keys[j]]:
                predictions = self._predictions(self._predict(x), self.tasks[j])
                correct += int(tf.reduce_sum(tf.cast(predictions == tf.cast(y, tf.int64), tf.int32)))
                total += int(tf.shape(y)[0])
        return correct / total

    def _predictions(self, logits: tf.Tensor, task: Task) -> tf.Tensor:
        classes = getattr(task, "classes", None)
        if classes is None or self.tasks.scenario != "task":
            return tf.argmax(logits, axis=-1)
        # Task-incremental: the task identity is known, so choose among its classes only.
        classes = tf.constant(classes, tf.int64)
        return tf.gather(classes, tf.argmax(tf.gather(logits, classes, axis=-1), axis=-1))
