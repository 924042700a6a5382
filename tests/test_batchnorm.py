"""recalibrate_batchnorm against a numpy computation of each layer's inference-mode inputs."""

import numpy as np
import pytest
import tensorflow as tf

from larq_meta.batchnorm import recalibrate_batchnorm, snapshot_batchnorm


def two_bn_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((6,))
    h = tf.keras.layers.Dense(5, use_bias=False, name="d1")(inputs)
    h = tf.keras.layers.BatchNormalization(name="bn_1")(h)
    h = tf.keras.layers.Activation("tanh")(h)
    h = tf.keras.layers.Dense(3, use_bias=False, name="d2")(h)
    outputs = tf.keras.layers.BatchNormalization(name="bn_2")(h)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in ("bn_1", "bn_2"):  # non-trivial affine parameters and stale statistics
        bn = model.get_layer(layer)
        n = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2, n), rng.normal(size=n), rng.normal(size=n) * 5,
                        rng.uniform(0.1, 10, n)])
    return model


def numpy_stats(model, x):
    """Each BN layer's input mean and variance, earlier layers using the new statistics."""
    w1, w2 = model.get_layer("d1").kernel.numpy(), model.get_layer("d2").kernel.numpy()
    g1, b1 = model.get_layer("bn_1").gamma.numpy(), model.get_layer("bn_1").beta.numpy()
    eps = model.get_layer("bn_1").epsilon
    a1 = x.astype(np.float64) @ w1
    m1, v1 = a1.mean(0), a1.var(0)
    a2 = np.tanh(g1 * (a1 - m1) / np.sqrt(v1 + eps) + b1) @ w2
    return {"bn_1": (m1, v1), "bn_2": (a2.mean(0), a2.var(0))}


def test_statistics_match_numpy_layer_by_layer_and_affine_is_untouched():
    model = two_bn_model()
    x = np.random.default_rng(1).normal(size=(300, 6)).astype("float32") * 3 + 1
    before = snapshot_batchnorm(model)
    counts = recalibrate_batchnorm(model, (x, np.zeros(300)), batch_size=64)
    assert counts == {"bn_1": 300, "bn_2": 300}
    for name, (mean, var) in numpy_stats(model, x).items():
        bn = model.get_layer(name)
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(bn.gamma.numpy(), before[name][0])
        np.testing.assert_array_equal(bn.beta.numpy(), before[name][1])


def test_inference_then_equals_full_batch_training_mode():
    # With exact statistics, inference mode computes what training mode computes on the whole
    # data set as one batch (stale statistics give something else).
    model = two_bn_model()
    x = np.random.default_rng(2).normal(size=(200, 6)).astype("float32")
    stale = model(x, training=False).numpy()
    recalibrate_batchnorm(model, x)
    inference = model(x, training=False).numpy()
    training = model(x, training=True).numpy()
    assert np.abs(stale - training).max() > 0.1
    np.testing.assert_allclose(inference, training, atol=2e-3)


def test_input_forms_agree_and_integer_images_are_scaled():
    x = np.random.default_rng(3).integers(0, 256, size=(120, 6)).astype("uint8")
    results = []
    for data in (x, (x, np.zeros(120)), tf.data.Dataset.from_tensor_slices((x, np.zeros(120))),
                 (x.astype("float32") / 255,)):
        model = two_bn_model()
        recalibrate_batchnorm(model, data, batch_size=50)
        results.append(model.get_layer("bn_2").moving_mean.numpy())
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)


def test_bad_input_is_named():
    model = two_bn_model()
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_batchnorm(model, np.zeros((4, 6), "float32"), batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batchnorm(model, np.zeros((0, 6), "float32"))
    outer = tf.keras.Sequential([tf.keras.Input((6,)), model])
    with pytest.raises(ValueError, match="bn_1.*nested"):
        recalibrate_batchnorm(outer, np.zeros((4, 6), "float32"))
