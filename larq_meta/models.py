"""The binarized networks of Laborieux et al. (2021), built from larq layers.

!!! example
    ```python
    model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
    model.compile(optimizer=larq_meta.MetaplasticAdam(0.005, m=1.35),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # or in one call (compiled with XLA; see `compiled_paper_mlp`):
    model = larq_meta.models.compiled_paper_mlp((1024, 1024), m=1.35, learning_rate=0.005)
    ```
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import larq as lq
import tensorflow as tf

__all__ = [
    "paper_mlp",
    "float_mlp",
    "compiled_paper_mlp",
    "binary_convnet",
    "paper_convnet",
    "batch_norm",
    "BF16QuantDense",
]

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
def unclipped_kernels_by_design() -> Iterator[None]:
    """Silence larq's "starved weights" warning while building layers with unclipped binary
    kernels: the warning is for clipped straight-through kernels; ours use
    `SteSign(clip_value=None)`, whose gradient never vanishes."""
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


def batch_norm(
    name: str | None = None, synchronized: bool = False
) -> tf.keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's defaults (momentum 0.1 -> Keras 0.9, epsilon 1e-5).

    With `synchronized=True` the layer is Keras' synchronized BatchNorm
    (`BatchNormalization(synchronized=True)`): under a `tf.distribute` strategy, training
    batches are normalized with the statistics of the global batch (an all-reduce over the
    replicas), as on one device; outside a strategy, and at inference, it is plain BatchNorm.
    It is still a `BatchNormalization` layer, so snapshots, the evaluation protocols and
    `recalibrate_batchnorm` treat it as any other. (tf-keras does not write `synchronized`
    into the layer config: a saved and reloaded model has plain BatchNorm, which infers the
    same.)
    """
    return tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=bool(synchronized), name=name
    )


# -- bfloat16 binary matmuls -----------------------------------------------------------------------

COMPUTE_DTYPES = ("float32", "bfloat16")


def _dot_f32(lhs: tf.Tensor, rhs: tf.Tensor, lhs_contracting: int, rhs_contracting: int):
    """XLA `DotGeneral` of two 2-D tensors with a float32 result (float32 accumulation).

    `tf.matmul` on bfloat16 returns bfloat16 (a rounded result) and under XLA on CPU is
    computed in float32 anyway; `XlaDotV2` with `preferred_element_type=float32` keeps the
    bfloat16 operands and runs XLA:CPU's fast bfloat16 kernels. Outside `jit_compile` the op
    is compiled on demand, so it also works eagerly (slowly).
    """
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops

    # Serialized xla.DotDimensionNumbers{lhs_contracting_dimensions: [l],
    # rhs_contracting_dimensions: [r]} (fields 1 and 2, packed varints).
    dimension_numbers = bytes([0x0A, 1, lhs_contracting, 0x12, 1, rhs_contracting])
    return gen_xla_ops.xla_dot_v2(
        lhs, rhs, dimension_numbers=dimension_numbers, precision_config=b"",
        preferred_element_type=tf.float32,
    )


def _transposed(x: tf.Tensor) -> tf.Tensor:
    """`x.T` for a 2-D tensor, as a gather. XLA folds a plain transpose into the dot's
    dimension numbers, and XLA:CPU upcasts a bfloat16 dot that contracts the lhs' leading
    dimension to float32; a gather keeps the operand materialized and the dot in bfloat16."""
    shape = tf.shape(x)
    rows, cols = shape[0], shape[1]
    order = tf.reshape(tf.transpose(tf.reshape(tf.range(rows * cols), [rows, cols])), [-1])
    return tf.reshape(tf.gather(tf.reshape(x, [-1]), order), [cols, rows])


def _binary_sign(x: tf.Tensor) -> tf.Tensor:
    """larq's `sign` (`sign(0) = +1`), as float32."""
    return lq.math.sign(x)


