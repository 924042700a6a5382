"""What a search computes, recorded in its directory so that a resume cannot mix two searches.

A search's trials are comparable only if they differ by their hyperparameters alone. So
`MetaplasticTuner.search` records every setting that changes what a trial computes in
`directory/project_name/larq_meta_search.json`:

- the task sequence: its name, scenario, task names and metadata (e.g. the permutation seed),
  the training and test set size of each task, the input shape and a digest of the data;
- the model as built for the default hyperparameters: its layers, widths, parameter count and
  compute dtype, and every optimizer setting that is not searched (learning rate, epsilon,
  weight decay, ...);
- the search: objective, oracle, `m` and learning-rate ranges and steps, seed, executions per
  trial, and every `train_sequence` setting (epochs, batch size, BatchNorm protocol, shuffle
  seed, ...).

A resume with any different value is refused with one message that lists, for each setting
that differs, the recorded and the new value. `max_trials` is not recorded: raising it extends
a search.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping

import numpy as np

from larq_meta._utils import as_json, iter_layers, write_atomic
from larq_meta.tuning.objectives import DEPRECATED_METRIC_NAMES

__all__ = [
    "SETTINGS_FILE",
    "SearchSettingsError",
    "check_resume",
    "check_state_files",
    "describe_model",
    "describe_tasks",
]

#: File (in the project directory) holding the settings a search was started with.
SETTINGS_FILE = "larq_meta_search.json"
_FORMAT = 2
# Recorded by the format-1 files of earlier versions (everything else was not recorded).
_FORMAT_1_KEYS = ("search", "objective", "m_range", "m_step", "learning_rate_range",
                  "learning_rate_step", "seed", "executions_per_trial", "tasks")


class SearchSettingsError(ValueError):
    """A search directory holds a search started with other settings (or an unreadable
    record of them); `differences` maps each differing setting to `(recorded, new)`."""

    def __init__(self, message: str, differences: Mapping | None = None):
        super().__init__(message)
        self.differences = dict(differences or {})


def describe_tasks(tasks) -> dict:
    """The settings of a task sequence that change what a search computes.

    # Arguments
        tasks: A `TaskSequence`.

    # Returns
        A JSON-able dict: `sequence`, `scenario`, `task_names`, `task_info`, and for array
        tasks `train_sizes`, `test_sizes`, `input_shape` and `data_digest` (BLAKE2 of every
        label and of the first 64 inputs of each split, so another data set, permutation or
        subset gives another digest).
    """
    settings = {
        "sequence": tasks.name,
        "scenario": tasks.scenario,
        "task_names": list(tasks.names),
        "task_info": tasks.info,
    }
    digest = hashlib.blake2b(digest_size=16)
    try:
        train_sizes, test_sizes = [], []
        for task in tasks:
            for x, y, sizes in ((task.x_train, task.y_train, train_sizes),
                                (task.x_test, task.y_test, test_sizes)):
                sizes.append(int(len(x)))
                digest.update(str((np.shape(x), np.asarray(x).dtype.str)).encode())
                digest.update(np.ascontiguousarray(np.asarray(y)).tobytes())
                digest.update(np.ascontiguousarray(np.asarray(x[:64])).tobytes())
    except TypeError:  # tf.data tasks: their size and content are not known in advance
        return as_json(settings)
    settings["train_sizes"] = train_sizes
    settings["test_sizes"] = test_sizes
    settings["input_shape"] = list(np.shape(tasks[0].x_train)[1:])
    settings["data_digest"] = digest.hexdigest()
    return as_json(settings)


def describe_model(model, searched: tuple[str, ...] = ("m",)) -> dict:
    """The settings of a built model that change what a search computes.

    # Arguments
        model: A compiled `tf.keras.Model` (built for the default hyperparameters).
        searched: Names of searched hyperparameters; optimizer settings of these names are
            left out (they vary between trials by design).

    # Returns
        A JSON-able dict: `model` (input shape, each layer's type and width, the parameter
        count), `compute_dtype`, `optimizer` (its class) and `optimizer.<name>` for each
        setting of the optimizer's config.
    """
    parts = [f"input {tuple(model.input_shape[1:])}"]
    for layer in iter_layers(model):
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            shape = layer.output_shape
            width = shape[-1] if isinstance(shape, tuple) else None
        except (AttributeError, RuntimeError):
            width = None
        parts.append(type(layer).__name__ + ("" if width is None else f" {width}"))
    settings = {
        "model": " > ".join(parts) + f" ({model.count_params()} parameters)",
        "compute_dtype": getattr(model, "compute_dtype", None),
    }
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        settings["optimizer"] = type(optimizer).__name__
        for key, value in sorted(optimizer.get_config().items()):
            if key not in ("name", "is_legacy_optimizer") and key not in searched:
                if isinstance(value, np.floating):  # float32 0.005 -> 0.005, not 0.00499999...
                    value = float(str(value))
                settings[f"optimizer.{key}"] = value
    return as_json(settings)


def check_state_files(project_dir: str, paths) -> None:
    """Check that the JSON state files of a search (those of `paths` that exist) parse.

    # Arguments
        project_dir: The search's project directory (named in the message).
        paths: The files to check, e.g. Keras Tuner's `oracle.json`, `tuner0.json` and
            `trial_*/trial.json`.

    # Raises
        ValueError: a file is truncated or corrupt; the message names it and what to do.
    """
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} is truncated or corrupt ({error}), so the search in {project_dir} "
                "cannot be resumed. Start it afresh with overwrite=True (--overwrite), or move "
                "the folder aside or use another project_name (--project-name)."
            ) from None


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            record = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise SearchSettingsError(
            f"{path} is truncated or corrupt ({error}): the settings of this search cannot be "
            "checked. Start afresh with overwrite=True (--overwrite) or use another "
            "project_name (--project-name)."
        ) from None
    if not isinstance(record, dict):
        raise SearchSettingsError(f"{path} does not hold a search's settings; start afresh "
                                  "with overwrite=True (--overwrite) or another project_name.")
    return record


def _rename_metrics(value):
    """Deprecated metric names (`mean_accuracy`) in a recorded objective -> current ones."""
    if isinstance(value, dict):
        return {DEPRECATED_METRIC_NAMES.get(k, k): _rename_metrics(v) for k, v in value.items()}
    if isinstance(value, str):
        return DEPRECATED_METRIC_NAMES.get(value, value)
    return value


def _upgrade(record: dict) -> tuple[dict, bool]:
    """Settings of a record (format 2, or format 1 of earlier versions, flattened)."""
    if record.get("format") == _FORMAT:
        return record["settings"], False
    settings = dict(record.get("search", {}))
    for key in _FORMAT_1_KEYS[1:-1]:
        if key in record:
            settings[key] = record[key]
    if "objective" in settings:
        settings["objective"] = _rename_metrics(settings["objective"])
    tasks = record.get("tasks", {})
    for old, new in (("name", "sequence"), ("scenario", "scenario"),
                     ("task_names", "task_names"), ("info", "task_info")):
        if old in tasks:
            settings[new] = tasks[old]
    return settings, True


def _show(value) -> str:
    return "(not set)" if value is None else json.dumps(value)


def check_resume(project_dir: str, settings: Mapping, defaults: Mapping | None = None) -> None:
    """Record `settings` in `project_dir`, or check them against the recorded ones.

    The first search in `project_dir` writes `SETTINGS_FILE`; later ones must give equal
    settings. A record written by an earlier larq-meta (which recorded fewer settings, and
    called `average_accuracy` `mean_accuracy`) is checked on the settings it has and then
    rewritten with all of them, with a warning.

    # Arguments
        project_dir: The search's project directory.
        settings: Setting name -> JSON-able value (see the module docstring).
        defaults: Values of settings a record may lack because they were not arguments
            then (e.g. a `train_sequence` argument added since): a missing setting equals
            its default.

    # Raises
        SearchSettingsError: a setting differs (the message lists each with its recorded and
            new value), or the record is unreadable.
    """
    path = os.path.join(project_dir, SETTINGS_FILE)
    settings = as_json(dict(settings))
    if os.path.exists(path):
        recorded, old_format = _upgrade(_read(path))
        recorded = {**as_json(dict(defaults or {})), **recorded}
        keys = sorted(set(recorded) | (set() if old_format else set(settings)))
        differences = {
            key: (recorded.get(key), settings.get(key))
            for key in keys
            if recorded.get(key) != settings.get(key)
        }
        if differences:
            listed = "; ".join(f"{k}: {_show(old)} -> {_show(new)}"
                               for k, (old, new) in differences.items())
            raise SearchSettingsError(
                f"The search in {project_dir} was started with other settings, so its trials "
                f"and new ones would not be comparable (recorded -> now): {listed}. Resume "
                "with the recorded settings, or start afresh with overwrite=True "
                "(--overwrite) or another project_name (--project-name).",
                differences,
            )
        if not old_format:
            return
        warnings.warn(
            f"{path} was written by an earlier larq-meta that did not record the model, the "
            "optimizer settings or the data sizes; they are assumed unchanged and recorded now.",
            UserWarning,
            stacklevel=3,
        )
    write_atomic(path, json.dumps({"format": _FORMAT, "settings": settings}, indent=2) + "\n")
