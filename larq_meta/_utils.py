"""Helpers shared by the modules (private): argument checks, atomic file writes, layer
walking, JSON conversion and matplotlib set-up. One home each; no module re-implements them."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import tempfile
from collections.abc import Iterator

import numpy as np

# -- argument checks ------------------------------------------------------------------------------


def check_int(value, argument: str, minimum: int = 1) -> int:
    """`value` as an int >= `minimum` (Python or numpy integer, not bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{argument}` must be {expected}, got {value!r}.")
    return int(value)


def check_float(
    value, argument: str, *, minimum: float | None = None, positive: bool = False,
    maximum: float | None = None,
) -> float:
    """`value` as a finite float (not bool) within the bounds, else ValueError naming them."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (minimum is None or value >= minimum)
        and (not positive or value > 0)
        and (maximum is None or value <= maximum)
    )
    if not ok:
        bounds = []
        if positive:
            bounds.append("> 0")
        if minimum is not None:
            bounds.append(f">= {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        expected = "a finite float" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"`{argument}` must be {expected}, got {value!r}.")
    return float(value)


# -- files ----------------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, data: bytes | str) -> str:
    """Write `data` to `path` through a temporary file in the same folder and one rename, so a
    reader (or a crash) sees the old file or the new one, never a part. The file gets the
    mode a plain `open` would (0o666 less the umask). Returns `path` as a str."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def as_json(value):
    """`value` as JSON gives it back: tuples become lists, numpy values Python ones (so
    settings compare equal before and after a save)."""
    import json

    return json.loads(json.dumps(value, default=json_default))


def write_json(path: str | os.PathLike, value) -> str:
    """Write `value` as indented JSON (numpy values converted), atomically."""
    import json

    return write_atomic(path, json.dumps(value, indent=2, default=json_default) + "\n")


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_default(value):
    """`json.dump(default=...)` for numpy scalars and arrays (anything else: its str)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- Keras models ---------------------------------------------------------------------------------


def iter_layers(model) -> Iterator:
    """Every layer of `model`, nested models expanded (not yielded themselves), in order."""
    import tensorflow as tf

    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


# -- figures --------------------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (unless MPLBACKEND chooses another)."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> str:
    """Save `fig` as PNG at `path` (folders created), close it, return the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


# -- losses and statistics (added for hidden_weights / quadratic / consolidation) -----------------


def model_outputs_logits(model, from_logits: bool | None = None) -> bool:
    """Whether `model` outputs logits: `from_logits` if given, else read from the compiled loss
    (a loss given by name, e.g. `"sparse_categorical_crossentropy"`, means probabilities; a
    loss object's `from_logits` config), else True."""
    if from_logits is not None:
        return bool(from_logits)
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return False
    value = loss.get_config().get("from_logits") if hasattr(loss, "get_config") else None
    return True if value is None else bool(value)


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (as `scipy.stats.rankdata`)."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    return np.bincount(inverse, weights=ranks)[inverse] / counts[inverse]


def correlation(a, b) -> dict:
    """`{"pearson": r, "spearman": rho, "n": n}` of two equally long arrays (flattened); a
    coefficient is NaN when one side is constant. ValueError if the sizes differ."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"correlation: {a.size} values against {b.size}; give equally long arrays."
        )

    def pearson(x, y):
        x, y = x - x.mean(), y - y.mean()
        denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
        return float(np.sum(x * y) / denominator) if denominator > 0 else float("nan")

    return {
        "pearson": pearson(a, b),
        "spearman": pearson(average_ranks(a), average_ranks(b)),
        "n": int(a.size),
    }


def renamed_argument(deprecated: dict, old: str, new: str, value, *, stacklevel: int = 3):
    """The value of argument `new`, or of its deprecated old name `old` if the caller used it
    (popped from `deprecated`, a function's `**deprecated` keyword arguments, with a
    `DeprecationWarning` at `stacklevel`, by default the function's caller)."""
    if old in deprecated:
        import warnings

        warnings.warn(f"`{old}` is deprecated; use `{new}`.", DeprecationWarning,
                      stacklevel=stacklevel)
        return deprecated.pop(old)
    return value


def reject_unexpected(function: str, deprecated: dict) -> None:
    """TypeError for keyword arguments left in a `**deprecated` catch-all, as Python's own."""
    if deprecated:
        raise TypeError(
            f"{function}() got unexpected keyword argument(s): {', '.join(sorted(deprecated))}"
        )
