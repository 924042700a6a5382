"""The paper's BNNs: architecture choices, serialization, saving."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta import MetaplasticAdam
from larq_meta.optimizers import is_binarized

from checks import assert_config_round_trip, assert_keras_save_load


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


@pytest.mark.parametrize(
    "build",
    [
        lambda: larq_meta.models.paper_mlp((16, 16)),
        lambda: larq_meta.models.float_mlp((16,)),
        lambda: larq_meta.models.binary_convnet((4, 8)),
        lambda: larq_meta.models.paper_convnet((4, 4, 8, 8, 8, 8), (16, 16), input_shape=(16, 16, 1)),
    ],
    ids=["paper_mlp", "float_mlp", "binary_convnet", "paper_convnet"],
)
def test_models_serialize_and_save(build, tmp_path):
    model = build()
    if "convnet" not in model.name:
        # larq pads binary convolutions (pad_values=1) before building them, so a rebuilt
        # convnet records a padded build shape; its weights and outputs are checked below.
        assert_config_round_trip(model)
    apply_to = "kernels" if model.name == "float_mlp" else "binarized"
    model.compile(
        optimizer=MetaplasticAdam(m=1.0, learning_rate=0.01, apply_to=apply_to),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    shape = (8,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(0).random(shape).astype("float32")
    model.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
    assert_keras_save_load(model, x, str(tmp_path))


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
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        larq_meta.models.paper_mlp(**kwargs)
