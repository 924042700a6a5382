"""Tests of `MetaplasticAdam` against a numpy reference written from the paper's rule.

The rule, for each trainable variable `v` with gradient `g` and Adam state (m1, m2, t):

    g  <- g + weight_decay * v
    m1 <- b1*m1 + (1-b1)*g ;  m2 <- b2*m2 + (1-b2)*g^2
    U  = lr * sqrt(1-b2^t)/(1-b1^t) * m1 / (sqrt(m2) + eps)
    binarized kernel:  v <- v - where(sign(v)*m1 > 0, (1 - tanh(m*|v|)^2) * U, U)
    anything else:     v <- v - U

`reference_run` implements it in float64 numpy; which variables are "binarized" (or
"kernels") is decided here from the layers themselves, not with the package's helpers.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import larq_meta  # noqa: F401  (first: makes tf.keras tf-keras)
import larq as lq
import tensorflow as tf

import checks
from larq_meta import MetaplasticAdam
from larq_meta.models import float_mlp, paper_mlp

schedules = tf.keras.optimizers.schedules
IN_DIM = 8


# --------------------------------------------------------------------------------------
# Models, gradients and the numpy reference
# --------------------------------------------------------------------------------------


def _quant_dense(units, name, input_quantizer=None, dtype=None):
    return lq.layers.QuantDense(
        units,
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer="ste_sign",
        kernel_constraint=None,
        name=name,
        dtype=dtype,
    )


def mixed_model(model_class=tf.keras.Model) -> tf.keras.Model:
    """Binarized QuantDense kernels, BatchNorm, and a float Dense with a bias."""
    inputs = tf.keras.Input((IN_DIM,), name="input")
    x = _quant_dense(16, "qdense_1")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn_1")(x)
    x = _quant_dense(12, "qdense_2", input_quantizer="ste_sign")(x)
    x = tf.keras.layers.BatchNormalization(name="bn_2")(x)
    outputs = tf.keras.layers.Dense(4, use_bias=True, name="float_dense")(x)
    return model_class(inputs, outputs, name="mixed")


def float_conv_model() -> tf.keras.Model:
    """A float model with a 4-D conv kernel + bias, BatchNorm, a dense kernel + bias."""
    inputs = tf.keras.Input((4, 4, 1), name="input")
    x = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    outputs = tf.keras.layers.Dense(3, use_bias=True, name="dense")(x)
    return tf.keras.Model(inputs, outputs, name="float_conv")


def spread_weights(model, seed=0, width=2.5):
    """Assign every trainable variable values spread uniformly over ±width; return them."""
    rng = np.random.default_rng(seed)
    values = []
    for v in model.trainable_variables:
        value = rng.uniform(-width, width, size=v.shape).astype(np.float32)
        v.assign(value)
        values.append(value)
    return values


def random_gradients(model, steps, seed=1):
    """Per step, one float32 gradient per trainable variable, of random sign and of
    magnitudes spread over four decades (so that epsilon matters for some entries)."""
    rng = np.random.default_rng(seed)
    return [
        [
            (rng.normal(size=v.shape) * 10.0 ** rng.uniform(-3, 1, size=v.shape)).astype(
                np.float32
            )
            for v in model.trainable_variables
        ]
        for _ in range(steps)
    ]


def binarized_kernels(model) -> set:
    """References of the kernels of the larq layers with a sign kernel quantizer."""
    return {
        layer.kernel.ref()
        for layer in model.layers
        if isinstance(layer, lq.layers.QuantDense) and layer.kernel_quantizer is not None
    }


def float_kernels(model) -> set:
    return {layer.kernel.ref() for layer in model.layers if hasattr(layer, "kernel")}


def m_functions(model, targets: set, m_of_layer):
    """Per trainable variable: None (plain Adam) or a function step -> m, where step is the
    number of updates already applied (0 for the first, as for Keras' learning rate)."""
    owner = {w.ref(): layer.name for layer in model.layers for w in layer.trainable_weights}
    out = []
    for v in model.trainable_variables:
        if v.ref() not in targets:
            out.append(None)
            continue
        m = m_of_layer(owner[v.ref()])
        out.append(m if callable(m) else (lambda step, m=m: m))
    return out


def reference_run(initial, grads, m_fns, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                  weight_decay=0.0):
    """The rule in float64 numpy. `lr` is a float or a function step -> lr."""
    v = [np.asarray(w, np.float64).copy() for w in initial]
    m1 = [np.zeros_like(w) for w in v]
    m2 = [np.zeros_like(w) for w in v]
    for t, step_grads in enumerate(grads, start=1):
        lr_t = lr(t - 1) if callable(lr) else lr
        scale = lr_t * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64) + weight_decay * v[i]
            m1[i] = beta_1 * m1[i] + (1 - beta_1) * g
            m2[i] = beta_2 * m2[i] + (1 - beta_2) * g * g
            update = scale * m1[i] / (np.sqrt(m2[i]) + epsilon)
            if m_fns[i] is not None:
                f_meta = 1 - np.tanh(m_fns[i](t - 1) * np.abs(v[i])) ** 2
                update = np.where(np.sign(v[i]) * m1[i] > 0, f_meta * update, update)
            v[i] = v[i] - update
    return v, m1, m2


