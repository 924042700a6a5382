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
    ],
    ids=["paper_mlp", "float_mlp", "binary_convnet"],
)
def test_models_serialize_and_save(build, tmp_path):
    model = build()
    if model.name != "binary_convnet":
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
