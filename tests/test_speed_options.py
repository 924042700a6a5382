"""The bfloat16 compute option of `paper_mlp` (`compute_dtype="bfloat16"`, `BF16QuantDense`).

Fast checks (small widths): the forward pass equals the float32 model's, gradients agree to
bfloat16 rounding, everything stored stays float32, and the option serializes and saves.
"""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta import MetaplasticAdam
from larq_meta.models import BF16QuantDense, paper_mlp
from larq_meta.optimizers import is_binarized

from checks import assert_config_round_trip, assert_keras_save_load

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pair(hidden=(64, 48), input_shape=(20,), num_classes=10, seed=0):
    tf.keras.utils.set_random_seed(seed)
    f32 = paper_mlp(hidden, num_classes=num_classes, input_shape=input_shape)
    tf.keras.utils.set_random_seed(seed)
    b16 = paper_mlp(hidden, num_classes=num_classes, input_shape=input_shape,
                    compute_dtype="bfloat16")
    return f32, b16


def _data(n=32, features=20, seed=0):
    rng = np.random.default_rng(seed)
    # 8-bit images scaled to [0, 1], as make_dataset produces them.
    x = (rng.integers(0, 256, (n, features)) / 255.0).astype("float32")
    return x, (np.arange(n) % 10).astype("int64")


def _gradients(model, x, y, jit):
    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return [g.numpy() for g in step()]


def test_same_architecture_names_and_float32_state():
    f32, b16 = _pair()
    assert [l.name for l in b16.layers] == [l.name for l in f32.layers]
    dense = [l for l in b16.layers if isinstance(l, lq.layers.QuantDense)]
    assert len(dense) == 3 and all(isinstance(l, BF16QuantDense) for l in dense)
    assert dense[0].input_quantizer is None and dense[1].input_quantizer.clip_value == 1.0
    assert all(l.kernel_quantizer.clip_value is None for l in dense)
    assert all(v.dtype == tf.float32 for v in b16.variables)  # hidden weights, BatchNorm
    assert sum(is_binarized(v) for v in b16.trainable_variables) == 3  # metaplastic targets
    for a, b in zip(f32.get_weights(), b16.get_weights()):
        np.testing.assert_array_equal(a, b)  # same initialisation, interchangeable weights


@pytest.mark.parametrize("training", [True, False])
def test_forward_pass_equals_float32(training):
    f32, b16 = _pair()
    x, _ = _data()
    # Eager (XlaDotV2 compiled on demand) and under XLA.
    np.testing.assert_allclose(b16(x, training=training), f32(x, training=training),
                               rtol=0, atol=1e-5)
    jit = tf.function(lambda t: b16(t, training=training), jit_compile=True)
    np.testing.assert_allclose(jit(x), f32(x, training=training), rtol=0, atol=1e-5)


def test_binary_layer_output_is_exact_integer_sum():
    layer = BF16QuantDense(300, input_quantizer="ste_sign",
                           kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
                           use_bias=False)
    x = np.random.default_rng(1).standard_normal((8, 700)).astype("float32")
    y = layer(x).numpy()
    expected = np.sign(np.sign(x) + 0.1) @ np.sign(np.sign(layer.kernel.latent_variable.numpy()) + 0.1)
    # Sums of 700 products ±1 exceed bfloat16's exact integer range: still exact in float32.
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("jit", [True, False])
def test_gradients_match_float32_up_to_bfloat16_rounding(jit):
    f32, b16 = _pair()
    x, y = _data()
    expected = _gradients(f32, x, y, jit=True)
    actual = _gradients(b16, x, y, jit=jit)
    for e, a, v in zip(expected, actual, b16.trainable_variables):
        assert a.dtype == np.float32, v.name
        scale = np.abs(e).max()
        assert scale > 0, v.name
        # bfloat16 has an 8-bit mantissa (relative rounding 2^-9 ~ 0.2%) per product operand.
        assert np.abs(a - e).max() <= 0.02 * scale, v.name


def test_straight_through_masks_follow_the_quantizers():
    layer = BF16QuantDense(4, input_quantizer=lq.quantizers.SteSign(clip_value=0.5),
                           kernel_quantizer=lq.quantizers.SteSign(clip_value=0.03),
                           use_bias=False, kernel_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05))
    ref = lq.layers.QuantDense(4, input_quantizer=lq.quantizers.SteSign(clip_value=0.5),
                               kernel_quantizer=lq.quantizers.SteSign(clip_value=0.03),
                               use_bias=False)
    x = tf.constant(np.linspace(-1, 1, 24, dtype="float32").reshape(3, 8))
    layer.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(layer.get_weights())
    grads = []
    for lyr in (layer, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.reduce_sum(lyr(x) * tf.constant([1.0, -2.0, 0.5, 3.0]))
        grads.append(tape.gradient(out, [x, lyr.kernel.latent_variable]))
    for a, e in zip(*grads):
        # dy is a small integer combination: exact in bfloat16, so gradients are equal.
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-6)
        assert np.count_nonzero(e) < np.size(e)  # the masks do cut something


def test_unsupported_quantizer_is_rejected():
    with pytest.raises(ValueError, match="SteSign"):
        BF16QuantDense(4, input_quantizer="approx_sign", kernel_quantizer="ste_sign")
    with pytest.raises(ValueError, match="compute_dtype"):
        paper_mlp((8,), compute_dtype="float16")


def test_layer_config_round_trip():
    layer = BF16QuantDense(8, input_quantizer="ste_sign",
                           kernel_quantizer=lq.quantizers.SteSign(clip_value=None), use_bias=False)
    rebuilt = assert_config_round_trip(layer)
    assert isinstance(rebuilt, BF16QuantDense)
    assert tf.keras.utils.get_registered_name(BF16QuantDense) == "larq_meta>BF16QuantDense"


def test_trains_with_metaplastic_adam_and_saves(tmp_path):
    _, model = _pair(hidden=(32, 32))
    model.compile(optimizer=MetaplasticAdam(m=1.35, learning_rate=0.005), loss=LOSS,
                  jit_compile=True)
    x, y = _data(64)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    slots = [v for v in model.optimizer.variables() if "iteration" not in v.name]
    assert len(slots) == 2 * len(model.trainable_variables)
    assert all(v.dtype == tf.float32 for v in slots)  # Adam moments stay float32
    loaded = assert_keras_save_load(model, x, tmp_path)
    assert isinstance(loaded.get_layer("dense_2"), BF16QuantDense)


def test_dot_dimension_numbers_encoding():
    xla_data_pb2 = pytest.importorskip("tensorflow.compiler.xla.xla_data_pb2")
    for lhs, rhs in ((1, 0), (1, 1), (0, 0)):
        dn = xla_data_pb2.DotDimensionNumbers()
        dn.lhs_contracting_dimensions.append(lhs)
        dn.rhs_contracting_dimensions.append(rhs)
        assert dn.SerializeToString() == bytes([0x0A, 1, lhs, 0x12, 1, rhs])
