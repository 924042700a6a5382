"""The paper's networks: every builder through the shared harness (config round trip,
`.keras` save/load, output shape), then the architecture each one must have."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import harness
import larq_meta
from larq_meta import MetaplasticAdam
from larq_meta.models import (
    BF16QuantDense,
    binary_convnet,
    compiled_paper_mlp,
    float_mlp,
    paper_convnet,
    paper_mlp,
)
from larq_meta.optimizers import is_binarized


def _images(shape, n=8, seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def _optimizer(apply_to="binarized"):
    return lambda: MetaplasticAdam(0.01, m=1.0, apply_to=apply_to)


# name: (build_model, input shape, run_model_test keyword arguments)
MODELS = {
    "paper_mlp": (lambda: paper_mlp((16, 16)), (784,), {}),
    "paper_mlp-bfloat16": (lambda: paper_mlp((16, 16), compute_dtype="bfloat16"), (784,), {}),
    "float_mlp": (lambda: float_mlp((16,)), (784,), {"make_optimizer": _optimizer("kernels")}),
    # larq pads binary convolutions (pad_values=1) before building them, so a rebuilt convnet
    # records a padded build shape: its config differs, its weights and outputs do not.
    "binary_convnet": (lambda: binary_convnet((4, 8)), (28, 28, 1), {"check_config_equal": False}),
    "paper_convnet": pytest.param(
        lambda: paper_convnet((4, 4, 8, 8, 8, 8), (16, 16), input_shape=(16, 16, 1)),
        (16, 16, 1),
        {"check_config_equal": False},
        marks=pytest.mark.slow,
    ),
    # Compiled with XLA (the default): the harness trains it one epoch before saving.
    "compiled_paper_mlp": (
        lambda: compiled_paper_mlp((16,), m=0.7, learning_rate=0.003), (784,), {}
    ),
    "compiled_paper_mlp-full_precision": (
        lambda: compiled_paper_mlp((16,), full_precision=True, jit_compile=False), (784,), {}
    ),
}


@pytest.mark.parametrize(
    "build, shape, kwargs",
    list(MODELS.values()),
    ids=list(MODELS),
)
def test_model(build, shape, kwargs, tmp_path):
    x = _images(shape)
    kwargs = {"make_optimizer": _optimizer(), **kwargs}
    harness.run_model_test(
        build, x, tmp_path, expected_output_shape=(8, 10), labels=np.arange(8) % 10, **kwargs
    )


# ------------------------------------------------------------------------------------------------
# compiled_paper_mlp: the one helper for the compiled paper model
# ------------------------------------------------------------------------------------------------


def test_compiled_paper_mlp_is_compiled_with_metaplastic_adam():
    model = compiled_paper_mlp(
        (16,), m=0.7, learning_rate=0.003, epsilon=1e-8, weight_decay=1e-4, num_classes=3,
        input_shape=(8,), name="small",
    )
    optimizer = model.optimizer
    assert isinstance(optimizer, MetaplasticAdam)
    assert optimizer.m == 0.7
    assert optimizer.learning_rate.numpy() == np.float32(0.003)
    assert optimizer.epsilon == 1e-8 and optimizer.coupled_weight_decay == 1e-4
    assert optimizer.apply_to == "binarized"
    assert model.name == "small" and model.output_shape == (None, 3)
    assert model.loss.get_config()["from_logits"] is True
    assert model._jit_compile is True
    assert [type(layer) for layer in model.layers if isinstance(layer, lq.layers.QuantDense)] == [
        lq.layers.QuantDense
    ] * 2


def test_compiled_paper_mlp_options():
    model = compiled_paper_mlp((16,), full_precision=True, jit_compile=False, input_shape=(8,))
    assert model.name == "float_mlp"
    assert model.optimizer.apply_to == "kernels"
    assert model.optimizer.m == 1.35 and model.optimizer.learning_rate.numpy() == np.float32(0.005)
    assert not any(isinstance(l, lq.layers.QuantDense) for l in model.layers)
    assert model._jit_compile is False
    model = compiled_paper_mlp((16,), compute_dtype="bfloat16", input_shape=(8,))
    assert sum(isinstance(l, BF16QuantDense) for l in model.layers) == 2
    with pytest.raises(ValueError, match="compute_dtype"):
        compiled_paper_mlp((16,), full_precision=True, compute_dtype="bfloat16")


# ------------------------------------------------------------------------------------------------
# Architectures
# ------------------------------------------------------------------------------------------------


def test_paper_mlp_matches_the_reference_architecture():
    model = larq_meta.models.paper_mlp((64, 32), num_classes=10)
    dense = [l for l in model.layers if isinstance(l, lq.layers.QuantDense)]
    bns = [l for l in model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
    assert [d.units for d in dense] == [64, 32, 10] and len(bns) == 3
    for i, layer in enumerate(dense):
        assert not layer.use_bias
        assert layer.kernel_constraint is None
        assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign)
        assert layer.kernel_quantizer.clip_value is None  # unclipped straight-through kernel
        assert (layer.input_quantizer is None) == (i == 0)  # real-valued input to layer 1 only
        if i:
            assert layer.input_quantizer.clip_value == 1.0  # |x| <= 1 window between layers
        w = layer.kernel.latent_variable.numpy()
        assert np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.04
    for bn in bns:
        assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
        assert bn.center and bn.scale
    assert model.layers[-1] is bns[-1]  # BatchNorm logits at the output
    assert sum(is_binarized(v) for v in model.trainable_variables) == 3


def test_bfloat16_paper_mlp_predicts_as_float32():
    """Same weights, same forward pass up to float32 summation order."""
    model32 = paper_mlp((16, 16), num_classes=4, input_shape=(12,))
    model16 = paper_mlp((16, 16), num_classes=4, input_shape=(12,), compute_dtype="bfloat16")
    assert sum(isinstance(l, BF16QuantDense) for l in model16.layers) == 3
    model16.set_weights(model32.get_weights())
    x = _images((12,), n=16)
    np.testing.assert_allclose(model16(x, training=False), model32(x, training=False),
                               rtol=1e-5, atol=1e-4)


def test_forward_pass_uses_signs_of_hidden_weights():
    model = larq_meta.models.paper_mlp((8,), num_classes=3, input_shape=(5,))
    x = np.random.default_rng(0).random((4, 5)).astype("float32")
    d1, bn1 = model.get_layer("dense_1"), model.get_layer("bn_1")
    kernel = d1.kernel.latent_variable.numpy()
    h = bn1(x @ np.where(kernel >= 0, 1.0, -1.0), training=False).numpy()
    signs = np.where(h >= 0, 1.0, -1.0)
    kernel2 = model.get_layer("dense_2").kernel.latent_variable.numpy()
    expected = model.get_layer("bn_2")(signs @ np.where(kernel2 >= 0, 1.0, -1.0), training=False)
    np.testing.assert_allclose(model(x, training=False), expected, rtol=1e-5, atol=1e-5)


def test_binary_convnet_has_binary_convolutions():
    model = larq_meta.models.binary_convnet((4, 8, 8))
    convs = [l for l in model.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert len(convs) == 3 and convs[0].input_quantizer is None
    assert all(c.input_quantizer is not None and c.pad_values == 1.0 for c in convs[1:])


def test_paper_convnet_is_the_reference_layout():
    model = larq_meta.models.paper_convnet(input_shape=(32, 32, 3))
    convs = [l for l in model.layers if isinstance(l, lq.layers.QuantConv2D)]
    dense = [l for l in model.layers if isinstance(l, lq.layers.QuantDense)]
    assert [c.filters for c in convs] == [128, 128, 256, 256, 512, 512]
    assert [d.units for d in dense] == [2048, 2048, 10]
    assert convs[0].input_quantizer is None and convs[0].kernel_size == (3, 3)
    assert all(l.input_quantizer is not None for l in convs[1:] + dense)
    assert [c.padding for c in convs] == ["same"] * 5 + ["valid"]
    assert all(not l.use_bias and l.kernel_quantizer.clip_value is None for l in convs + dense)
    pools = [l.name for l in model.layers if isinstance(l, tf.keras.layers.MaxPooling2D)]
    assert pools == ["pool_2", "pool_4", "pool_6"]
    # the reference's flatten size: 512 channels x 3 x 3 for a 32x32 image
    assert model.get_layer("flatten").output_shape == (None, 512 * 9)
    drops = [l.rate for l in model.layers if isinstance(l, tf.keras.layers.Dropout)]
    assert drops == [0.5, 0.5]
    assert model.output_shape == (None, 10)
    # distinct initial kernels (one shared initializer instance would repeat its values)
    a, b = (model.get_layer(n).kernel.latent_variable.numpy() for n in ("dense_7", "dense_8"))
    assert not np.array_equal(a[:, :100], b[:, :100])


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": (8,) * 5}, "6 convolution widths"),
        ({"channels": (8, 8, 8, 8, 8, 0)}, "channels"),
        ({"dense_units": ()}, "dense_units"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_shape": (12, 12, 1)}, "input_shape"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"init_width": -1}, "init_width"),
    ],
)
def test_bad_paper_convnet_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        larq_meta.models.paper_convnet(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_units": ()}, "hidden_units"),
        ({"hidden_units": (0,)}, "hidden_units"),
        ({"hidden_units": (8.5,)}, "hidden_units"),
        ({"num_classes": 0}, "num_classes"),
        ({"init_width": 0}, "init_width"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        larq_meta.models.paper_mlp(**kwargs)
