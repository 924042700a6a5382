"""The run state of a task sequence, saved after every epoch so a killed run resumes exactly.

A `SequenceCheckpoint` keeps, in one folder:

- the model and optimizer (a `tf.train.Checkpoint`: weights, hidden weights, Adam moments,
  step counter), the last two saves kept;
- the sequence state (`sequence_state.npz`): where the run is (task, epochs done), the
  settings it was started with, and the state of every `TaskCallback` (`get_state()`:
  accuracy matrix, BatchNorm snapshots, EWC's consolidated Fisher, per-epoch history, ...).

The sequence state is written last, through a temporary file and one rename, and names the
model checkpoint it belongs to, so a run killed at any instant resumes from the last complete
epoch, bit for bit. The previous state is kept as `sequence_state.previous.npz`: if the
latest files are damaged, `load(previous=True)` resumes one epoch earlier.

Resuming with different settings is refused: the error lists every setting whose value
differs, old and new, instead of mixing two runs into one result.

Under a `tf.distribute` strategy (the model built in `strategy.scope()`), only the chief
writes into the folder; the other workers of a multi-worker cluster save into a temporary
folder of their own, deleted by `close()` (they must save too: saving reads BatchNorm
statistics, which are reduced across workers). Every worker resumes from the chief's folder,
which must therefore be on storage they all see; workers that find different states refuse
to start (`CheckpointError`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from larq_meta import distribute
from larq_meta._utils import as_json, json_default

__all__ = ["CheckpointError", "SequenceCheckpoint", "read_sequence_state", "settings_diff"]

STATE_FILE = "sequence_state.npz"
PREVIOUS_STATE_FILE = "sequence_state.previous.npz"


_PREVIOUS_ADVICE = (
    "The state one epoch earlier is kept: resume from it with `resume_previous=True` "
    "(command line: --resume-previous)."
)


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed: damaged files, or another run's settings."""


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


def _read_state(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
        return _join_arrays(json.loads(str(arrays.pop("__skeleton__"))), arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path}: damaged checkpoint state ({' '.join(str(error).split())})."
        ) from error


def read_sequence_state(directory: str, previous: bool = False) -> dict | None:
    """The sequence state a checkpointed run saved in `directory` (None if there is none).

    # Arguments
        directory: The checkpoint folder.
        previous: Read the state saved one epoch before the latest.

    # Returns
        A dict with `checkpoint` (the model/optimizer checkpoint's name in `directory`, for
        `tf.train.Checkpoint(model=model).restore`), `task`, `epochs_done`, `callbacks` (each
        task callback's state), `settings` and `shuffle_seed`; None without a saved state.

    # Raises
        CheckpointError: The state file is damaged (its name is in the message).
    """
    path = os.path.join(directory, PREVIOUS_STATE_FILE if previous else STATE_FILE)
    if not os.path.exists(path):
        return None
    return _read_state(path)


def settings_diff(old: Mapping, new: Mapping) -> list[str]:
    """`"name: old -> new"` (values as JSON) for every setting whose value differs; a setting
    one side lacks shows as `<unset>`."""

    def shown(mapping, key):
        return json.dumps(mapping[key], default=json_default) if key in mapping else "<unset>"

    return [
        f"{key}: {shown(old, key)} -> {shown(new, key)}"
        for key in sorted(set(old) | set(new))
        if key not in old or key not in new or old[key] != new[key]
    ]


