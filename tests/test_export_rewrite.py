"""The QuantDense -> 1x1 QuantConv2D rewrite and the layer classification (Keras only, no
conversion: fast)."""

import pytest

pytest.importorskip("larq_compute_engine")

from export_models import (  # noqa: E402 - imports larq_meta's modules before larq
    BINARY,
    flat_layers,
    nested_model,
    no_bn_mlp,
    randomize_batchnorm,
    sequential_with_bias,
)
from larq_meta import models  # noqa: E402
from larq_meta.export import ExportError, dense_to_conv1x1, is_binarized  # noqa: E402
from larq_meta.export.layers import inexact_reason, is_lce_binary_candidate  # noqa: E402

import larq as lq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.mark.parametrize(
    "build, rewritten",
    [
        (lambda: randomize_batchnorm(models.paper_mlp((8,), input_shape=(6, 5))), 1),
        (lambda: randomize_batchnorm(models.paper_mlp((16, 12), input_shape=(30,))), 2),
        (lambda: randomize_batchnorm(models.paper_mlp((33, 7, 21), 3, input_shape=(17,))), 3),
        (lambda: no_bn_mlp((9,)), 0),
        (lambda: no_bn_mlp((24, 13, 5)), 2),
        (lambda: randomize_batchnorm(sequential_with_bias()), 2),
        (nested_model, 2),
        (lambda: randomize_batchnorm(models.binary_convnet((4, 8), input_shape=(12, 12, 1))), 1),
        (lambda: randomize_batchnorm(models.paper_convnet(
            (4, 4, 8, 8, 8, 8), (16, 12), input_shape=(16, 16, 1))), 3),
    ],
)
def test_rewrite_is_exact(build, rewritten):
    model = build()
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(64,) + model.input_shape[1:]).astype("f4")
    expected = model(x, training=False).numpy()
    if rewritten == 0:
        with pytest.raises(ExportError, match="no QuantDense layer to rewrite"):
            dense_to_conv1x1(model)
        return
    new = dense_to_conv1x1(model)
    got = new(x, training=False).numpy()
    np.testing.assert_array_equal(got, expected)
    layers = list(flat_layers(new))
    convs = [c for c in layers if isinstance(c, lq.layers.QuantConv2D) and c.kernel_size == (1, 1)]
    assert len(convs) == rewritten
    dense = [d for d in layers if isinstance(d, lq.layers.QuantDense)]
    assert all(d.input_quantizer is None for d in dense)  # only real-input dense layers remain
    # The original is untouched.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(x, training=False).numpy(), expected)


def test_rewrite_refuses_what_it_cannot_do():
    mlp = models.paper_mlp((8, 8), input_shape=(10,))
    with pytest.raises(ExportError, match="'dense_1'.*real-valued"):
        dense_to_conv1x1(mlp, ["dense_1"])
    with pytest.raises(ExportError, match="'nope'.*does not exist"):
        dense_to_conv1x1(mlp, ["nope"])
    with pytest.raises(ExportError, match="'bn_1'.*not a QuantDense"):
        dense_to_conv1x1(mlp, ["bn_1"])
    with pytest.raises(ExportError, match="True, False or a list"):
        dense_to_conv1x1(mlp, "dense_2")
    x0 = tf.keras.Input((10,))
    x = lq.layers.QuantDense(
        6, input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign", name="mag"
    )(x0)
    x = lq.layers.QuantDense(
        4, input_quantizer="ste_tern", kernel_quantizer="ste_sign", name="tern"
    )(x)
    x = lq.layers.QuantDense(3, name="rank3", **BINARY)(tf.keras.layers.Reshape((2, 2))(x))
    odd = tf.keras.Model(x0, x)
    with pytest.raises(ExportError, match="'mag'.*quantizer MagnitudeAwareSign is not a sign"):
        dense_to_conv1x1(odd, ["mag"])
    with pytest.raises(ExportError, match="'tern'.*input quantizer SteTern is not a sign"):
        dense_to_conv1x1(odd, ["tern"])
    with pytest.raises(ExportError, match=r"'rank3'.*rank \[3\]; only \(batch, features\)"):
        dense_to_conv1x1(odd, ["rank3"])
    with pytest.raises(ExportError, match="no QuantDense layer to rewrite"):
        dense_to_conv1x1(odd)  # True: every rewritable one; here none

    class Subclassed(tf.keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = lq.layers.QuantDense(3, **BINARY)

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(tf.zeros((1, 5)))
    with pytest.raises(ExportError, match="'subclassed'.*rewrite_dense=False"):
        dense_to_conv1x1(sub)


@pytest.mark.parametrize(
    "layer, binarized, lce_binary, exact",
    [
        (lambda: lq.layers.QuantDense(4, **BINARY), True, True, True),
        (lambda: lq.layers.QuantConv2D(4, 3, **BINARY), True, True, True),
        (lambda: lq.layers.QuantConv2D(4, 3, input_quantizer="approx_sign",
                                       kernel_quantizer="swish_sign"), True, True, True),
        (lambda: lq.layers.QuantDepthwiseConv2D(
            3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign"), True, False, True),
        (lambda: lq.layers.QuantSeparableConv2D(
            4, 3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
            pointwise_quantizer="ste_sign"), True, False, True),
        (lambda: lq.layers.QuantSeparableConv2D(  # a float pointwise kernel: not binarized
            4, 3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign"), False, False, True),
        (lambda: lq.layers.QuantLocallyConnected2D(4, 2, **BINARY), True, False, True),
        (lambda: lq.layers.QuantConv1D(4, 3, **BINARY), True, False, True),
        (lambda: lq.layers.QuantDense(4, kernel_quantizer="ste_sign"), False, False, True),
        (lambda: lq.layers.QuantDense(4, input_quantizer="ste_tern",
                                      kernel_quantizer="ste_tern"), False, False, False),
        (lambda: lq.layers.QuantDense(4, input_quantizer="ste_heaviside",
                                      kernel_quantizer="ste_sign"), True, False, False),
        (lambda: lq.layers.QuantDense(4, input_quantizer="dorefa_quantizer",
                                      kernel_quantizer="ste_sign"), False, False, False),
        (lambda: tf.keras.layers.Dense(4), False, False, True),
    ],
)
def test_layer_classification(layer, binarized, lce_binary, exact):
    """Precision-1 quantizers make any larq layer type binarized (issue 16, point 10); only
    sign QuantConv2D / QuantDense become LCE binary ops; non-sign input quantizers are not run
    exactly by LCE."""
    layer = layer()
    assert is_binarized(layer) is binarized
    assert is_lce_binary_candidate(layer) is lce_binary
    reason = inexact_reason(layer)
    assert (reason is None) is exact
    if not exact:
        assert type(layer.input_quantizer).__name__ in reason
