"""Train a model on a task sequence with `model.fit`, one `fit` call per task.

Data flows one way: data set -> task sequence (`larq_meta.tasks`) -> `model.fit` per task
-> `TaskEvaluation` callback -> `SequenceResult` (accuracy matrix, per-epoch history,
BatchNorm snapshots, metrics).

!!! example
    ```python
    import larq_meta
    from larq_meta import MetaplasticAdam

    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, seed=1)
    model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
    model.compile(optimizer=MetaplasticAdam(m=1.35, learning_rate=0.005),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    result = larq_meta.training.train_sequence(model, tasks, epochs_per_task=2)
    print(result.table())
    ```
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from larq_meta import metrics
from larq_meta._utils import check_int
from larq_meta.callbacks import TaskEvaluation
from larq_meta.tasks import Task, TaskSequence, as_sequence, make_dataset, steps_per_epoch

__all__ = ["SequenceResult", "read_sequence_state", "reset_optimizer", "train_sequence"]


def reset_optimizer(optimizer: tf.keras.optimizers.Optimizer) -> None:
    """Zero the optimizer's state (step counter and slots), as a freshly built Adam would have.

    The reference implementation builds a new Adam per task; zeroing the variables in place
    does the same while keeping the compiled training function. A loss-scale wrapper keeps its
    loss scale; only the inner optimizer is reset.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    variables = inner.variables
    for variable in variables() if callable(variables) else variables:
        variable.assign(tf.zeros_like(variable))