class SequenceCheckpoint(tf.keras.callbacks.Callback):
    """Save a task sequence's run state after every epoch; resume it.

    `larq_meta.training.train_sequence(checkpoint_dir=...)` makes one. As a Keras callback it
    saves after each epoch but a task's last (the sequence runner saves that one with `save`
    after every `TaskCallback.on_task_end`, so the task's end is part of the state).

    # Arguments
        directory: Folder of the checkpoint (created).
        model: The compiled model; its optimizer is saved with it.
        settings: Everything that changes what the run computes (JSON-able). A resume with
            other settings raises `CheckpointError` listing the differences.
        task_callbacks: The callbacks whose `get_state()` / `set_state()` are saved.

    # Attributes
        write_directory: Where this process saves: `directory` on the chief, a temporary
            folder on the other workers of a multi-worker strategy (see the module).
    """

    def __init__(
        self,
        directory: str,
        model: tf.keras.Model,
        settings: Mapping,
        task_callbacks: Sequence = (),
    ):
        super().__init__()
        self.directory = directory
        self.settings = as_json(dict(settings))
        self.task_callbacks = list(task_callbacks)
        self.shuffle_seed: int | None = None
        self.task_index = 0
        self._first_epoch = 0  # global index of the current task's first epoch
        self._model_to_save = model
        self._strategy = distribute.model_strategy(model)
        os.makedirs(directory, exist_ok=True)
        self.write_directory = distribute.worker_directory(directory, self._strategy)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.write_directory, max_to_keep=2
        )

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < self.params["epochs"]:  # a task's last epoch: saved after on_task_end
            self.save(task=self.task_index, epochs_done=self._epochs_done(epoch))

    def begin_task(self, task_index: int, first_epoch: int) -> None:
        """Tell the checkpoint which task runs and its first (global) epoch index."""
        self.task_index = task_index
        self._first_epoch = first_epoch

    def _epochs_done(self, epoch: int) -> int:
        return int(epoch + 1 - self._first_epoch)

    def save(self, task: int, epochs_done: int) -> str:
        """Save the run state: `epochs_done` epochs of task `task` are complete. Returns the
        state file's path."""
        path = self.manager.save()
        state = {
            "checkpoint": os.path.basename(path),
            "task": task,
            "epochs_done": epochs_done,
            "shuffle_seed": self.shuffle_seed,
            "callbacks": [callback.get_state() for callback in self.task_callbacks],
            "settings": self.settings,
        }
        arrays: dict[str, np.ndarray] = {}
        skeleton = json.dumps(_split_arrays(state, arrays), default=json_default)
        latest = os.path.join(self.write_directory, STATE_FILE)
        tmp = os.path.join(self.write_directory, f".{STATE_FILE}.{os.getpid()}.tmp.npz")
        np.savez(tmp, __skeleton__=np.array(skeleton), **arrays)
        if os.path.exists(latest):  # kept for load(previous=True); its checkpoint is kept too
            os.replace(latest, os.path.join(self.write_directory, PREVIOUS_STATE_FILE))
        os.replace(tmp, latest)
        return latest

    def close(self) -> None:
        """Delete a worker's temporary folder (nothing on the chief)."""
        distribute.remove_worker_directory(self.write_directory, self.directory)

    def load(self, previous: bool = False) -> dict | None:
        """Restore model, optimizer and callbacks from the last complete epoch (or the one
        before, with `previous=True`); return the sequence state (None: nothing saved).

        # Raises
            CheckpointError: Damaged files (named, with the advice to resume from the
                previous state), or settings that differ (listed, old -> new).
        """
        try:
            state = read_sequence_state(self.directory, previous=previous)
        except CheckpointError as error:
            if previous:
                raise
            raise CheckpointError(f"{error} {_PREVIOUS_ADVICE}") from error
        position = -1 if state is None else int(state["task"]) * 1_000_000 + int(
            state["epochs_done"]
        )
        if not distribute.same_on_all_workers(position, self._strategy):
            raise CheckpointError(
                f"The workers found different checkpoint states in {self.directory}: it must "
                "be one folder on storage every worker sees (and no worker may run an older "
                "copy)."
            )
        if state is None:
            if previous:
                raise CheckpointError(f"{self.directory}: no previous checkpoint state to resume.")
            return None
        if "settings" not in state:
            raise CheckpointError(
                f"Checkpoint in {self.directory} was written by larq-meta 0.1, whose run state "
                "this version does not read; start the run again in a new folder."
            )
        differences = settings_diff(state["settings"], self.settings)
        if differences:
            raise CheckpointError(
                f"Checkpoint in {self.directory} belongs to another run; settings that differ "
                f"(saved -> now): {'; '.join(differences)}. Use a new output folder, or the "
                "settings it was started with."
            )
        if len(state["callbacks"]) != len(self.task_callbacks):
            raise CheckpointError(
                f"Checkpoint in {self.directory} saved {len(state['callbacks'])} callback "
                f"states, but this run has {len(self.task_callbacks)} task callbacks."
            )
        model = self._model_to_save
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        optimizer.build(model.trainable_variables)  # slots must exist to be restored
        prefix = os.path.join(self.directory, state["checkpoint"])
        try:
            status = self.checkpoint.restore(prefix)
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as error:
            advice = "" if previous else " " + _PREVIOUS_ADVICE
            raise CheckpointError(
                f"{prefix}: damaged or incompatible model checkpoint "
                f"({' '.join(str(error).split())[:300]}).{advice}"
            ) from error
        for callback, callback_state in zip(self.task_callbacks, state["callbacks"]):
            callback.set_model(model)
            callback.set_state(callback_state)
        self.shuffle_seed = state["shuffle_seed"]
        return state

