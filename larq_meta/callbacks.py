"""Keras callbacks for continual learning.

`TaskEvaluation` evaluates the model on every task of a sequence at the end of each epoch
and writes the accuracies into `logs`, so `History`, `CSVLogger` and `TensorBoard` record
them like any other metric. One `model.fit` call is one task: the callback starts the next
task when `fit` begins and closes the task (BatchNorm snapshot, accuracy-matrix row) when it
ends.

!!! example
    ```python
    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3)
    evaluation = larq_meta.callbacks.TaskEvaluation(tasks, bn_protocol="per_task")
    for task in tasks:
        model.fit(*task.train, epochs=2, batch_size=100,
                  callbacks=[evaluation, tf.keras.callbacks.CSVLogger("log.csv", append=True)])
    print(evaluation.accuracy_matrix)
    ```
"""

from __future__ import annotations

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

__all__ = ["TaskEvaluation"]


def _data_key(data) -> tuple:
    """Identity of a task's test data (the same arrays or dataset object -> the same key)."""
    if isinstance(data, tf.data.Dataset):
        return ("dataset", id(data))
    return ("arrays", id(data[0]), id(data[1]))


class TaskEvaluation(tf.keras.callbacks.Callback):
    """Evaluate every task at the end of each epoch; keep the accuracy matrix.

    At the end of each epoch it writes to `logs`:

    - `acc_task_<k>` (k = 1..T): test accuracy on task k (each task, seen or not);
    - `acc_mean_seen`: mean accuracy over the tasks trained so far (1..current).

    When a `fit` call ends, the current task is closed: its BatchNorm state is saved (see
    `larq_meta.batchnorm`) and row `i` of `accuracy_matrix` (after training task i, accuracy
    on task j, NaN until known) is filled from the last evaluation. The next `fit` call
    trains the next task.

    # Arguments
        tasks: A `TaskSequence` or list of `Task`s, in training order.
        bn_protocol: How BatchNorm is used when evaluating task `k`: `"per_task"` (the
            paper's: task k's snapshot saved when task k ended; the live state for the
            current and future tasks), `"batch_stats"` (the reference code's current
            protocol: test batches normalized with their own statistics, task k's gamma and
            beta), or `"shared"` (the live state for all tasks).
        batch_size: Test batch size. It matters for `"batch_stats"` (reference: 1000).
        log_prefix: Prefix of the `logs` keys, so that several evaluations (e.g. one per
            BatchNorm protocol) can run side by side: `log_prefix="shared/"` writes
            `shared/acc_task_1`, ...
        evaluate_every: Evaluate every `evaluate_every` epochs and always at a task's last
            epoch (long runs: testing all tasks after every epoch can cost as much as
            training). Epochs not evaluated log NaN, so `History` and `CSVLogger` keep one
            row per epoch.
        recalibrate_bn: Before each evaluation, set the live BatchNorm moving statistics to
            the exact inference-mode statistics of the current task's training inputs
            (`larq_meta.batchnorm.recalibrate_batchnorm`), so the evaluation and the task's
            snapshot use them instead of Keras' moving averages. Costs one pass over the
            task's training inputs per BatchNorm layer. Not with `"batch_stats"`, which uses
            no moving statistics.
        verbose: Print the per-task accuracies after each epoch.

    # Attributes
        accuracy_matrix: `(T, T)` array, `R[i, j]` = accuracy on task j after task i.
        history: One record per epoch: `{"task": i, "epoch": e, "accuracies": [...]}`.
        bn_snapshots: BatchNorm state saved at the end of each finished task.
        current_task: Index of the task being trained (or next to train).
    """

    def __init__(
        self,
        tasks: TaskSequence | Sequence[Task],
        *,
        bn_protocol: str = "per_task",
        batch_size: int = 1000,
        log_prefix: str = "",
        evaluate_every: int = 1,
        recalibrate_bn: bool = False,
        verbose: bool = False,
    ):
        super().__init__()
        self.tasks = as_sequence(tasks)
        self.bn_protocol = check_bn_protocol(bn_protocol)
        if recalibrate_bn and self.bn_protocol == "batch_stats":
            raise ValueError(
                "`recalibrate_bn=True` has no effect with bn_protocol='batch_stats' (test "
                "batches use their own statistics); use 'per_task' or 'shared'."
            )
        self.recalibrate_bn = bool(recalibrate_bn)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.evaluate_every = check_int(evaluate_every, "evaluate_every", 1)
        self.log_prefix = log_prefix
        self.verbose = verbose
        num_tasks = len(self.tasks)
        self.accuracy_matrix = np.full((num_tasks, num_tasks), np.nan)
        self.history: list[dict] = []
        self.bn_snapshots: list[dict] = []
        self.current_task = 0
        self._last_accuracies: list[float] | None = None
        # Tasks that share one test set (a stream's subsets) share its pipeline and, when the
        # protocol gives them the same BatchNorm state, its evaluation.
        self._test_keys = [_data_key(task.test) for task in self.tasks]
        self._test_sets = {}
        for key, task in zip(self._test_keys, self.tasks):
            if key not in self._test_sets:
                self._test_sets[key] = make_dataset(task.test, batch_size)
        self._predict = None

    # -- state a checkpoint needs -----------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "accuracy_matrix": self.accuracy_matrix.copy(),
            "history": list(self.history),
            "bn_snapshots": list(self.bn_snapshots),
            "current_task": self.current_task,
            "last_accuracies": self._last_accuracies,
        }

    def set_state(self, state: dict) -> None:
        self.accuracy_matrix = np.array(state["accuracy_matrix"], dtype=float)
        self.history = list(state["history"])
        self.bn_snapshots = list(state["bn_snapshots"])
        self.current_task = int(state["current_task"])
        self._last_accuracies = state.get("last_accuracies")

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.current_task >= len(self.tasks):
            raise RuntimeError(
                f"TaskEvaluation: all {len(self.tasks)} tasks are finished; a further `fit` has "
                "no task to train. Use a new callback for a new sequence."
            )
        self._last_accuracies = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params is not None and epoch + 1 == self.params.get("epochs")
        if not last and (epoch + 1) % self.evaluate_every:
            self._last_accuracies = None
            if logs is not None:
                logs.update(self.accuracy_logs([float("nan")] * len(self.tasks)))
            return
        if self.recalibrate_bn:
            recalibrate_batchnorm(self.model, self.tasks[self.current_task].train, self.batch_size)
        accuracies = self.evaluate()
        self._last_accuracies = accuracies
        self.history.append(
            {"task": self.current_task, "epoch": epoch, "accuracies": list(accuracies)}
        )
        if logs is not None:
            logs.update(self.accuracy_logs(accuracies))
        if self.verbose:
            shown = " ".join(f"{a:.4f}" for a in accuracies)
            print(f"task {self.current_task + 1} epoch {epoch + 1}: test accuracies {shown}")

    def on_train_end(self, logs=None):
        self.end_task()

    # -- the protocol ------------------------------------------------------------------------
    def accuracy_logs(self, accuracies: Sequence[float]) -> dict[str, float]:
        seen = accuracies[: self.current_task + 1]
        logs = {f"acc_task_{j + 1}": float(a) for j, a in enumerate(accuracies)}
        logs["acc_mean_seen"] = float(np.mean(seen))
        return {self.log_prefix + key: value for key, value in logs.items()}

    def end_task(self) -> None:
        """Close the current task: snapshot BatchNorm, fill its accuracy-matrix row."""
        if self._last_accuracies is None:  # fit ran no epoch: evaluate the model as it is
            self._last_accuracies = self.evaluate()
        self.accuracy_matrix[self.current_task] = self._last_accuracies
        self.bn_snapshots.append(snapshot_batchnorm(self.model))
        self.current_task += 1
        self._last_accuracies = None

    def bn_state_for(self, task_index: int) -> dict | None:
        """The BatchNorm snapshot to evaluate `task_index` with (None: the live state)."""
        if self.bn_protocol == "shared" or task_index >= len(self.bn_snapshots):
            return None
        return self.bn_snapshots[task_index]

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
                logits = self._predict(x)
                predictions = self._predictions(logits, self.tasks[j])
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