def slots(optimizer, variable):
    """The (m1, m2) slot values of `variable`, found by Keras' slot names
    (`[<optimizer name>/]m/<variable name>`, the prefix depending on the context)."""
    found = {}
    for slot in optimizer.variables:
        for kind in ("m", "v"):
            suffix = f"{kind}/{variable.name}"
            if slot.name == suffix or slot.name.endswith("/" + suffix):
                assert kind not in found, f"two {kind} slots for {variable.name}"
                found[kind] = slot.numpy()
    return found["m"], found["v"]


def assert_matches_reference(model, optimizer, expected, atol=1e-5):
    v_ref, m1_ref, m2_ref = expected
    for i, v in enumerate(model.trainable_variables):
        np.testing.assert_allclose(v.numpy(), v_ref[i], rtol=0, atol=atol, err_msg=v.name)
        m1, m2 = slots(optimizer, v)
        np.testing.assert_allclose(m1, m1_ref[i], rtol=1e-5, atol=1e-6, err_msg=f"m1 {v.name}")
        np.testing.assert_allclose(m2, m2_ref[i], rtol=1e-5, atol=1e-9, err_msg=f"m2 {v.name}")


class ReplayGradients(tf.keras.Model):
    """A functional model whose fit loss has a known, pre-drawn gradient.

    `model.fit` cannot be fed gradients, so the loss of step t is
    `sum_i <v_i, G_i[t]>` over the trainable variables `v_i`, with `G_i[t]` the pre-drawn
    gradients and t = `optimizer.iterations`. Its gradient with respect to `v_i` is exactly
    `G_i[t]` (d/dv of sum(v * G) is 1 * G, no rounding), so the whole standard Keras path
    (train_step, GradientTape, optimizer.minimize inside the compiled train function) runs
    on known gradients. The variables are read outside a layer call, so larq gives the
    latent (hidden) values, and the forward pass is run but does not enter the loss.
    """

    def set_gradient_tables(self, grads):
        self._tables = [
            tf.constant(np.stack([step[i] for step in grads]))
            for i in range(len(self.trainable_variables))
        ]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        step = self.optimizer.iterations
        return tf.add_n(
            [
                tf.reduce_sum(tf.convert_to_tensor(v) * tf.gather(table, step))
                for v, table in zip(self.trainable_variables, self._tables)
            ]
        )


def run_optimizer(mode, model, optimizer, grads):
    """Apply `grads` step by step: eagerly, inside a `tf.function`, or through `fit`."""
    variables = model.trainable_variables
    if mode == "eager":
        for step in grads:
            optimizer.apply_gradients(zip([tf.constant(g) for g in step], variables))
    elif mode == "function":

        @tf.function
        def apply(step):
            optimizer.apply_gradients(zip(step, variables))

        for step in grads:
            apply([tf.constant(g) for g in step])
    elif mode == "fit":
        assert isinstance(model, ReplayGradients)
        model.set_gradient_tables(grads)
        model.compile(optimizer=optimizer)
        x = np.zeros((len(grads), IN_DIM), np.float32)
        model.fit(x, batch_size=1, epochs=1, shuffle=False, verbose=0)
    else:
        raise ValueError(mode)
    assert int(optimizer.iterations.numpy()) == len(grads)


