"""The binarized networks of Laborieux et al. (2021), built from larq layers.

!!! example
    ```python
    model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
    model.compile(optimizer=larq_meta.MetaplasticAdam(m=1.35, learning_rate=0.005),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ```
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import larq as lq
import tensorflow as tf

__all__ = ["paper_mlp", "float_mlp", "binary_convnet", "batch_norm"]

#: PyTorch's BatchNorm defaults (momentum 0.1 on the new value, eps 1e-5) in Keras' terms.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _check_units(hidden_units: Sequence[int], argument: str = "hidden_units") -> tuple[int, ...]:
    units = tuple(hidden_units)
    if not units or not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units):
        raise ValueError(f"`{argument}` must be a non-empty sequence of positive ints, got {hidden_units!r}.")
    return units


def _check_positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{argument}` must be a positive int, got {value!r}.")
    return value


@contextlib.contextmanager
def _unclipped_kernels_by_design() -> Iterator[None]:
    """Silence larq's "starved weights" warning: it is for clipped straight-through kernels;
    ours are unclipped (`SteSign(clip_value=None)`), so their gradient never vanishes."""
    logger = logging.getLogger("larq.layers_base")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _uniform(init_width: float) -> tf.keras.initializers.Initializer:
    if not init_width > 0:
        raise ValueError(f"`init_width` must be > 0, got {init_width!r}.")
    return tf.keras.initializers.RandomUniform(-init_width / 2, init_width / 2)


def batch_norm(name: str | None = None) -> tf.keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's defaults (momentum 0.1 -> Keras 0.9, epsilon 1e-5)."""
    return tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def paper_mlp(
    hidden_units: Sequence[int] = (4096, 4096),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    init_width: float = 0.1,
    name: str = "paper_mlp",
) -> tf.keras.Model:
    """The binarized MLP of the paper's continual-learning experiments (784-4096-4096-10).

    Layer by layer, as the reference implementation (`BNN` in its `models_utils.py`):

    - `Flatten`, then for each hidden width and the output: a `QuantDense` **without bias**,
      then `BatchNormalization`, then (except after the output) a sign activation.
    - Kernels are binarized with `SteSign(clip_value=None)`: sign in the forward pass, a
      straight-through gradient that is **not clipped**, and no `weight_clip` constraint, so
      the hidden weights can grow without bound; their magnitude is the metaplastic state.
    - The first layer sees the real-valued input (no input quantizer); later layers see the
      sign of the previous layer's normalized output with the usual straight-through window
      `|x| <= 1` (`ste_sign`).
    - BatchNorm uses PyTorch's defaults (momentum 0.1, i.e. Keras `momentum=0.9`, and
      `epsilon=1e-5`), is affine, and also normalizes the logits.
    - Kernels start from U(-init_width/2, init_width/2), i.e. U(-0.05, 0.05) by default.

    Layers are named `dense_1..dense_L` and `bn_1..bn_L` so that per-layer settings (such as
    a per-layer `m`) and BatchNorm snapshots have stable names.

    # Arguments
        hidden_units: Widths of the hidden layers. The paper uses (4096, 4096); (1024, 1024)
            trains on a CPU.
        num_classes: Number of output units.
        input_shape: Shape of one input sample; flattened by the first layer.
        init_width: Width of the uniform kernel initialisation interval.
        name: Model name.

    # Returns
        An uncompiled `tf.keras.Model` that outputs logits (use
        `SparseCategoricalCrossentropy(from_logits=True)`).
    """
    units = _check_units(hidden_units)
    _check_positive_int(num_classes, "num_classes")
    inputs = tf.keras.Input(shape=tuple(input_shape), name="input")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    widths = units + (num_classes,)
    for i, width in enumerate(widths, start=1):
        with _unclipped_kernels_by_design():
            dense = lq.layers.QuantDense(
                width,
                use_bias=False,
                input_quantizer=None if i == 1 else "ste_sign",
                kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
                kernel_constraint=None,
                kernel_initializer=_uniform(init_width),
                name=f"dense_{i}",
            )
        x = batch_norm(name=f"bn_{i}")(dense(x))
    return tf.keras.Model(inputs, x, name=name)


def float_mlp(
    hidden_units: Sequence[int] = (4096, 4096),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    init_width: float = 0.1,
    name: str = "float_mlp",
) -> tf.keras.Model:
    """The paper's full-precision baseline: the same MLP with float kernels and ReLU.

    As the reference `DNN`: `Dense` without bias, BatchNorm after every layer, ReLU between
    layers, BatchNorm logits. Train it with `MetaplasticAdam(apply_to="kernels")` for the
    paper's Fig. 2f (the metaplastic rule on real-valued weights) or with `m=0` for Adam.

    # Arguments
        hidden_units, num_classes, input_shape, init_width, name: As in `paper_mlp`.
    """
    units = _check_units(hidden_units)
    _check_positive_int(num_classes, "num_classes")
    inputs = tf.keras.Input(shape=tuple(input_shape), name="input")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    widths = units + (num_classes,)
    for i, width in enumerate(widths, start=1):
        x = tf.keras.layers.Dense(
            width, use_bias=False, kernel_initializer=_uniform(init_width), name=f"dense_{i}"
        )(x)
        x = batch_norm(name=f"bn_{i}")(x)
        if i < len(widths):
            x = tf.keras.layers.ReLU(name=f"relu_{i}")(x)
    return tf.keras.Model(inputs, x, name=name)


def binary_convnet(
    filters: Sequence[int] = (32, 64),
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    init_width: float = 0.1,
    name: str = "binary_convnet",
) -> tf.keras.Model:
    """A small binarized convnet (the reference's `ConvBNN`, made LCE-friendly).

    Every convolution after the first is a binary `QuantConv2D` (sign input, sign kernel),
    which Larq Compute Engine turns into `LceBconv2d`. The first convolution takes the
    real-valued image (sign kernel only); the classifier is a binarized `QuantDense`.

    - conv 5x5 stride 2 `filters[0]` -> BN -> sign, then for each further width:
      binary conv 3x3 stride 2 -> BN -> sign; then flatten -> binary dense -> BN logits.
    - Convolutions use `padding="same"` with `pad_values=1.0` for the binary ones, the
      padding LCE computes exactly in its binary kernels; no biases; kernels unclipped.

    # Arguments
        filters: Channels of each convolution.
        num_classes: Number of output units.
        input_shape: Shape of one image, channels last.
        init_width: Width of the uniform kernel initialisation interval.
        name: Model name.
    """
    widths = _check_units(filters, "filters")
    _check_positive_int(num_classes, "num_classes")
    with _unclipped_kernels_by_design():
        return _binary_convnet(widths, num_classes, input_shape, init_width, name)


def _binary_convnet(widths, num_classes, input_shape, init_width, name) -> tf.keras.Model:
    inputs = tf.keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for i, width in enumerate(widths, start=1):
        first = i == 1
        x = lq.layers.QuantConv2D(
            width,
            kernel_size=5 if first else 3,
            strides=2,
            padding="same",
            pad_values=0.0 if first else 1.0,
            use_bias=False,
            input_quantizer=None if first else "ste_sign",
            kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
            kernel_initializer=_uniform(init_width),
            name=f"conv_{i}",
        )(x)
        x = batch_norm(name=f"bn_{i}")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = lq.layers.QuantDense(
        num_classes,
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
        kernel_initializer=_uniform(init_width),
        name=f"dense_{len(widths) + 1}",
    )(x)
    x = batch_norm(name=f"bn_{len(widths) + 1}")(x)
    return tf.keras.Model(inputs, x, name=name)
