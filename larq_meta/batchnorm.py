"""BatchNorm state per task: the evaluation protocols of the paper and of its reference code.

A BNN's BatchNorm layers carry real-valued state (scale `gamma`, shift `beta`, moving mean
and variance) that is *not* protected by metaplasticity. Laborieux et al. (2021) therefore
snapshot every BatchNorm layer at the end of each task and evaluate task `k` with task `k`'s
snapshot. The protocol changes results a lot, so every table says which one it used:

- `"per_task"` (the paper's): evaluate task `k` with the BatchNorm state saved after task `k`.
- `"batch_stats"` (the reference code today): BatchNorm without running statistics: every
  test batch is normalized with its own mean and variance, using task `k`'s saved `gamma`
  and `beta`.
- `"shared"`: plain Keras, one BatchNorm state for all tasks.

`recalibrate_batchnorm` replaces the moving statistics by exact ones. Keras' moving averages
(momentum 0.9, i.e. PyTorch's 0.1) are averages over the last few dozen training batches,
while the weights move, of training-mode statistics (each layer's input computed with the
earlier layers normalized by their batch statistics, not by the moving ones used at test
time). The error is small, but a sign activation turns it into flipped bits that add up
over the next layer's units: at 4096 units per layer, a BNN trained 50 epochs fell to chance
in inference mode while batch statistics gave 86 % (documentation, Results: "MNIST then Fashion-MNIST").
Exact statistics, computed layer after layer in inference mode, restore it.

Synchronized BatchNorm (`BatchNormalization(synchronized=True)`, `synchronized_bn=True` in
`larq_meta.models`, for `tf.distribute`) is a `BatchNormalization` layer with the same
weights: every function here treats it as any other. Under a strategy, assignments reach
every replica's copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

from larq_meta._utils import iter_layers

__all__ = [
    "BN_PROTOCOLS",
    "BatchNormState",
    "batchnorm_layers",
    "check_bn_protocol",
    "snapshot_batchnorm",
    "restore_batchnorm",
    "using_batchnorm",
    "recalibrate_batchnorm",
]

#: The evaluation protocols, as `TaskEvaluation(bn_protocol=...)` takes them.
BN_PROTOCOLS = ("per_task", "batch_stats", "shared")

#: One model's BatchNorm state: layer name -> [gamma, beta, moving_mean, moving_variance]
#: (the layer's `get_weights()`, whatever of gamma/beta it has).
BatchNormState = Mapping[str, list]


def check_bn_protocol(bn_protocol: str) -> str:
    """`bn_protocol` if it is one of `BN_PROTOCOLS`, else a ValueError naming them."""
    if bn_protocol not in BN_PROTOCOLS:
        raise ValueError(f"`bn_protocol` must be one of {BN_PROTOCOLS}, got {bn_protocol!r}.")
    return bn_protocol


def batchnorm_layers(model: tf.keras.Model) -> list[tf.keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models included, in order."""
    return [layer for layer in iter_layers(model) if isinstance(layer, tf.keras.layers.BatchNormalization)]


def snapshot_batchnorm(model: tf.keras.Model) -> dict[str, list[np.ndarray]]:
    """A copy of every BatchNorm layer's weights (gamma, beta, moving mean and variance)."""
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in batchnorm_layers(model)}


def restore_batchnorm(model: tf.keras.Model, state: BatchNormState) -> None:
    """Load a snapshot made by `snapshot_batchnorm` into `model`'s BatchNorm layers."""
    layers = {layer.name: layer for layer in batchnorm_layers(model)}
    missing = sorted(set(layers) - set(state))
    unknown = sorted(set(state) - set(layers))
    if missing or unknown:
        raise ValueError(
            f"BatchNorm snapshot does not fit the model: layers without a snapshot {missing}, "
            f"snapshot entries without a layer {unknown}."
        )
    for name, layer in layers.items():
        layer.set_weights(state[name])


@contextlib.contextmanager
def using_batchnorm(model: tf.keras.Model, state: BatchNormState | None) -> Iterator[None]:
    """Temporarily load a BatchNorm snapshot (None: leave the model as it is)."""
    if state is None:
        yield
        return
    live = snapshot_batchnorm(model)
    restore_batchnorm(model, state)
    try:
        yield
    finally:
        restore_batchnorm(model, live)