def _ste_mask(x: tf.Tensor, clip_value: float | None, dy: tf.Tensor) -> tf.Tensor:
    """larq's straight-through gradient: `dy` where `|x| <= clip_value` (all if None)."""
    if clip_value is None:
        return dy
    return tf.where(tf.abs(x) <= clip_value, dy, tf.zeros_like(dy))


def _bf16_binary_matmul(binary_input: bool, input_clip: float | None, kernel_clip: float | None):
    """`ste_sign(x) @ ste_sign(W)` (or `x @ ste_sign(W)` for a real-valued input) with bfloat16
    operands. Forward: exact (±1 products summed in float32). Backward: `dy` rounded to
    bfloat16, products summed in float32; larq's straight-through masks."""
    bf16 = tf.bfloat16

    @tf.custom_gradient
    def matmul(x, kernel):
        if binary_input:
            x_sign = tf.cast(_binary_sign(x), bf16)
            w_sign = tf.cast(_binary_sign(kernel), bf16)
            y = _dot_f32(x_sign, w_sign, 1, 0)
        else:
            # A real-valued input is not exact in bfloat16: this forward stays float32.
            x_sign = w_sign = None
            y = tf.matmul(x, _binary_sign(kernel))

        def grad(dy):
            dy16 = tf.cast(dy, bf16)
            x16 = x_sign if binary_input else tf.cast(x, bf16)
            dw = _dot_f32(_transposed(x16), dy16, 1, 0)
            if binary_input:
                dx = _ste_mask(x, input_clip, _dot_f32(dy16, w_sign, 1, 1))
            else:  # unused by the first layer of a model; XLA prunes it
                dx = tf.matmul(dy, _binary_sign(kernel), transpose_b=True)
            return dx, _ste_mask(kernel, kernel_clip, dw)

        return y, grad

    return matmul


@tf.keras.utils.register_keras_serializable(package="larq_meta")
class BF16QuantDense(lq.layers.QuantDense):
    """A binarized `QuantDense` whose matrix products run with bfloat16 operands.

    Same weights, config and results as `lq.layers.QuantDense` with `SteSign` quantizers
    (or no input quantizer), but `sign(x) @ sign(W)` is computed from bfloat16 copies of the
    signs, which are exact, with float32 accumulation and output: the forward pass equals the
    float32 layer's up to float32 summation order. A real-valued input (no input quantizer)
    keeps a float32 forward product. The backward products round the incoming gradient to
    bfloat16 (8-bit mantissa) and sum in float32. Hidden weights, their gradients and the
    layer's output stay float32, so optimizer state and BatchNorm are unaffected.

    It pays under XLA: compile with `model.compile(..., jit_compile=True)`. Without XLA the
    products are compiled one by one on demand and are slower than float32.

    Only `SteSign` quantizers (any `clip_value`) are supported, as `paper_mlp` uses.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for role, quantizer, optional in (
            ("input_quantizer", self.input_quantizer, True),
            ("kernel_quantizer", self.kernel_quantizer, False),
        ):
            if quantizer is None and optional:
                continue
            if not isinstance(quantizer, lq.quantizers.SteSign):
                raise ValueError(
                    f"BF16QuantDense supports `SteSign` quantizers only; `{role}` is "
                    f"{quantizer!r}. Use `lq.layers.QuantDense` for other quantizers."
                )

    def call(self, inputs):
        matmul = _bf16_binary_matmul(
            binary_input=self.input_quantizer is not None,
            input_clip=getattr(self.input_quantizer, "clip_value", None),
            kernel_clip=self.kernel_quantizer.clip_value,
        )
        outputs = matmul(tf.cast(inputs, tf.float32), self.kernel.latent_variable)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def paper_mlp(
    hidden_units: Sequence[int] = (4096, 4096),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    init_width: float = 0.1,
    name: str = "paper_mlp",
    compute_dtype: str = "float32",
    synchronized_bn: bool = False,
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

    With `compute_dtype="bfloat16"` the dense layers are `BF16QuantDense`: their binary
    matrix products take bfloat16 copies of the signs (exact: ±1) and sum in float32, so the
    forward pass is the float32 one (up to summation order; the first layer's product with
    the real-valued input stays float32); the backward products round the gradient to
    bfloat16. Hidden weights, gradients, optimizer state and BatchNorm stay float32 and the
    weights are interchangeable with a float32 model's (`set_weights`). Compile with
    `jit_compile=True`: XLA:CPU runs these bfloat16 products about twice as fast as float32
    ones (see `docs/speed.md`); without XLA the option is slower.

    # Arguments
        hidden_units: Widths of the hidden layers. The paper uses (4096, 4096); (1024, 1024)
            trains on a CPU.
        num_classes: Number of output units.
        input_shape: Shape of one input sample; flattened by the first layer.
        init_width: Width of the uniform kernel initialisation interval.
        name: Model name.
        compute_dtype: `"float32"` (default) or `"bfloat16"` for the binary matrix products
            (see above).
        synchronized_bn: Synchronized BatchNorm (see `batch_norm`): under a `tf.distribute`
            strategy every replica normalizes with the global batch's statistics, so several
            devices or workers train the single-device model (`docs/how-to/distribute.md`).

    # Returns
        An uncompiled `tf.keras.Model` that outputs logits (use
        `SparseCategoricalCrossentropy(from_logits=True)`).
    """
    units = _check_units(hidden_units)
    _check_positive_int(num_classes, "num_classes")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"`compute_dtype` must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}.")
    dense_class = BF16QuantDense if compute_dtype == "bfloat16" else lq.layers.QuantDense
    inputs = tf.keras.Input(shape=tuple(input_shape), name="input")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    widths = units + (num_classes,)
    for i, width in enumerate(widths, start=1):
        with unclipped_kernels_by_design():
            dense = dense_class(
                width,
                use_bias=False,
                input_quantizer=None if i == 1 else "ste_sign",
                kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
                kernel_constraint=None,
                kernel_initializer=_uniform(init_width),
                name=f"dense_{i}",
            )
        x = batch_norm(name=f"bn_{i}", synchronized=synchronized_bn)(dense(x))
    return tf.keras.Model(inputs, x, name=name)


