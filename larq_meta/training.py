"""Train a model on a task sequence with `model.fit`, one `fit` call per task.

Data flows one way: data set -> task sequence (`larq_meta.tasks`) -> `model.fit` per task
-> task callbacks (`larq_meta.callbacks`: evaluation, BatchNorm snapshots, EWC, ...) ->
`SequenceResult` (accuracy matrix, per-epoch history, BatchNorm snapshots, metrics).

`train_sequence` is the loop a user would write (see `examples/permuted_mnist.py`) plus
what a long run needs: the task protocol, epochs numbered over the whole sequence (so
`TensorBoard` and `CSVLogger` curves run on across tasks), checkpoints and exact resume,
one progress bar.

!!! example
    ```python
    import larq_meta
    from larq_meta import MetaplasticAdam

    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, seed=1)
    model = larq_meta.models.compiled_paper_mlp((1024, 1024), m=1.35)
    result = larq_meta.training.train_sequence(model, tasks, epochs_per_task=2)
    print(result.table())
    ```
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from larq_meta import distribute, metrics
from larq_meta._utils import as_json, check_int, write_atomic, write_json
from larq_meta.callbacks import BatchNormSnapshots, TaskCallback, TaskEvaluation, task_callbacks
from larq_meta.checkpoint import SequenceCheckpoint
from larq_meta.tasks import Task, TaskSequence, as_sequence, make_dataset, steps_per_epoch

__all__ = ["EpochHistory", "SequenceResult", "reset_optimizer", "train_sequence"]


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


def epoch_rows(fit_history: Sequence[Mapping[str, Sequence]]) -> list[dict]:
    """One row per epoch over the sequence: `task` (1-based), `epoch` (0-based, counted over
    the whole sequence, as TensorBoard's steps) and every logged value."""
    rows = []
    for k, record in enumerate(fit_history):
        length = len(record.get("epoch", ()))
        for i in range(length):
            row = {"task": k + 1, "epoch": int(record["epoch"][i])}
            row.update(
                (key, values[i]) for key, values in record.items()
                if key not in ("task", "epoch") and i < len(values)
            )
            rows.append(row)
    return rows


def _csv_text(rows: Sequence[Mapping]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@dataclasses.dataclass
class SequenceResult:
    """What a task sequence run produced.

    # Attributes
        accuracy_matrix: `R[i, j]`, accuracy on task j after training task i.
        task_names: Names of the tasks, in order.
        history: One record per evaluation `{"task", "epoch", "accuracies"}` (`epoch`
            counted from the task's first epoch).
        fit_history: Per task, every epoch's logs (`loss`, `accuracy`, `acc_task_<j>`,
            `train_seconds`, `epoch` over the whole sequence, ...), as lists.
        bn_snapshots: BatchNorm state saved at the end of each task.
        bn_protocol: The BatchNorm evaluation protocol used.
        recalibrate_bn: Whether exact BatchNorm statistics replaced the moving averages.
        seconds: Wall-clock time of the run (this process's part of it, if resumed).
        settings: The caller's settings recorded with the run (`train_sequence(settings=)`).
        config: The trainer's own settings (epochs, batch size, optimizer config, ...).
    """

    accuracy_matrix: np.ndarray
    task_names: list[str]
    history: list[dict]
    fit_history: list[dict]
    bn_snapshots: list[dict]
    bn_protocol: str
    recalibrate_bn: bool = False
    seconds: float | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    config: dict = dataclasses.field(default_factory=dict)

    @property
    def bn_description(self) -> str:
        """The BatchNorm protocol as tables and plots name it ("per_task, recalibrated" when
        exact statistics replaced the moving averages)."""
        return f"{self.bn_protocol}, recalibrated" if self.recalibrate_bn else self.bn_protocol

    @property
    def final_accuracies(self) -> np.ndarray:
        """Accuracy on each task after the last task."""
        return self.accuracy_matrix[-1]

    def metrics(self) -> dict[str, float]:
        """Average accuracy, backward transfer, forgetting, last-task accuracy."""
        return metrics.summarize(self.accuracy_matrix)

    def epoch_rows(self) -> list[dict]:
        """One row per epoch (see `larq_meta.training.epoch_rows`)."""
        return epoch_rows(self.fit_history)

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
            "recalibrate_bn": self.recalibrate_bn,
            "accuracy_matrix": self.accuracy_matrix.tolist(),
            "metrics": self.metrics(),
            "seconds": self.seconds,
            "settings": self.settings,
            "history": self.history,
            "fit_history": self.fit_history,
            "config": self.config,
        }

    def save(self, directory: str) -> dict[str, str]:
        """Write `results.json`, `accuracy_matrix.csv` and `epochs.csv` (one row per epoch,
        with `task` and the sequence-wide `epoch`) into `directory`, each replaced
        atomically; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        paths = {
            "json": os.path.join(directory, "results.json"),
            "csv": os.path.join(directory, "accuracy_matrix.csv"),
            "epochs": os.path.join(directory, "epochs.csv"),
        }
        write_json(paths["json"], self.to_dict())
        lines = ["after_task," + ",".join(self.task_names)]
        for name, row in zip(self.task_names, self.accuracy_matrix):
            lines.append(name + "," + ",".join(f"{a:.6f}" for a in row))
        write_atomic(paths["csv"], "\n".join(lines) + "\n")
        write_atomic(paths["epochs"], _csv_text(self.epoch_rows()))
        return paths


class EpochHistory(TaskCallback):
    """Every epoch's logs across the sequence, per task (a resumed run's Keras `History` only
    sees its own epochs); part of the checkpointed state. With `csv_path`, rewrites that CSV
    (one row per epoch: `task`, sequence-wide `epoch`, every logged value) atomically after
    each epoch, so the file never holds a duplicated or a partial row, even across resumes.

    # Arguments
        csv_path: Optional CSV file kept up to date.

    # Attributes
        fit_history: Per task, `{log name: [value per epoch]}`.
    """

    def __init__(self, csv_path: str | None = None):
        super().__init__()
        self.csv_path = csv_path
        self.fit_history: list[dict[str, list]] = []
        self._task = 0

    def on_task_begin(self, task_index, task=None, logs=None):
        self._task = task_index
        del self.fit_history[task_index:]
        self.fit_history.append({})

    def on_epoch_end(self, epoch, logs=None):
        record = self.fit_history[self._task]
        record.setdefault("epoch", []).append(int(epoch))
        for key, value in (logs or {}).items():
            if key != "task":
                record.setdefault(key, []).append(float(value))
        if self.csv_path is not None:
            write_atomic(self.csv_path, _csv_text(epoch_rows(self.fit_history)))

    def get_state(self) -> dict:
        return {"fit_history": self.fit_history, "task": self._task}

    def set_state(self, state: dict) -> None:
        self.fit_history = [dict(record) for record in state["fit_history"]]
        self._task = int(state["task"])


class _SequenceProgress(TaskCallback):
    """One progress bar over all epochs of the sequence, showing task and accuracies."""

    def __init__(self, total_epochs: int, num_tasks: int, initial: int = 0):
        super().__init__()
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total_epochs, initial=initial, unit="epoch", desc="tasks", dynamic_ncols=True
        )
        self.num_tasks = num_tasks
        self.seen = None

    def on_task_begin(self, task_index, task=None, logs=None):
        self.bar.set_description(f"task {task_index + 1}/{self.num_tasks}")

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

    def close(self):
        self.bar.close()


class _OptimizerCheck(tf.keras.callbacks.Callback):
    """Raise, at the end of each epoch, the first fault `MetaplasticAdam`'s per-step checks
    flagged (a bad `m` or learning rate from a schedule, a non-finite hidden weight). Under
    XLA a check cannot raise inside the step, so the step is skipped and recorded
    (`MetaplasticAdam.check`); this surfaces it. Per-batch: `optimizers.CheckOptimizer`."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        check = getattr(optimizer, "check", None)
        if callable(check):
            check()


