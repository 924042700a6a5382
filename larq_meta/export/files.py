"""Files around an export: loading a saved model without running code it carries, and the
per-task BatchNorm snapshot files (`.npz`) of `larq-meta export --bn-snapshots`."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np

from larq_meta._utils import write_atomic
from larq_meta.export.errors import ExportError, UnsafeModelError

__all__ = [
    "load_model",
    "code_carrying_layers",
    "load_parity_data",
    "save_bn_snapshots",
    "load_bn_snapshots",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Layer classes whose config carries Python code (marshalled bytecode) that loading runs.
CODE_LAYERS = ("Lambda",)
_CLASS_NAME = re.compile(rb'"class_name":\s*"(Lambda)"')


def _walk_class_names(config) -> list[tuple[str, str]]:
    """(class_name, name) of every serialized object in a Keras config."""
    found = []
    if isinstance(config, Mapping):
        if isinstance(config.get("class_name"), str):
            inner = config.get("config")
            name = inner.get("name", "?") if isinstance(inner, Mapping) else "?"
            found.append((config["class_name"], str(name)))
        for value in config.values():
            found.extend(_walk_class_names(value))
    elif isinstance(config, (list, tuple)):
        for value in config:
            found.extend(_walk_class_names(value))
    return found


def code_carrying_layers(path: PathLike) -> list[str]:
    """The layers of a legacy `.h5` file or a SavedModel folder whose config carries Python
    code (`Lambda` layers), read without deserializing anything. `.keras` files: [] (Keras'
    `safe_mode` guards them)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        metadata = os.path.join(path, "keras_metadata.pb")
        if not os.path.isfile(metadata):
            return []
        with open(metadata, "rb") as f:
            raw = f.read()
        # The metadata proto stores each layer's config as JSON text.
        found = sorted({m.group(1).decode() for m in _CLASS_NAME.finditer(raw)})
        return [f"{cls} layer" for cls in found]
    if zipfile.is_zipfile(path):  # .keras (v3): Keras' safe_mode applies
        return []
    import h5py

    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError as error:
        raise ExportError(
            f"Cannot read model file {path!r}: not a .keras, .h5 or SavedModel ({error})."
        ) from error
    if config is None:
        return []
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    return [
        f"{cls} layer '{name}'"
        for cls, name in _walk_class_names(json.loads(config))
        if cls in CODE_LAYERS
    ]