def compiled_paper_mlp(
    hidden_units: Sequence[int] = (1024, 1024),
    *,
    m=1.35,
    learning_rate=0.005,
    epsilon: float = 1e-7,
    weight_decay: float = 0.0,
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    compute_dtype: str = "float32",
    full_precision: bool = False,
    jit_compile: bool = True,
    name: str | None = None,
    synchronized_bn: bool = False,
) -> tf.keras.Model:
    """`paper_mlp` compiled with `MetaplasticAdam` and sparse cross-entropy on logits: the
    model of every continual-learning experiment in the package (command line, tuner,
    benchmarks and tests build it here).

    !!! example
        ```python
        model = larq_meta.models.compiled_paper_mlp((1024, 1024), m=1.35)
        model.fit(x_train, y_train, epochs=1, batch_size=100)
        ```

    It is the same as
    ```python
    model = paper_mlp(hidden_units, num_classes, input_shape, compute_dtype=compute_dtype)
    model.compile(
        optimizer=MetaplasticAdam(learning_rate, m=m, epsilon=epsilon, weight_decay=weight_decay),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    ```

    # Arguments
        hidden_units, num_classes, input_shape, compute_dtype, synchronized_bn: As in
            `paper_mlp`. Under a `tf.distribute` strategy, call this inside
            `strategy.scope()`.
        m, learning_rate, epsilon, weight_decay: As in `MetaplasticAdam`. The defaults are
            the package's CPU-sized experiments' (m 1.35, learning rate 0.005, Keras'
            epsilon); the paper's full-scale runs use `epsilon=1e-8, weight_decay=1e-7`.
        full_precision: Build `float_mlp` instead (ReLU, float kernels) and apply the rule to
            every kernel (`MetaplasticAdam(apply_to="kernels")`), the paper's Fig. 2f
            baseline. Needs `compute_dtype="float32"`.
        jit_compile: Compile the training step with XLA (fuses the sign and straight-through
            ops with the optimizer's elementwise work; about 2x faster on a CPU).
        name: Model name (default: `paper_mlp` or `float_mlp`).

    # Returns
        A compiled `tf.keras.Model` that outputs logits.
    """
    from larq_meta.optimizers import MetaplasticAdam

    kwargs = {
        "num_classes": num_classes, "input_shape": input_shape, "synchronized_bn": synchronized_bn
    }
    if name is not None:
        kwargs["name"] = name
    if full_precision:
        if compute_dtype != "float32":
            raise ValueError(
                f"`compute_dtype={compute_dtype!r}` applies to binarized models only; "
                "`full_precision=True` builds a float32 MLP."
            )
        model = float_mlp(hidden_units, **kwargs)
    else:
        model = paper_mlp(hidden_units, compute_dtype=compute_dtype, **kwargs)
    model.compile(
        optimizer=MetaplasticAdam(
            learning_rate,
            m=m,
            epsilon=epsilon,
            weight_decay=weight_decay,
            apply_to="kernels" if full_precision else "binarized",
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def float_mlp(
    hidden_units: Sequence[int] = (4096, 4096),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    init_width: float = 0.1,
    name: str = "float_mlp",
    synchronized_bn: bool = False,
) -> tf.keras.Model:
    """The paper's full-precision baseline: the same MLP with float kernels and ReLU.

    As the reference `DNN`: `Dense` without bias, BatchNorm after every layer, ReLU between
    layers, BatchNorm logits. Train it with `MetaplasticAdam(apply_to="kernels")` for the
    paper's Fig. 2f (the metaplastic rule on real-valued weights) or with `m=0` for Adam.

    # Arguments
        hidden_units, num_classes, input_shape, init_width, name, synchronized_bn: As in
            `paper_mlp`.
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
        x = batch_norm(name=f"bn_{i}", synchronized=synchronized_bn)(x)
        if i < len(widths):
            x = tf.keras.layers.ReLU(name=f"relu_{i}")(x)
    return tf.keras.Model(inputs, x, name=name)


def binary_convnet(
    filters: Sequence[int] = (32, 64),
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    init_width: float = 0.1,
    name: str = "binary_convnet",
    synchronized_bn: bool = False,
) -> tf.keras.Model:
    """A small binarized convnet for MNIST-sized images and LCE export (see also `paper_convnet`).

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
        synchronized_bn: Synchronized BatchNorm, as in `paper_mlp`.
    """
    widths = _check_units(filters, "filters")
    _check_positive_int(num_classes, "num_classes")
    with unclipped_kernels_by_design():
        return _binary_convnet(widths, num_classes, input_shape, init_width, name, synchronized_bn)


def _binary_convnet(
    widths, num_classes, input_shape, init_width, name, synchronized_bn=False
) -> tf.keras.Model:
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
        x = batch_norm(name=f"bn_{i}", synchronized=synchronized_bn)(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = lq.layers.QuantDense(
        num_classes,
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
        kernel_initializer=_uniform(init_width),
        name=f"dense_{len(widths) + 1}",
    )(x)
    x = batch_norm(name=f"bn_{len(widths) + 1}", synchronized=synchronized_bn)(x)
    return tf.keras.Model(inputs, x, name=name)


def paper_convnet(
    channels: Sequence[int] = (128, 128, 256, 256, 512, 512),
    dense_units: Sequence[int] = (2048, 2048),
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    dropout: float = 0.5,
    init_width: float = 0.1,
    name: str = "paper_convnet",
    synchronized_bn: bool = False,
) -> tf.keras.Model:
    """The binarized VGG-style convnet of the paper's CIFAR-10 stream experiment (Fig. 4b).

    Layer by layer, as the reference implementation (`ConvBNN` in its stream CIFAR-10
    `model_utils.py`), with six 3x3 convolutions and a three-layer classifier:

    - conv `channels[0]` (real-valued input, sign kernel) -> BN, then for `channels[1:]`:
      binary conv (sign input, sign kernel) [-> 2x2 max-pool after the 2nd, 4th and 6th]
      -> BN; the 6th convolution has no padding ("valid"), the others keep the size;
    - flatten -> for each of `dense_units`: binary dense -> BN -> dropout; binary dense
      `num_classes` -> BN (logits).

    No biases, kernels unclipped (`SteSign(clip_value=None)`), sign activations with the
    straight-through gradient masked at |x| > 1 (the reference's hardtanh), PyTorch's
    BatchNorm defaults. One deliberate difference: binary convolutions pad with +1
    (`pad_values=1.0`), which Larq Compute Engine computes exactly in `LceBconv2d`, where
    the reference pads the sign map with 0. Every layer after the first is binary, so with
    `larq_meta.export.to_lce` every one becomes an LCE binary operator.

    !!! example
        ```python
        model = larq_meta.models.paper_convnet()                 # CIFAR-10 shape, as the paper
        small = larq_meta.models.paper_convnet(                  # MNIST-sized, 4x narrower
            channels=(32, 32, 64, 64, 128, 128), dense_units=(512, 512), input_shape=(28, 28, 1))
        ```

    # Arguments
        channels: Six convolution widths.
        dense_units: Hidden widths of the classifier.
        num_classes: Number of output units.
        input_shape: Shape of one image, channels last (at least 16x16 for the three pools
            and the valid convolution).
        dropout: Dropout rate after each hidden dense layer (the reference: 0.5), in [0, 1).
        init_width: Width of the uniform kernel initialisation interval.
        name: Model name.
        synchronized_bn: Synchronized BatchNorm, as in `paper_mlp`.

    # References
        - Laborieux et al., Synaptic metaplasticity in binarized neural networks, Nat.
          Commun. 12, 2549 (2021), Fig. 4b.
    """
    widths = _check_units(channels, "channels")
    if len(widths) != 6:
        raise ValueError(f"`channels` must give 6 convolution widths, got {len(widths)}.")
    units = _check_units(dense_units, "dense_units")
    _check_positive_int(num_classes, "num_classes")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or min(shape[:2]) < 16:
        raise ValueError(f"`input_shape` must be (height, width, channels) with height and width "
                         f">= 16, got {input_shape!r}.")
    _uniform(init_width)  # checks init_width

    def binary() -> dict:  # a fresh initializer per layer: one instance repeats its values
        return {
            "use_bias": False,
            "kernel_quantizer": lq.quantizers.SteSign(clip_value=None),
            "kernel_initializer": _uniform(init_width),
        }

    with unclipped_kernels_by_design():
        inputs = tf.keras.Input(shape=shape, name="input")
        x = inputs
        for i, width in enumerate(widths, start=1):
            first, last = i == 1, i == len(widths)
            x = lq.layers.QuantConv2D(
                width, 3, padding="valid" if last else "same", pad_values=0.0 if first else 1.0,
                input_quantizer=None if first else "ste_sign", name=f"conv_{i}", **binary(),
            )(x)
            if i % 2 == 0:
                x = tf.keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            x = batch_norm(name=f"bn_{i}", synchronized=synchronized_bn)(x)
        x = tf.keras.layers.Flatten(name="flatten")(x)
        for k, width in enumerate((*units, num_classes), start=len(widths) + 1):
            x = lq.layers.QuantDense(
                width, input_quantizer="ste_sign", name=f"dense_{k}", **binary()
            )(x)
            x = batch_norm(name=f"bn_{k}", synchronized=synchronized_bn)(x)
            if k < len(widths) + len(units) + 1 and dropout:
                x = tf.keras.layers.Dropout(dropout, name=f"dropout_{k}")(x)
        return tf.keras.Model(inputs, x, name=name)