class _EpochTimer(tf.keras.callbacks.Callback):
    """Writes `train_seconds` (the epoch's training time, evaluation excluded) into `logs`.
    It runs before the evaluation callback, once Keras has synced the epoch's results."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_seconds"] = time.perf_counter() - self._start


def _model_signature(model: tf.keras.Model) -> list[str]:
    """Layer types and weight shapes: a checkpoint of another architecture (width, depth,
    compute dtype) is refused by name instead of failing on a shape."""
    layers = [f"{layer.name}:{type(layer).__name__}" for layer in model.layers]
    weights = [f"{w.name}:{'x'.join(map(str, w.shape))}" for w in model.weights]
    return layers + weights
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
    resume_previous: bool = False,
    settings: Mapping | None = None,
    epochs_csv: str | None = None,
    deterministic: bool = False,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    progress: bool = True,
    verbose: int = 0,
) -> SequenceResult:
    """Train `model` on each task in turn with `model.fit`, evaluating every task each epoch.

    For task `k` the trainer calls `on_task_begin(k, task)` on every `TaskCallback`, then
    `model.fit` on the task's shuffled training data, then `on_task_end(k, task)`. Epochs are
    numbered over the whole sequence (task `k`'s `fit` runs from `initial_epoch` = the epochs
    of the tasks before it), so `TensorBoard` and `CSVLogger` draw one continuous curve per
    metric; `logs` carry `task` (1-based), `acc_task_<j>`, `acc_mean_seen` and
    `train_seconds`.

    **Several devices or machines** (`tf.distribute`): build and compile the model inside
    `strategy.scope()` (with `synchronized_bn=True`, so BatchNorm normalizes the global
    batch); the trainer reads the strategy from the model. `batch_size` stays the global
    batch (split over the replicas), evaluation, recalibration and EWC's Fisher run over the
    full sets in every worker, only the chief writes `epochs_csv` and the checkpoint, and
    every worker resumes from the chief's checkpoint (see `larq_meta.distribute`). Only the
    chief should save the result (`larq_meta.distribute.is_chief()`).

    !!! example
        ```python
        strategy = tf.distribute.MirroredStrategy()  # the local GPUs
        with strategy.scope():  # on CPU replicas, add jit_compile=False (no XLA collectives)
            model = larq_meta.models.compiled_paper_mlp((1024, 1024), synchronized_bn=True)
        result = train_sequence(model, tasks, batch_size=100)  # 100 over all replicas
        ```

    # Arguments
        model: A compiled Keras model (e.g. `larq_meta.models.compiled_paper_mlp`), built
            and compiled inside `strategy.scope()` to train under a `tf.distribute` strategy.
        tasks: A `TaskSequence` or a list of `Task`s.
        epochs_per_task: Epochs per task, one int or one per task.
        batch_size: Training batch size (the paper: 100), over all replicas together.
        bn_protocol: BatchNorm evaluation protocol, see `larq_meta.batchnorm`:
            `"per_task"` (the paper's), `"batch_stats"` (the reference code's), `"shared"`.
        reset_optimizer_per_task: Zero the optimizer state at each task boundary, as the
            reference does by building a fresh Adam per task (use False for streams, where
            the optimizer gets no task-boundary signal). The step counter is part of that
            state: an `m` or learning-rate schedule starts again with every task; pass False
            for a schedule over the whole sequence.
        eval_batch_size: Test batch size (the reference: 1000).
        evaluate_every: Test every task every `evaluate_every` epochs and at each task's
            end (see `TaskEvaluation`); 1 gives the paper's per-epoch curves.
        recalibrate_bn: Replace Keras' moving BatchNorm statistics by exact ones, computed
            on the current task's training inputs before each evaluation (see
            `TaskEvaluation`). Wide BNNs trained long can need it.
        shuffle_seed: Seed of the per-epoch shuffling; each epoch's order depends only on
            (seed, task, epoch). None draws one seed (recorded in the result's config).
        checkpoint_dir: Save the run after every epoch (`larq_meta.checkpoint`: model,
            optimizer slots, position, and every `TaskCallback`'s state) and, if the folder
            already holds a checkpoint of the same run, resume from it. A checkpoint of a run
            with other settings is refused (`CheckpointError` listing them). With
            `deterministic=True` a resumed run ends with exactly the numbers of an
            uninterrupted one.
        resume_previous: Resume from the state one epoch before the latest (kept on disk),
            when the latest checkpoint files are damaged.
        settings: The caller's settings that change what the run computes and are not in
            the trainer's own arguments (e.g. the data set size, the model width): recorded
            in the result and in the checkpoint, where a resume with other values is refused.
        epochs_csv: A CSV file rewritten after every epoch (one row per epoch, see
            `EpochHistory`); written by the chief only.
        deterministic: Call `tf.config.experimental.enable_op_determinism()` (process-wide) so
            that two runs with the same seeds give identical numbers (slower).
        callbacks: Extra Keras callbacks, passed to every `fit` (e.g. `TensorBoard`, `EWC`,
            `HiddenWeightSnapshots`, or a second `TaskEvaluation` with another `bn_protocol`
            and a `log_prefix`); `TaskCallback`s among them get the task hooks and are
            checkpointed.
        progress: Show a progress bar over the whole sequence.
        verbose: Keras `fit` verbosity per task.

    # Returns
        A `SequenceResult`.

    # Raises
        larq_meta.checkpoint.CheckpointError: A checkpoint that is damaged or of another run.
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
    if shuffle_seed is not None:
        check_int(shuffle_seed, "shuffle_seed", 0)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()

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
    settings = as_json(dict(settings or {}))
    strategy = distribute.model_strategy(model)
    if getattr(model, "jit_compile", False) and not distribute.xla_supported(strategy):
        raise ValueError(
            f"`model` is compiled with jit_compile=True, but its {type(strategy).__name__} "
            f"has {strategy.num_replicas_in_sync} replicas on CPU devices, where XLA has no "
            "collective operations (TensorFlow b/194942685): compile it with "
            "jit_compile=False."
        )
    chief = distribute.is_chief(strategy)
    workers = distribute.num_workers(strategy)
    snapshots = BatchNormSnapshots()
    evaluation = TaskEvaluation(
        sequence, bn_protocol=bn_protocol, bn_snapshots=snapshots,
        eval_batch_size=eval_batch_size, evaluate_every=evaluate_every,
        recalibrate_bn=recalibrate_bn,
    )
    history = EpochHistory(csv_path=epochs_csv if chief else None)
    # Order matters: the timer stops before evaluation starts; user callbacks see the
    # evaluation's logs; the history (and the checkpoint) come after every callback that
    # writes to `logs`.
    hooked = [evaluation, snapshots, *task_callbacks(callbacks), history]
    checkpoint = None
    state = None
    if checkpoint_dir is not None:
        checkpoint = SequenceCheckpoint(
            checkpoint_dir, model,
            settings={
                **{key: value for key, value in config.items() if key != "shuffle_seed"},
                "shuffle_seed": shuffle_seed,
                "model_signature": _model_signature(model),
                **{f"settings.{key}": value for key, value in settings.items()},
            },
            task_callbacks=hooked,
        )
        try:
            state = checkpoint.load(previous=resume_previous)
        except BaseException:
            checkpoint.close()
            raise
    elif resume_previous:
        raise ValueError("`resume_previous=True` needs a `checkpoint_dir`.")
    # Not part of the checkpoint's settings: a run may resume on another number of replicas.
    config["strategy"] = type(strategy).__name__
    config["replicas"] = distribute.num_replicas(strategy)
    config["workers"] = workers
    for callback in hooked:
        callback.set_model(model)

    start_task, start_epoch = (state["task"], state["epochs_done"]) if state else (0, 0)
    if shuffle_seed is None:  # drawn once per run; a resumed run keeps the one it drew
        drawn = int(np.random.default_rng().integers(2**31))
        shuffle_seed = state["shuffle_seed"] if state is not None else drawn
    config["shuffle_seed"] = shuffle_seed
    if checkpoint is not None:
        checkpoint.shuffle_seed = shuffle_seed

    keras_callbacks = [_EpochTimer(), _OptimizerCheck(), evaluation, snapshots, *callbacks]
    bar = None
    if progress:
        done = sum(epochs[:start_task]) + start_epoch
        bar = _SequenceProgress(sum(epochs), num_tasks, initial=done)
        keras_callbacks.append(bar)
        hooked.append(bar)  # not checkpointed: added after the checkpoint's list was made
    keras_callbacks.append(history)
    if checkpoint is not None:
        keras_callbacks.append(checkpoint)
    try:
        for k in range(start_task, num_tasks):
            task = sequence[k]
            first_epoch = sum(epochs[:k])
            resumed_inside = k == start_task and start_epoch > 0
            initial_epoch = start_epoch if k == start_task else 0
            if resumed_inside:  # set_state restored the callbacks as they were in the task
                if bar is not None:
                    bar.on_task_begin(k, task)
            else:
                if reset_optimizer_per_task and k > 0:
                    reset_optimizer(model.optimizer)
                for callback in hooked:
                    callback.on_task_begin(k, task)
            if checkpoint is not None:
                checkpoint.begin_task(k, first_epoch)
            data = task.train
            train = make_dataset(
                data, batch_size, shuffle=True, seed=shuffle_seed + 7919 * k,
                epochs=epochs[k], initial_epoch=initial_epoch,
            )
            if workers > 1:  # every worker takes its part of each global batch
                options = tf.data.Options()
                options.experimental_distribute.auto_shard_policy = (
                    tf.data.experimental.AutoShardPolicy.DATA
                )
                train = train.with_options(options)
            model.fit(
                train,
                epochs=first_epoch + epochs[k],
                initial_epoch=first_epoch + initial_epoch,
                steps_per_epoch=steps_per_epoch(data, batch_size),
                callbacks=keras_callbacks,
                verbose=verbose,
            )
            for callback in hooked:
                callback.on_task_end(k, task)
            if checkpoint is not None:
                checkpoint.save(task=k + 1, epochs_done=0)
    finally:
        if bar is not None:
            bar.close()
        if checkpoint is not None:
            checkpoint.close()

    return SequenceResult(
        accuracy_matrix=evaluation.accuracy_matrix,
        task_names=sequence.names,
        history=evaluation.history,
        fit_history=history.fit_history,
        bn_snapshots=snapshots.snapshots,
        bn_protocol=bn_protocol,
        recalibrate_bn=bool(recalibrate_bn),
        seconds=time.perf_counter() - started,
        settings=settings,
        config=config,
    )