def _probe_input(model: tf.keras.Model, layer: tf.keras.layers.Layer) -> tf.keras.Model:
    """A model from `model`'s inputs to `layer`'s input (the layer must be used once)."""
    try:
        return tf.keras.Model(model.inputs, layer.input)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"recalibrate_batchnorm: cannot reach the input of BatchNorm layer '{layer.name}' "
            f"from the inputs of '{model.name}' (it must be a layer of this functional or "
            f"Sequential model, called once, not inside a nested model): {error}"
        ) from None


def _input_batches(data, batch_size: int) -> Iterator[tf.Tensor]:
    """Model inputs of `data` in batches, integer images scaled to [0, 1] as in training."""
    from larq_meta.tasks import scale_images

    if isinstance(data, tf.data.Dataset):
        for batch in data.batch(batch_size):
            yield scale_images(batch[0] if isinstance(batch, (tuple, list)) else batch)
        return
    x = np.asarray(data[0] if isinstance(data, (tuple, list)) else data)
    for start in range(0, len(x), batch_size):
        yield scale_images(tf.constant(x[start : start + batch_size]))


def recalibrate_batchnorm(model: tf.keras.Model, data, batch_size: int = 1000) -> dict[str, int]:
    """Set every BatchNorm layer's moving mean and variance to the exact statistics of its
    input over `data`, layer after layer, in inference mode ("precise BatchNorm").

    Layer `l`'s statistics are computed with the layers before it already recalibrated and in
    inference mode, so each layer is normalized with the statistics of exactly the inputs it
    will see at test time. `gamma` and `beta` are not touched; nothing is trained. Run it at
    the end of a task on that task's training data (before `snapshot_batchnorm`), or on a
    finished model.

    !!! example
        ```python
        recalibrate_batchnorm(model, task.train)  # (x, y) arrays or a tf.data.Dataset
        snapshot = snapshot_batchnorm(model)
        ```

    # Arguments
        model: A functional or Sequential Keras model whose BatchNorm layers are its own
            layers (not inside nested models), each called once.
        data: `(x, y)` or `x` arrays, or a `tf.data.Dataset` of unbatched `(x, y)` or `x`
            samples; integer images are scaled to `[0, 1]` as in training.
        batch_size: Batch size of the statistics passes (memory only; the result does not
            depend on it beyond float rounding).

    # Returns
        `{layer name: number of samples}` for the layers recalibrated.

    # Raises
        ValueError: a BatchNorm layer whose input cannot be reached (named), or empty `data`.
    """
    from larq_meta._utils import check_int

    check_int(batch_size, "batch_size", minimum=1)
    bn_class = tf.keras.layers.BatchNormalization
    layers = [layer for layer in model.layers if isinstance(layer, bn_class)]
    nested = [layer for layer in batchnorm_layers(model) if layer not in layers]
    if nested:
        raise ValueError(
            f"recalibrate_batchnorm: BatchNorm layer '{nested[0].name}' is inside a nested model "
            f"of '{model.name}'; call it on that nested model."
        )
    counts = {}
    for layer in layers:
        probe = _probe_input(model, layer)
        rank = len(probe.output.shape)
        axes = {a % rank for a in np.atleast_1d(layer.axis)}
        reduce_axes = [a for a in range(rank) if a not in axes]
        total = total_sq = None
        n = 0
        for x in _input_batches(data, batch_size):
            h = probe(x, training=False).numpy().astype(np.float64)
            s, sq = h.sum(axis=tuple(reduce_axes)), (h * h).sum(axis=tuple(reduce_axes))
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            n += int(np.prod([h.shape[a] for a in reduce_axes]))
        if n == 0:
            raise ValueError("recalibrate_batchnorm: `data` is empty.")
        mean = total / n
        variance = np.maximum(total_sq / n - mean * mean, 0.0)
        layer.moving_mean.assign(mean.reshape(layer.moving_mean.shape).astype(np.float32))
        layer.moving_variance.assign(
            variance.reshape(layer.moving_variance.shape).astype(np.float32)
        )
        counts[layer.name] = n
    return counts