# --------------------------------------------------------------------------------------
# 1. The rule against the numpy reference: eager, tf.function, model.fit
# --------------------------------------------------------------------------------------

CASES = {
    # mode: optimizer arguments (each different, to cover weight decay and epsilon 1e-8)
    "eager": dict(m=1.3, learning_rate=0.01, weight_decay=0.01, epsilon=1e-8),
    "function": dict(m=2.0, learning_rate=0.01, beta_1=0.8, beta_2=0.99),
    "fit": dict(m=1.3, learning_rate=0.02, weight_decay=0.05, epsilon=1e-8),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_rule_matches_numpy_reference(mode):
    kwargs = CASES[mode]
    model = mixed_model(ReplayGradients if mode == "fit" else tf.keras.Model)
    initial = spread_weights(model)
    grads = random_gradients(model, steps=50)
    optimizer = MetaplasticAdam(**kwargs)
    run_optimizer(mode, model, optimizer, grads)

    adam_keys = ("beta_1", "beta_2", "epsilon", "weight_decay")
    adam_args = {k: kwargs[k] for k in adam_keys if k in kwargs}
    m_fns = m_functions(model, binarized_kernels(model), lambda name: kwargs["m"])
    assert sum(f is not None for f in m_fns) == 2
    expected = reference_run(initial, grads, m_fns, kwargs["learning_rate"], **adam_args)
    assert_matches_reference(model, optimizer, expected)

    # The comparison can fail: without the damping the weights end far from these.
    plain = [None] * len(m_fns)
    undamped = reference_run(initial, grads, plain, kwargs["learning_rate"], **adam_args)
    gap = max(np.max(np.abs(a - b)) for a, b in zip(undamped[0], expected[0]))
    assert gap > 1e-2


# --------------------------------------------------------------------------------------
# 2. m = 0 is Adam bit for bit; only updates that shrink |v| are damped
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_m_zero_is_keras_adam_bit_for_bit(mode):
    args = dict(learning_rate=0.01, beta_1=0.85, beta_2=0.995, epsilon=1e-8)
    models = [mixed_model(), mixed_model()]
    for model in models:
        spread_weights(model)
    grads = random_gradients(models[0], steps=25)
    meta = MetaplasticAdam(m=0.0, **args)
    adam = tf.keras.optimizers.Adam(**args)
    run_optimizer(mode, models[0], meta, grads)
    run_optimizer(mode, models[1], adam, grads)
    for v_meta, v_adam in zip(models[0].trainable_variables, models[1].trainable_variables):
        assert np.array_equal(v_meta.numpy(), v_adam.numpy()), v_meta.name
        for s_meta, s_adam in zip(slots(meta, v_meta), slots(adam, v_adam)):
            assert np.array_equal(s_meta, s_adam), v_meta.name
    assert meta.iterations.numpy() == adam.iterations.numpy() == len(grads)


def _grid_case():
    signs_magnitudes = [0.0] + [s * a for s in (-1, 1) for a in (1e-3, 0.1, 0.5, 1.0, 2.5)]
    grads = [0.0] + [s * a for s in (-1, 1) for a in (1e-6, 1e-2, 1.0, 100.0)]
    v = np.repeat(np.array(signs_magnitudes)[:, None], len(grads), axis=1)
    g = np.repeat(np.array(grads)[None, :], len(signs_magnitudes), axis=0)
    return v, g


def _random_case(seed):
    rng = np.random.default_rng(seed)
    shape = (16, 8)
    v = rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-4, np.log10(2.5), shape)
    g = rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-7, 2, shape)
    return v, g


