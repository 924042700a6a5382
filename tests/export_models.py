"""Small models and data shared by the export tests (tests/test_export*.py).

Import larq_meta's submodules before `larq`: then `tf.keras` is tf-keras.
"""

import larq_meta  # noqa: F401 - first, so tf.keras is tf-keras
from larq_meta import models  # noqa: F401 - before larq (see above)
from larq_meta.datasets import load_mnist

import larq as lq
import numpy as np
import tensorflow as tf

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
#: Quicker exports for tests that do not need the SavedModel path or the float reference.
FAST = dict(float_reference=False, conversion="graphdef")


def randomize_batchnorm(model, seed=0):
    """BatchNorm states far from the identity, so that BN folding is actually exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            sign = rng.choice([-1, 1], gamma.shape)
            layer.set_weights(
                [
                    (rng.uniform(0.5, 2.0, gamma.shape) * sign).astype("f4"),
                    rng.normal(size=beta.shape).astype("f4"),
                    rng.normal(size=mean.shape).astype("f4"),
                    rng.uniform(0.5, 3.0, var.shape).astype("f4"),
                ]
            )
    return model


def no_bn_mlp(widths, inputs=20):
    """Real-input QuantDense, then binarized QuantDense layers, no BatchNorm at all."""
    x0 = tf.keras.Input((inputs,))
    x = lq.layers.QuantDense(widths[0], kernel_quantizer="ste_sign", name="d0")(x0)
    for i, w in enumerate(widths[1:], 1):
        x = lq.layers.QuantDense(w, name=f"d{i}", **BINARY)(x)
    return tf.keras.Model(x0, x, name="no_bn")


def sequential_with_bias():
    return tf.keras.Sequential(
        [
            tf.keras.Input((12,)),
            tf.keras.layers.Dense(16),
            tf.keras.layers.BatchNormalization(),
            lq.layers.QuantDense(
                9,
                input_quantizer="approx_sign",
                kernel_quantizer="ste_sign",
                bias_initializer="random_normal",
            ),
            tf.keras.layers.BatchNormalization(),
            lq.layers.QuantDense(
                5, input_quantizer="ste_sign", kernel_quantizer="swish_sign", activation="tanh"
            ),
        ],
        name="seq",
    )


def nested_model():
    inner = no_bn_mlp((10, 6), inputs=8)
    x0 = tf.keras.Input((8,))
    x = inner(x0)
    x = lq.layers.QuantDense(4, name="outer", **BINARY)(x)
    return tf.keras.Model(x0, x, name="outer_model")


def ternary_mlp(seed=0):
    """A ternary QuantDense between binary ones: a layer LCE does not run exactly (with these
    BatchNorm states LCE disagrees with Keras on 5-12 % of random inputs)."""
    tf.keras.utils.set_random_seed(seed)
    x0 = tf.keras.Input((20,))
    h = lq.layers.QuantDense(32, kernel_quantizer="ste_sign", name="d0")(x0)
    h = tf.keras.layers.BatchNormalization(name="bn0")(h)
    h = lq.layers.QuantDense(16, input_quantizer="ste_tern", kernel_quantizer="ste_tern",
                             name="tern")(h)
    h = tf.keras.layers.BatchNormalization(name="bn1")(h)
    h = lq.layers.QuantDense(5, name="out", **BINARY)(h)
    return randomize_batchnorm(tf.keras.Model(x0, h, name="ternary"), seed)


def flat_layers(model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def mnist(n_train=2000, n_test=300):
    """Real MNIST in [0, 1]: `(x_train, y_train), (x_test, y_test)`, the first images."""
    (x_train, y_train), (x_test, y_test) = load_mnist(download=False)
    scale = np.float32(1 / 255)
    return (
        (x_train[:n_train] * scale, np.asarray(y_train[:n_train])),
        (x_test[:n_test] * scale, np.asarray(y_test[:n_test])),
    )
