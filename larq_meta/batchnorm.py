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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

__all__ = [
    "BN_PROTOCOLS",
    "BatchNormState",
    "batchnorm_layers",
    "check_bn_protocol",
    "snapshot_batchnorm",
    "restore_batchnorm",
    "using_batchnorm",
]

BN_PROTOCOLS = ("per_task", "batch_stats", "shared")

#: One model's BatchNorm state: layer name -> [gamma, beta, moving_mean, moving_variance]
#: (the layer's `get_weights()`, whatever of gamma/beta it has).
BatchNormState = Mapping[str, list]


def check_bn_protocol(bn_protocol: str) -> str:
    if bn_protocol not in BN_PROTOCOLS:
        raise ValueError(f"`bn_protocol` must be one of {BN_PROTOCOLS}, got {bn_protocol!r}.")
    return bn_protocol


def batchnorm_layers(model: tf.keras.Model) -> list[tf.keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, tf.keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


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