@pytest.mark.parametrize("m", [0.25, 1.3, 3.0])
@pytest.mark.parametrize("case", ["grid", "random-0", "random-1"])
def test_only_updates_towards_zero_are_damped(case, m):
    """Single step (and a second step whose gradient opposes the first), float64 so the
    update `v_before - v_after` is resolved exactly: it is U where sign(v)*m1 <= 0 and
    (1 - tanh²(m|v|))·U where sign(v)*m1 > 0, never larger than |U|, never reversed."""
    v0, g1 = _grid_case() if case == "grid" else _random_case(int(case.split("-")[1]))
    # lr and betas exact in float32: Keras keeps lr in a float32 variable and builds the
    # beta powers with tf.cast(python float), which goes through float32 even for float64.
    lr, b1, b2, eps = 0.0625, 0.875, 1 - 2.0**-10, 1e-7
    layer = lq.layers.QuantDense(
        v0.shape[1], use_bias=False, kernel_quantizer="ste_sign", kernel_constraint=None,
        dtype="float64", name="qdense",
    )
    layer.build((None, v0.shape[0]))
    kernel = layer.kernel
    kernel.assign(v0)
    optimizer = MetaplasticAdam(m=m, learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)

    m1 = np.zeros_like(v0)
    m2 = np.zeros_like(v0)
    v = v0
    # Step 2's gradient opposes step 1's and is smaller, so m1 keeps step 1's sign while
    # g flips: the condition must look at m1, not at g.
    for t, g in enumerate([g1, -0.3 * g1], start=1):
        optimizer.apply_gradients([(tf.constant(g), kernel)])
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        U = lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m1 / (np.sqrt(m2) + eps)
        update = v - kernel.numpy()
        towards_zero = np.sign(v) * m1 > 0
        f_meta = 1 - np.tanh(m * np.abs(v)) ** 2
        assert towards_zero.any() and (~towards_zero).any()
        np.testing.assert_allclose(update[~towards_zero], U[~towards_zero], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(
            update[towards_zero], (f_meta * U)[towards_zero], rtol=1e-7, atol=1e-15
        )
        assert np.all(np.abs(update) <= np.abs(U) * (1 + 1e-12) + 1e-15)
        assert np.all(np.sign(update) * np.sign(U) >= 0)
        shrunk = towards_zero & (U != 0)
        assert np.all(np.abs(update[shrunk]) < np.abs(U[shrunk]))
        if t == 2:
            # Here a condition on g instead of m1 would pick the opposite entries.
            assert np.any(towards_zero != (np.sign(v) * g > 0))
        v = kernel.numpy()


# --------------------------------------------------------------------------------------
# 3. Per-layer m, m schedules, apply_to="kernels"
# --------------------------------------------------------------------------------------


def _exp(initial, rate, steps):
    return lambda step: initial * rate ** (step / steps)


M_CASES = {
    "mapping-default": (
        lambda: {"qdense_1": 0.5, "*": 2.0},
        lambda name: {"qdense_1": 0.5}.get(name, 2.0),
    ),
    "mapping-schedule-no-default": (
        lambda: {"qdense_1": 0.0, "qdense_2": schedules.ExponentialDecay(0.5, 20, 4.0)},
        lambda name: {"qdense_1": 0.0, "qdense_2": _exp(0.5, 4.0, 20)}[name],
    ),
    "piecewise-schedule": (
        lambda: schedules.PiecewiseConstantDecay([15, 35], [0.0, 1.0, 3.0]),
        lambda name: lambda step: 0.0 if step <= 15 else (1.0 if step <= 35 else 3.0),
    ),
    "exponential-schedule": (
        lambda: schedules.ExponentialDecay(3.0, 25, 0.25),
        lambda name: _exp(3.0, 0.25, 25),
    ),
}


@pytest.mark.parametrize("case", sorted(M_CASES))
def test_per_layer_m_and_m_schedules(case):
    make_m, m_of_layer = M_CASES[case]
    model = mixed_model()
    initial = spread_weights(model, seed=3)
    grads = random_gradients(model, steps=50, seed=4)
    # A learning-rate schedule too, to check both are read at the same step.
    lr = schedules.ExponentialDecay(0.02, decay_steps=20, decay_rate=0.5)
    optimizer = MetaplasticAdam(m=make_m(), learning_rate=lr)
    run_optimizer("function", model, optimizer, grads)
    m_fns = m_functions(model, binarized_kernels(model), m_of_layer)
    expected = reference_run(initial, grads, m_fns, _exp(0.02, 0.5, 20))
    assert_matches_reference(model, optimizer, expected)


@pytest.mark.parametrize(
    "make_model", [float_conv_model, float_mlp], ids=["conv-bias", "float_mlp"]
)
def test_apply_to_kernels_on_float_model(make_model):
    if make_model is float_mlp:
        model = float_mlp(hidden_units=(16,), num_classes=4, input_shape=(IN_DIM,))
    else:
        model = make_model()
    initial = spread_weights(model, seed=5)
    grads = random_gradients(model, steps=50, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # kernels are found: no "no effect" warning
        optimizer = MetaplasticAdam(m=1.5, learning_rate=0.01, apply_to="kernels")
        run_optimizer("eager", model, optimizer, grads)
    m_fns = m_functions(model, float_kernels(model), lambda name: 1.5)
    assert sum(f is not None for f in m_fns) == 2 and sum(f is None for f in m_fns) >= 3
    expected = reference_run(initial, grads, m_fns, 0.01)
    assert_matches_reference(model, optimizer, expected)


# --------------------------------------------------------------------------------------
# 4. Config round trip
# --------------------------------------------------------------------------------------

CONFIG_CASES = {
    "defaults": lambda: MetaplasticAdam(),
    "schedules": lambda: MetaplasticAdam(
        m=schedules.ExponentialDecay(2.0, 100, 0.5),
        learning_rate=schedules.PiecewiseConstantDecay([10, 20], [0.01, 0.005, 0.001]),
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-8,
        weight_decay=1e-4,
        apply_to="kernels",
        clipnorm=1.0,
        name="meta",
    ),
    "mapping": lambda: MetaplasticAdam(
        m={
            "qdense_1": 0.5,
            "qdense_2": schedules.PiecewiseConstantDecay([5], [0.0, 2.0]),
            "*": 1.35,
        },
        learning_rate=schedules.ExponentialDecay(0.01, 10, 0.9),
        weight_decay=1e-3,
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_round_trip(case):
    optimizer = CONFIG_CASES[case]()
    clone = checks.assert_config_round_trip(optimizer)
    # The rebuilt optimizer holds real schedules (not dicts) and behaves identically.
    if isinstance(optimizer.m, dict):
        assert set(clone.m) == set(optimizer.m)
        for key, value in optimizer.m.items():
            assert type(clone.m[key]) is type(value)
    else:
        assert type(clone.m) is type(optimizer.m)
    assert type(clone._learning_rate) is type(optimizer._learning_rate)
    models = [mixed_model(), mixed_model()]
    for model in models:
        spread_weights(model)
    grads = random_gradients(models[0], steps=12)
    run_optimizer("eager", models[0], optimizer, grads)
    run_optimizer("eager", models[1], clone, grads)
    for a, b in zip(models[0].trainable_variables, models[1].trainable_variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.name


def test_config_holds_m_and_coupled_weight_decay():
    config = MetaplasticAdam(m={"*": 1.5}, weight_decay=0.01, epsilon=1e-8).get_config()
    assert config["m"] == {"*": 1.5}
    assert config["weight_decay"] == 0.01
    assert config["epsilon"] == 1e-8
    serialized = tf.keras.optimizers.serialize(MetaplasticAdam(m=0.7))
    assert "MetaplasticAdam" in json.dumps(serialized)
    assert isinstance(tf.keras.optimizers.deserialize(serialized), MetaplasticAdam)


# --------------------------------------------------------------------------------------
# 5. Saving: .keras and tf.train.Checkpoint restore slots and iterations; training resumes
# --------------------------------------------------------------------------------------


def _small_paper_mlp(initial=None, m=None):
    model = paper_mlp(hidden_units=(32, 16), num_classes=3, input_shape=(IN_DIM,))
    if initial is not None:
        model.set_weights(initial)
    model.compile(
        optimizer=MetaplasticAdam(
            m=schedules.ExponentialDecay(1.0, 10, 1.5) if m is None else m,
            learning_rate=schedules.ExponentialDecay(0.01, 10, 0.9),
            weight_decay=1e-3,
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.fixture(scope="module")
def fixed_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, IN_DIM)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, y


@pytest.fixture(scope="module")
def initial_weights():
    """paper_mlp weights with kernels spread over ±1 (few sign flips per step)."""
    template = paper_mlp(hidden_units=(32, 16), num_classes=3, input_shape=(IN_DIM,))
    rng = np.random.default_rng(12)
    return [
        rng.uniform(-1, 1, w.shape).astype(w.dtype) if w.ndim == 2 else w
        for w in template.get_weights()
    ]


def _fit(model, data, epochs=1):
    x, y = data
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)


def _interrupted_and_uninterrupted(initial, data, m=None):
    uninterrupted = _small_paper_mlp(initial, m)
    _fit(uninterrupted, data, epochs=2)
    interrupted = _small_paper_mlp(initial, m)
    _fit(interrupted, data)
    assert int(interrupted.optimizer.iterations.numpy()) == 4
    return interrupted, uninterrupted


def _assert_resumes_like(uninterrupted, resumed, data):
    _fit(resumed, data)  # the second epoch, on the same batches in the same order
    checks.assert_model_state_equal(uninterrupted, resumed, atol=1e-6)
    checks.assert_optimizer_state_equal(uninterrupted.optimizer, resumed.optimizer, atol=1e-6)


def test_keras_save_load_restores_slots_and_resumes_like_uninterrupted(
    tmp_path, fixed_data, initial_weights
):
    interrupted, uninterrupted = _interrupted_and_uninterrupted(initial_weights, fixed_data)
    # Weights, optimizer config/slots/iterations and predictions come back.
    loaded = checks.assert_keras_save_load(interrupted, fixed_data[0], tmp_path)
    _assert_resumes_like(uninterrupted, loaded, fixed_data)


@pytest.mark.parametrize("m", [None, {"dense_1": 1.0, "*": 1.5}], ids=["m-schedule", "m-mapping"])
def test_checkpoint_restores_slots_and_resumes_like_uninterrupted(
    tmp_path, fixed_data, initial_weights, m
):
    interrupted, uninterrupted = _interrupted_and_uninterrupted(initial_weights, fixed_data, m)
    # Into a model with other weights and an unbuilt optimizer:
    restored = _small_paper_mlp(m=m)
    checks.assert_checkpoint_restore(interrupted, restored, tmp_path)
    _assert_resumes_like(uninterrupted, restored, fixed_data)


def test_keras_save_load_with_per_layer_m(tmp_path, fixed_data, initial_weights):
    m = {"dense_1": 1.0, "*": 1.5}
    interrupted = _small_paper_mlp(initial_weights, m)
    _fit(interrupted, fixed_data)
    loaded = checks.assert_keras_save_load(interrupted, fixed_data[0], tmp_path)
    uninterrupted = _small_paper_mlp(initial_weights, m)
    _fit(uninterrupted, fixed_data, epochs=2)
    _assert_resumes_like(uninterrupted, loaded, fixed_data)


# --------------------------------------------------------------------------------------
# 6. MirroredStrategy over two logical CPUs matches one device
# --------------------------------------------------------------------------------------

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import larq_meta
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    tf.config.experimental.enable_op_determinism()
    from larq_meta import MetaplasticAdam
    from larq_meta.models import paper_mlp

    # paper_mlp's BatchNorm normalises each replica's half batch on its own, which is a
    # different model from one device's full batch: build it with synchronized BatchNorm
    # (same layers and names otherwise) to compare the optimizer.
    import larq_meta.models as models

    def synchronized_batch_norm(name=None):
        return tf.keras.layers.BatchNormalization(
            momentum=models.BN_MOMENTUM, epsilon=models.BN_EPSILON, name=name, synchronized=True
        )

    models.batch_norm = synchronized_batch_norm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 16)).astype(np.float32)
    y = rng.integers(0, 4, 128).astype(np.int32)
    template = paper_mlp(hidden_units=(32,), num_classes=4, input_shape=(16,))
    initial = [rng.uniform(-1, 1, w.shape).astype(np.float32) if w.ndim == 2 else w
               for w in template.get_weights()]

    def run(strategy):
        with strategy.scope():
            model = paper_mlp(hidden_units=(32,), num_classes=4, input_shape=(16,))
            model.set_weights(initial)
            model.compile(
                optimizer=MetaplasticAdam(m={"dense_1": 1.3, "*": 2.0}, learning_rate=0.01,
                                          weight_decay=1e-3),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)  # 4 steps
        return model

    one = run(tf.distribute.get_strategy())
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = run(mirrored_strategy)

    def gap(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    weights = max(gap(a, b) for a, b in zip(one.get_weights(), two.get_weights()))
    pairs = zip(one.optimizer.variables, two.optimizer.variables)
    slots = max(gap(a.numpy(), b.numpy()) for a, b in pairs)
    moved = max(gap(a, b) for a, b in zip(one.get_weights(), initial) if a.ndim == 2)
    print(json.dumps({
        "replicas": mirrored_strategy.num_replicas_in_sync,
        "iterations": [int(o.optimizer.iterations.numpy()) for o in (one, two)],
        "weights": weights, "slots": slots, "moved": moved,
    }))
    """
)


def test_mirrored_strategy_matches_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["iterations"] == [4, 4]
    assert report["moved"] > 1e-2  # training did change the weights
    assert report["weights"] <= 1e-4, report
    assert report["slots"] <= 1e-4, report


# --------------------------------------------------------------------------------------
# 7. mixed_float16
# --------------------------------------------------------------------------------------


@pytest.fixture
def mixed_float16():
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def test_mixed_float16_trains_with_float32_hidden_weights_and_slots(mixed_float16):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(256, IN_DIM)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    model = paper_mlp(hidden_units=(32,), num_classes=2, input_shape=(IN_DIM,))
    model.compile(
        optimizer=MetaplasticAdam(m=1.3, learning_rate=0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    inner = model.optimizer.inner_optimizer
    assert isinstance(inner, MetaplasticAdam)
    history = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0).history
    losses = history["loss"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    assert model(x[:4]).dtype == tf.float16

    kernels = [layer.kernel for layer in model.layers if isinstance(layer, lq.layers.QuantDense)]
    assert len(kernels) == 2
    for kernel in kernels:
        assert kernel.dtype == tf.float32
        assert kernel.numpy().dtype == np.float32
        assert len(np.unique(kernel.numpy())) > 2  # real-valued hidden weights, not signs
    for variable in inner.variables[1:]:
        assert variable.dtype == tf.float32, variable.name

    # The rule itself under the policy, through the LossScaleOptimizer (apply_gradients
    # takes unscaled gradients): 10 steps against the reference.
    model2 = mixed_model()
    initial = spread_weights(model2, seed=9)
    grads = random_gradients(model2, steps=10, seed=10)
    optimizer = tf.keras.mixed_precision.LossScaleOptimizer(
        MetaplasticAdam(m=1.3, learning_rate=0.01)
    )
    run_optimizer("function", model2, optimizer, grads)
    m_fns = m_functions(model2, binarized_kernels(model2), lambda name: 1.3)
    expected = reference_run(initial, grads, m_fns, 0.01)
    assert_matches_reference(model2, optimizer.inner_optimizer, expected)


# --------------------------------------------------------------------------------------
# 8. Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "m", [-1.0, -1e-9, float("nan"), float("inf"), -float("inf"), "1.3", True, False, None, [1.0]]
)
def test_bad_m_is_rejected_with_its_range(m):
    with pytest.raises(ValueError, match=r"`m`.*>= 0"):
        MetaplasticAdam(m=m)


@pytest.mark.parametrize(
    "m",
    [
        {"qdense_1": -0.5},
        {"*": float("nan")},
        {"qdense_1": "x"},
        {"*": schedules.PiecewiseConstantDecay([5], [-1.0, 1.0])},
    ],
)
def test_bad_m_inside_a_mapping_names_the_entry(m):
    key = next(iter(m))
    with pytest.raises(ValueError, match=re.escape(f"`m[{key!r}]`") + ".*>= 0"):
        MetaplasticAdam(m=m)


def test_bad_m_schedule_is_rejected():
    with pytest.raises(ValueError, match=r"`m`.*>= 0"):
        MetaplasticAdam(m=schedules.PiecewiseConstantDecay([5], [-1.0, 1.0]))


@pytest.mark.parametrize("m", [{}, {1: 1.0}])
def test_bad_m_mapping_structure(m):
    with pytest.raises(ValueError, match="`m`"):
        MetaplasticAdam(m=m)


def _apply_once(model, optimizer):
    grads = random_gradients(model, steps=1)[0]
    optimizer.apply_gradients(zip([tf.constant(g) for g in grads], model.trainable_variables))


def test_mapping_naming_an_absent_layer_fails_at_build():
    optimizer = MetaplasticAdam(m={"qdense_1": 1.0, "no_such_layer": 2.0, "*": 1.0})
    with pytest.raises(ValueError, match="no_such_layer"):
        _apply_once(mixed_model(), optimizer)


def test_mapping_naming_an_absent_layer_fails_in_fit(fixed_data):
    model = paper_mlp(hidden_units=(16,), num_classes=3, input_shape=(IN_DIM,))
    model.compile(
        optimizer=MetaplasticAdam(m={"dense_1": 1.0, "dense_9": 2.0, "*": 1.0}),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match="dense_9"):
        _fit(model, fixed_data)


def test_mapping_missing_a_binarized_layer_without_default_fails():
    optimizer = MetaplasticAdam(m={"qdense_1": 1.0})
    model = mixed_model()
    for _ in range(2):  # a failed build is not left half-done: the retry raises the same
        with pytest.raises(ValueError, match="qdense_2"):
            _apply_once(model, optimizer)
    assert int(optimizer.iterations.numpy()) == 0


def test_model_without_binarized_variable_warns_exactly_once(fixed_data):
    model = float_mlp(hidden_units=(16,), num_classes=3, input_shape=(IN_DIM,))
    model.compile(
        optimizer=MetaplasticAdam(m=1.3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.warns(UserWarning, match="metaplasticity has no effect") as record:
        _fit(model, fixed_data, epochs=2)
    user_warnings = [w for w in record if issubclass(w.category, UserWarning)]
    assert len(user_warnings) == 1, [str(w.message) for w in user_warnings]


def test_binarized_model_does_not_warn():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _apply_once(mixed_model(), MetaplasticAdam(m=1.3))
    assert not [w for w in record if "metaplasticity" in str(w.message)]


@pytest.mark.parametrize(
    "argument, value",
    [
        ("beta_1", 1.0), ("beta_1", -0.1), ("beta_1", float("nan")), ("beta_1", "0.9"),
        ("beta_1", None),
        ("beta_2", 1.0), ("beta_2", 1.5), ("beta_2", float("nan")), ("beta_2", "0.999"),
        ("epsilon", 0.0), ("epsilon", -1e-7), ("epsilon", float("nan")), ("epsilon", float("inf")),
        ("epsilon", "1e-7"), ("epsilon", None),
        ("weight_decay", -0.1), ("weight_decay", float("nan")), ("weight_decay", float("inf")),
        ("weight_decay", "0.01"),
        ("apply_to", "all"), ("apply_to", "Binarized"), ("apply_to", None), ("apply_to", 1),
    ],
)
def test_bad_hyperparameters_are_rejected(argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        MetaplasticAdam(**{argument: value})