def load_model(path: PathLike, *, safe_mode: bool = True):
    """Load a model saved with larq (and larq_meta) layers, without compiling it.

    A model file can carry Python code: a `Lambda` layer stores its function as bytecode,
    which loading runs. With `safe_mode=True` (default) a `.keras` file is loaded with Keras'
    `safe_mode`, and a legacy `.h5` file or SavedModel folder holding a `Lambda` layer is
    refused before anything is deserialized.

    !!! example
        ```python
        model = load_model("mlp.keras")
        ```

    # Arguments
        path: A `.keras` file, a legacy `.h5` file or a SavedModel folder from `model.save`.
        safe_mode: False loads code-carrying files too: only for files you trust as you would
            trust a script.

    # Returns
        The Keras model.

    # Raises
        ExportError: the file does not exist or cannot be loaded.
        UnsafeModelError: it carries code and `safe_mode` is True.
    """
    import tensorflow as tf

    import larq_meta.optimizers  # noqa: F401 - registers MetaplasticAdam
    from larq_meta.models import unclipped_kernels_by_design

    name = os.fspath(path)
    if not os.path.exists(name):
        raise ExportError(f"Model file {name!r} does not exist.")
    if safe_mode:
        carriers = code_carrying_layers(name)
        if carriers:
            raise UnsafeModelError(
                f"{name} holds Python code that loading would run ({', '.join(carriers)}); "
                "refused. Load it only if you trust it as a script (--unsafe, safe_mode=False)."
            )
    try:
        with unclipped_kernels_by_design():
            return tf.keras.models.load_model(name, compile=False, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001
        message = " ".join(str(error).split())
        if safe_mode and "safe_mode" in message:
            raise UnsafeModelError(
                f"{name} holds Python code that loading would run (Keras' safe_mode refused "
                "it). Load it only if you trust it as a script (--unsafe, safe_mode=False)."
            ) from error
        raise ExportError(
            f"Cannot load model {name!r}: {type(error).__name__}: {message}"
        ) from error


def save_bn_snapshots(
    path: PathLike, bn_snapshots: Sequence[Optional[Mapping[str, Sequence]]]
) -> str:
    """Save per-task BatchNorm snapshots as `.npz` (written atomically).

    Key `"{task}/{layer}/{i}"` holds weight `i` (0 gamma, 1 beta, 2 moving mean, 3 moving
    variance for an affine BatchNorm) of BatchNorm layer `layer` after task `task`. `None`
    items (no snapshot) are left out.

    !!! example
        ```python
        save_bn_snapshots("bn.npz", result.bn_snapshots)
        ```

    # Arguments
        path: The file; `.npz` is appended if it does not end with it (as `np.savez` does).
        bn_snapshots: A list whose item `k` is the `snapshot_batchnorm` dict after task `k`.

    # Returns
        The path written.
    """
    arrays = {}
    for k, snapshot in enumerate(bn_snapshots):
        for name, weights in (snapshot or {}).items():
            for i, w in enumerate(weights):
                arrays[f"{k}/{name}/{i}"] = np.asarray(w)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def load_bn_snapshots(path: PathLike) -> list[Optional[dict[str, list[np.ndarray]]]]:
    """Read a `save_bn_snapshots` file.

    # Arguments
        path: The `.npz` file.

    # Returns
        A list (index = task) of `{layer: [weights]}`, `None` for absent tasks.

    # Raises
        ExportError: the file is missing, not an `.npz` archive, or its keys are not
            `"<task>/<layer>/<weight index>"`.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ExportError(f"BatchNorm snapshot file {name!r} does not exist or is not a file.")
    if not zipfile.is_zipfile(name):
        raise ExportError(
            f"{name}: not an .npz archive; BatchNorm snapshots are written by "
            "larq_meta.export.save_bn_snapshots."
        )
    found: dict[int, dict[str, dict[int, np.ndarray]]] = {}
    try:
        with np.load(name, allow_pickle=False) as data:
            for key in data.files:
                try:
                    task, rest = key.split("/", 1)
                    layer, index = rest.rsplit("/", 1)
                    task_k, i = int(task), int(index)
                except ValueError as error:
                    raise ExportError(
                        f"{name}: key {key!r} is not '<task>/<layer>/<weight index>'."
                    ) from error
                found.setdefault(task_k, {}).setdefault(layer, {})[i] = data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ExportError):
            raise
        raise ExportError(f"{name}: cannot read the BatchNorm snapshots ({error}).") from error
    snapshots: list[Optional[dict]] = [None] * (max(found) + 1 if found else 0)
    for k, layers in found.items():
        snapshots[k] = {layer: [w[i] for i in sorted(w)] for layer, w in layers.items()}
    return snapshots


def load_parity_data(path: PathLike):
    """Read parity data from an `.npz` file with array `x` and optionally `y` (labels).

    # Arguments
        path: The `.npz` file.

    # Returns
        `(x, y)` if the file has `y`, else `x`: what `to_lce(parity_data=...)` takes.

    # Raises
        ExportError: the file is missing, not an `.npz` archive, or has no array `x`.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ExportError(f"Parity data file {name!r} does not exist or is not a file.")
    if not zipfile.is_zipfile(name):
        raise ExportError(f"{name}: not an .npz archive with arrays 'x' (and optionally 'y').")
    try:
        with np.load(name, allow_pickle=False) as data:
            if "x" not in data.files:
                raise ExportError(
                    f"{name}: no array 'x' (arrays: {sorted(data.files)}); parity data is an "
                    ".npz with 'x' and optionally 'y'."
                )
            return (data["x"], data["y"]) if "y" in data.files else data["x"]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ExportError):
            raise
        raise ExportError(f"{name}: cannot read the parity data ({error}).") from error