@dataclasses.dataclass
class SequenceResult:
    """What a task sequence run produced.

    # Attributes
        accuracy_matrix: `R[i, j]`, accuracy on task j after training task i.
        task_names: Names of the tasks, in order.
        history: Per-epoch records `{"task", "epoch", "accuracies"}` across the sequence.
        fit_history: Keras `History.history` of each task's `fit`.
        bn_snapshots: BatchNorm state saved at the end of each task.
        bn_protocol: The BatchNorm evaluation protocol used.
        config: Run settings (epochs, batch size, optimizer config, ...), for results files.
    """

    accuracy_matrix: np.ndarray
    task_names: list[str]
    history: list[dict]
    fit_history: list[dict]
    bn_snapshots: list[dict]
    bn_protocol: str
    config: dict = dataclasses.field(default_factory=dict)

    @property
    def bn_description(self) -> str:
        """The BatchNorm protocol as tables and plots name it ("per_task, recalibrated" when
        exact statistics replaced the moving averages)."""
        recalibrated = self.config.get("recalibrate_bn", False)
        return f"{self.bn_protocol}, recalibrated" if recalibrated else self.bn_protocol

    @property
    def final_accuracies(self) -> np.ndarray:
        """Accuracy on each task after the last task."""
        return self.accuracy_matrix[-1]

    def metrics(self) -> dict[str, float]:
        """Average accuracy, backward transfer, forgetting, last-task accuracy."""
        return metrics.summarize(self.accuracy_matrix)

    def table(self) -> str:
        """The accuracy matrix as a text table (percent), with the BatchNorm protocol."""
        width = max(8, *(len(n) for n in self.task_names))
        head = "after \\ on".ljust(width) + "".join(n.rjust(width + 2) for n in self.task_names)
        rows = [f"accuracy (%), BatchNorm protocol: {self.bn_description}", head]
        for name, row in zip(self.task_names, self.accuracy_matrix):
            rows.append(name.ljust(width) + "".join(f"{100 * a:{width + 2}.2f}" for a in row))
        summary = self.metrics()
        rows.append(
            f"average accuracy {100 * summary['average_accuracy']:.2f}%, backward transfer "
            f"{100 * summary['backward_transfer']:+.2f} points, forgetting "
            f"{100 * summary['forgetting']:.2f} points"
        )
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """JSON-friendly summary (BatchNorm snapshots left out: they are arrays)."""
        return {
            "task_names": self.task_names,
            "bn_protocol": self.bn_protocol,
            "accuracy_matrix": self.accuracy_matrix.tolist(),
            "metrics": self.metrics(),
            "history": self.history,
            "fit_history": self.fit_history,
            "config": self.config,
        }

    def save(self, directory: str) -> dict[str, str]:
        """Write `results.json` and `accuracy_matrix.csv` into `directory`; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        paths = {
            "json": os.path.join(directory, "results.json"),
            "csv": os.path.join(directory, "accuracy_matrix.csv"),
        }
        with open(paths["json"], "w") as f:
            json.dump(self.to_dict(), f, indent=2, default=_json_default)
        with open(paths["csv"], "w") as f:
            f.write("after_task," + ",".join(self.task_names) + "\n")
            for name, row in zip(self.task_names, self.accuracy_matrix):
                f.write(name + "," + ",".join(f"{a:.6f}" for a in row) + "\n")
        return paths


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class _SequenceProgress(tf.keras.callbacks.Callback):
    """One progress bar over all epochs of the sequence, showing task and accuracies."""

    def __init__(self, total_epochs: int, num_tasks: int, initial: int = 0, first_task: int = 0):
        super().__init__()
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total_epochs, initial=initial, unit="epoch", desc="tasks", dynamic_ncols=True
        )
        self.num_tasks = num_tasks
        self.task = first_task
        self.seen = None

    def on_train_begin(self, logs=None):
        self.bar.set_description(f"task {self.task + 1}/{self.num_tasks}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seen = logs.get("acc_mean_seen")
        if seen is not None and not np.isnan(seen):  # NaN: an epoch not evaluated
            self.seen = seen
        postfix = {"loss": f"{logs.get('loss', float('nan')):.3f}"}
        if self.seen is not None:
            postfix["mean_seen"] = f"{self.seen:.3f}"
        self.bar.set_postfix(postfix)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.task += 1
        if self.task == self.num_tasks:
            self.bar.close()


class _EpochTimer(tf.keras.callbacks.Callback):
    """Writes `train_seconds` (the epoch's training time, evaluation excluded) into `logs`.
    It runs before the evaluation callback, once Keras has synced the epoch's results."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_seconds"] = time.perf_counter() - self._start


class _EpochRecorder(tf.keras.callbacks.Callback):
    """Keeps every epoch's logs per task (a resumed run's `History` only sees its own epochs)
    and, with a checkpoint directory, saves the whole run state after each epoch."""

    def __init__(self, evaluation: TaskEvaluation, checkpoint: _Checkpoint | None):
        super().__init__()
        self.evaluation = evaluation
        self.checkpoint = checkpoint
        self.fit_history: list[dict[str, list[float]]] = []

    def on_train_begin(self, logs=None):
        while len(self.fit_history) <= self.evaluation.current_task:
            self.fit_history.append({})

    def on_epoch_end(self, epoch, logs=None):
        record = self.fit_history[self.evaluation.current_task]
        for key, value in (logs or {}).items():
            record.setdefault(key, []).append(float(value))
        # A task's last epoch is saved by on_train_end, once every callback has closed the
        # task (BatchNorm snapshot, EWC consolidation, ...).
        if self.checkpoint is not None and epoch + 1 < self.params["epochs"]:
            self.checkpoint.save(self, task=self.evaluation.current_task, epochs_done=epoch + 1)

    def on_train_end(self, logs=None):
        if self.checkpoint is not None:  # the evaluation has moved on to the next task
            self.checkpoint.save(self, task=self.evaluation.current_task, epochs_done=0)


def _split_arrays(value, arrays: dict):
    """JSON-able skeleton of `value` with every numpy array moved into `arrays`."""
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {k: _split_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_arrays(v, arrays) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _join_arrays(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


def read_sequence_state(directory: str) -> dict | None:
    """The sequence state a checkpointed `train_sequence` run saved in `directory` (None if
    there is none): `checkpoint` (the model/optimizer checkpoint's name in `directory`, for
    `tf.train.Checkpoint(model=model).restore`), `task`, `epochs_done`, `evaluation` (with
    `bn_snapshots` and the accuracy matrix), `fit_history`, `fingerprint` (the settings)."""
    path = os.path.join(directory, _Checkpoint.STATE)
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    return _join_arrays(json.loads(str(arrays.pop("__skeleton__"))), arrays)


# Settings that joined the fingerprint after checkpoints were already being written, with
# the value those older runs used: such a checkpoint still resumes under the same settings.
_SETTINGS_ADDED_LATER = {"recalibrate_bn": False}


class _Checkpoint:
    """Run state after an epoch: model and optimizer (a `tf.train.Checkpoint`), and the
    sequence state (position, accuracy matrix, history, BatchNorm snapshots, and the state of
    every callback with `get_state`/`set_state`, such as `EWC`) in an `.npz` beside it.

    The sequence state is written last, with an atomic rename, and names its checkpoint, so
    a run killed at any point resumes from the last complete epoch.
    """

    STATE = "sequence_state.npz"

    def __init__(self, directory: str, model: tf.keras.Model, fingerprint: dict, stateful: list):
        self.directory = directory
        self.fingerprint = fingerprint
        self.model = model
        self.stateful = stateful
        self.shuffle_seed: int | None = None
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)

    def save(self, recorder: _EpochRecorder, task: int, epochs_done: int) -> None:
        path = self.manager.save()
        evaluation = recorder.evaluation
        state = {
            "checkpoint": os.path.basename(path),
            "task": task,
            "epochs_done": epochs_done,
            "shuffle_seed": self.shuffle_seed,
            "evaluation": evaluation.get_state(),
            "callbacks": [callback.get_state() for callback in self.stateful],
            "fit_history": recorder.fit_history,
            "fingerprint": self.fingerprint,
        }
        arrays: dict[str, np.ndarray] = {}
        skeleton = json.dumps(_split_arrays(state, arrays), default=_json_default)
        tmp = os.path.join(self.directory, "sequence_state.tmp.npz")
        np.savez(tmp, __skeleton__=np.array(skeleton), **arrays)
        os.replace(tmp, os.path.join(self.directory, self.STATE))

    def load(self) -> dict | None:
        """Restore model, optimizer and callbacks from the last complete epoch; return the
        sequence state."""
        state = read_sequence_state(self.directory)
        if state is None:
            return None
        saved = {**_SETTINGS_ADDED_LATER, **state["fingerprint"]}
        if saved != self.fingerprint:
            changed = sorted(
                key for key in set(saved) | set(self.fingerprint)
                if saved.get(key) != self.fingerprint.get(key)
            )
            raise ValueError(
                f"Checkpoint in {self.directory!r} belongs to another run (settings that "
                f"differ: {', '.join(changed)}); use a new `checkpoint_dir`, or the settings "
                "it was started with."
            )
        if len(state["callbacks"]) != len(self.stateful):
            raise ValueError(
                f"Checkpoint in {self.directory!r} saved {len(state['callbacks'])} callback "
                f"states, but this run has {len(self.stateful)} callbacks with state."
            )
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        optimizer.build(self.model.trainable_variables)  # slots must exist to be restored
        status = self.checkpoint.restore(os.path.join(self.directory, state["checkpoint"]))
        status.assert_existing_objects_matched()
        for callback, callback_state in zip(self.stateful, state["callbacks"]):
            callback.set_model(self.model)
            callback.set_state(callback_state)
        return state


def train_sequence(
    model: tf.keras.Model,
    tasks: TaskSequence | Sequence[Task],
    *,
    epochs_per_task: int | Sequence[int] = 1,
    batch_size: int = 100,
    bn_protocol: str = "per_task",
    reset_optimizer_per_task: bool = True,
    eval_batch_size: int = 1000,
    evaluate_every: int = 1,
    recalibrate_bn: bool = False,
    shuffle_seed: int | None = None,
    checkpoint_dir: str | None = None,
    deterministic: bool = False,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    progress: bool = True,
    verbose: int = 0,
) -> SequenceResult:
    """Train `model` on each task in turn with `model.fit`, evaluating every task each epoch.

    # Arguments
        model: A compiled Keras model (e.g. `paper_mlp` with `MetaplasticAdam`).
        tasks: A `TaskSequence` or a list of `Task`s.
        epochs_per_task: Epochs per task, one int or one per task.
        batch_size: Training batch size (the paper: 100).
        bn_protocol: BatchNorm evaluation protocol, see `larq_meta.batchnorm`:
            `"per_task"` (the paper's), `"batch_stats"` (the reference code's), `"shared"`.
        reset_optimizer_per_task: Zero the optimizer state at each task boundary, as the
            reference does by building a fresh Adam per task (use False for streams, where
            the optimizer gets no task-boundary signal).
        eval_batch_size: Test batch size (the reference: 1000).
        evaluate_every: Test every task every `evaluate_every` epochs and at each task's
            end (see `TaskEvaluation`); 1 gives the paper's per-epoch curves.
        recalibrate_bn: Replace Keras' moving BatchNorm statistics by exact ones, computed
            on the current task's training inputs before each evaluation, so evaluations and
            snapshots use them (`"per_task"`/`"shared"`; see `TaskEvaluation`). Wide BNNs
            trained long can need it: see `larq_meta.batchnorm.recalibrate_batchnorm`.
        shuffle_seed: Seed of the per-epoch shuffling; each epoch's order depends only on
            (seed, task, epoch). None draws one seed (recorded in the result's config).
        checkpoint_dir: Save the run after every epoch (model, optimizer slots, BatchNorm
            snapshots, accuracy matrix, history, position, and the state of callbacks that
            have `get_state`/`set_state`, e.g. `EWC`) and, if the directory already holds a
            checkpoint of the same run, resume from it. With `deterministic=True` a resumed run
            ends with exactly the numbers of an uninterrupted one.
        deterministic: Call `tf.config.experimental.enable_op_determinism()` (process-wide) so
            that two runs with the same seeds give identical numbers (slower).
        callbacks: Extra Keras callbacks, passed to every `fit` (e.g. `CSVLogger(...,
            append=True)`, `TensorBoard`, or a second `TaskEvaluation` with another
            `bn_protocol` and a `log_prefix`); they see the `acc_task_<k>`, `acc_mean_seen`
            and `train_seconds` (training time of the epoch, evaluation excluded) logs.
        progress: Show a progress bar over the whole sequence.
        verbose: Keras `fit` verbosity per task.

    # Returns
        A `SequenceResult`.
    """
    if not getattr(model, "optimizer", None) or not getattr(model, "compiled_loss", None):
        raise ValueError("`model` must be compiled (model.compile(optimizer=..., loss=...)).")
    sequence = as_sequence(tasks)
    num_tasks = len(sequence)
    if isinstance(epochs_per_task, Sequence):
        epochs = [check_int(e, "epochs_per_task", 1) for e in epochs_per_task]
        if len(epochs) != num_tasks:
            raise ValueError(
                f"`epochs_per_task` has {len(epochs)} entries for {num_tasks} tasks."
            )
    else:
        epochs = [check_int(epochs_per_task, "epochs_per_task", 1)] * num_tasks
    batch_size = check_int(batch_size, "batch_size", 1)
    if deterministic:
        tf.config.experimental.enable_op_determinism()

    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    config = {
        "sequence": sequence.name,
        "task_names": sequence.names,
        "scenario": sequence.scenario,
        "sequence_info": sequence.info,
        "epochs_per_task": epochs,
        "batch_size": batch_size,
        "eval_batch_size": eval_batch_size,
        "evaluate_every": evaluate_every,
        "bn_protocol": bn_protocol,
        "recalibrate_bn": bool(recalibrate_bn),
        "reset_optimizer_per_task": reset_optimizer_per_task,
        "shuffle_seed": shuffle_seed,
        "optimizer": tf.keras.optimizers.serialize(optimizer),
        "model": model.name,
    }
    evaluation = TaskEvaluation(
        sequence, bn_protocol=bn_protocol, batch_size=eval_batch_size,
        evaluate_every=evaluate_every, recalibrate_bn=recalibrate_bn,
    )
    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = json.loads(json.dumps(config, default=_json_default))
        stateful = [c for c in callbacks if hasattr(c, "get_state") and hasattr(c, "set_state")]
        checkpoint = _Checkpoint(checkpoint_dir, model, fingerprint, stateful)
    recorder = _EpochRecorder(evaluation, checkpoint)

    start_task, start_epoch = 0, 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        evaluation.set_state(state["evaluation"])
        recorder.fit_history = state["fit_history"]
        start_task, start_epoch = state["task"], state["epochs_done"]
    if shuffle_seed is None:  # drawn once per run; a resumed run keeps the one it drew
        drawn = int(np.random.default_rng().integers(2**31))
        shuffle_seed = state["shuffle_seed"] if state is not None else drawn
    config["shuffle_seed"] = shuffle_seed
    if checkpoint is not None:
        checkpoint.shuffle_seed = shuffle_seed

    # Order matters: the timer stops before evaluation starts; the recorder (and checkpoint)
    # comes after every callback that writes to `logs`.
    extra = [_EpochTimer(), evaluation, *callbacks]
    if progress:
        done = sum(epochs[:start_task]) + start_epoch
        extra.append(_SequenceProgress(sum(epochs), num_tasks, initial=done, first_task=start_task))
    extra.append(recorder)
    for k in range(start_task, num_tasks):
        initial_epoch = start_epoch if k == start_task else 0
        if reset_optimizer_per_task and k > 0 and initial_epoch == 0:
            reset_optimizer(model.optimizer)
        data = sequence[k].train
        train = make_dataset(
            data, batch_size, shuffle=True, seed=shuffle_seed + 7919 * k,
            epochs=epochs[k], initial_epoch=initial_epoch,
        )
        model.fit(
            train,
            epochs=epochs[k],
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch(data, batch_size),
            callbacks=extra,
            verbose=verbose,
        )

    return SequenceResult(
        accuracy_matrix=evaluation.accuracy_matrix,
        task_names=sequence.names,
        history=evaluation.history,
        fit_history=recorder.fit_history,
        bn_snapshots=evaluation.bn_snapshots,
        bn_protocol=bn_protocol,
        config=config,
    )
