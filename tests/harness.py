"""One test harness for every optimizer, model builder and task callback of the package.

In the manner of keras-hub's `TestCase` (`run_layer_test`, `run_serialization_test`,
`run_model_saving_test`) and optax's `alias_test.py` (one table of optimizers, each run through
the same problems): a test file lists constructors and data, and calls

- `run_optimizer_test(make_optimizer, ...)`: config round trip (equal config, and the rebuilt
  optimizer computes the same updates bit for bit), `.keras` save/load of a small compiled
  model (slots and iterations kept; the next epoch gives the same weights as the unsaved
  model's, bit for bit), the update rule against the numpy reference below, `m=0` (or any
  declared twin) equal to `tf.keras.optimizers.Adam` bit for bit, and convergence on a small
  problem with real labels;
- `run_model_test(build_model, input_data, ...)`: config round trip (`from_config(get_config())`
  gives equal predictions after `set_weights`), `.keras` save/load (equal weights, optimizer
  state and predictions), output shape;
- `run_task_callback_test(make_callback, ...)`: see its docstring (to come with the task
  callback protocol).

The numpy reference (`metaplastic_step`, `reference_run`) is written from the paper's rule, in
float64, and decides which variables are binarized from the layers themselves, not with the
package's helpers:

    g  <- g + weight_decay * v
    m1 <- b1*m1 + (1-b1)*g ;  m2 <- b2*m2 + (1-b2)*g^2
    U  = lr * sqrt(1-b2^t)/(1-b1^t) * m1 / (sqrt(m2) + eps)
    binarized kernel:  v <- v - where(sign(v)*m1 > 0, (1 - tanh(m*|v|)^2) * U, U)
    anything else:     v <- v - U
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np

import larq_meta  # noqa: F401  (first: makes tf.keras tf-keras)
import larq as lq
import tensorflow as tf

import checks

__all__ = [
    "IN_DIM",
    "NUM_CLASSES",
    "mixed_model",
    "float_conv_model",
    "spread_weights",
    "random_gradients",
    "binarized_kernels",
    "float_kernels",
    "m_functions",
    "m_functions_from_config",
    "metaplastic_step",
    "reference_run",
    "slots",
    "assert_matches_reference",
    "assert_same_training",
    "ReplayGradients",
    "run_optimizer",
    "classification_data",
    "run_optimizer_test",
    "run_model_test",
    "run_task_callback_test",
]

schedules = tf.keras.optimizers.schedules
IN_DIM = 8
NUM_CLASSES = 4


# ------------------------------------------------------------------------------------------------
# Models, gradients and data
# ------------------------------------------------------------------------------------------------


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
    """Binarized QuantDense kernels (`qdense_1`, `qdense_2`), BatchNorm, and a float Dense with
    a bias (`float_dense`): every kind of variable the rule treats differently."""
    inputs = tf.keras.Input((IN_DIM,), name="input")
    x = _quant_dense(16, "qdense_1")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn_1")(x)
    x = _quant_dense(12, "qdense_2", input_quantizer="ste_sign")(x)
    x = tf.keras.layers.BatchNormalization(name="bn_2")(x)
    outputs = tf.keras.layers.Dense(NUM_CLASSES, use_bias=True, name="float_dense")(x)
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


def classification_data(n=256, seed=7):
    """`n` Gaussian points in `IN_DIM` dimensions labelled by the argmax of a fixed random
    linear map to `NUM_CLASSES` classes (real labels, learnable by every harness model)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(IN_DIM, NUM_CLASSES))
    x = rng.normal(size=(n, IN_DIM)).astype(np.float32)
    return x, np.argmax(x @ w, axis=1).astype(np.int32)


# ------------------------------------------------------------------------------------------------
# The numpy reference
# ------------------------------------------------------------------------------------------------


def binarized_kernels(model) -> set:
    """References of the kernels of the larq layers with a sign kernel quantizer."""
    return {
        layer.kernel.ref()
        for layer in model.layers
        if isinstance(layer, (lq.layers.QuantDense, lq.layers.QuantConv2D))
        and layer.kernel_quantizer is not None
    }


def float_kernels(model) -> set:
    """References of every layer's kernel (binarized or float)."""
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


def _value_function(value):
    """A float, or a serialized schedule (evaluated by Keras at each step), as step -> float."""
    if isinstance(value, dict):
        schedule = schedules.deserialize(copy.deepcopy(value))
        return lambda step: float(schedule(step))
    return lambda step, value=float(value): value


def m_functions_from_config(model, config: dict):
    """`m_functions` for an optimizer config: `MetaplasticAdam`'s `m` (one value, a schedule
    or a per-layer mapping with `"*"`) and `apply_to`; a config without `m` (Keras Adam)
    gives plain Adam everywhere."""
    if config.get("m") is None:
        return [None] * len(model.trainable_variables)
    targets = {"binarized": binarized_kernels, "kernels": float_kernels}[
        config.get("apply_to", "binarized")
    ](model)
    m = config["m"]
    if isinstance(m, dict) and "class_name" not in m:
        by_layer = {key: _value_function(value) for key, value in m.items()}
        return m_functions(model, targets, lambda name: by_layer.get(name, by_layer.get("*")))
    function = _value_function(m)
    return m_functions(model, targets, lambda name: function)


def _dense(gradient, shape):
    """A dense float64 gradient from an array or a `(values, indices)` pair (summed)."""
    if isinstance(gradient, tuple):
        values, indices = gradient
        dense = np.zeros(shape)
        np.add.at(dense, np.asarray(indices), np.asarray(values, np.float64))
        return dense
    return np.asarray(gradient, np.float64)


def metaplastic_step(v, g, m1, m2, t, *, lr, m=None, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                     weight_decay=0.0):
    """One update of one variable by the rule, in float64: returns `(v, m1, m2)`.

    `g` is a dense array or a sparse `(values, indices)` pair (rows of `v`; repeated indices
    add up, as Keras sums them before the update; rows not named have a zero gradient).
    `m` None: plain Adam. `t` counts from 1.
    """
    v = np.asarray(v, np.float64)
    g = _dense(g, v.shape) + weight_decay * v
    m1 = beta_1 * m1 + (1 - beta_1) * g
    m2 = beta_2 * m2 + (1 - beta_2) * g * g
    update = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m1 / (np.sqrt(m2) + epsilon)
    if m is not None:
        f_meta = 1 - np.tanh(m * np.abs(v)) ** 2
        update = np.where(np.sign(v) * m1 > 0, f_meta * update, update)
    return v - update, m1, m2


def reference_run(initial, grads, m_fns, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                  weight_decay=0.0):
    """`metaplastic_step` over all variables and steps. `lr` is a float or step -> lr;
    returns the lists `(v, m1, m2)`."""
    v = [np.asarray(w, np.float64).copy() for w in initial]
    m1 = [np.zeros_like(w) for w in v]
    m2 = [np.zeros_like(w) for w in v]
    for t, step_grads in enumerate(grads, start=1):
        lr_t = lr(t - 1) if callable(lr) else lr
        for i, g in enumerate(step_grads):
            v[i], m1[i], m2[i] = metaplastic_step(
                v[i], g, m1[i], m2[i], t, lr=lr_t, m=None if m_fns[i] is None else m_fns[i](t - 1),
                beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay,
            )
    return v, m1, m2


def _reference_hyperparameters(config: dict) -> dict:
    """`reference_run`'s keyword arguments from an optimizer config (MetaplasticAdam or Adam)."""
    assert not config.get("amsgrad"), "the reference has no amsgrad"
    weight_decay = config.get("weight_decay") or 0.0
    assert "m" in config or not weight_decay, "Keras Adam's weight decay is decoupled (AdamW)"
    return {
        "lr": _value_function(config["learning_rate"]),
        "beta_1": config["beta_1"],
        "beta_2": config["beta_2"],
        "epsilon": config["epsilon"],
        "weight_decay": weight_decay,
    }


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
    """Weights within `atol` and both Adam moments within float32 rounding of the reference."""
    v_ref, m1_ref, m2_ref = expected
    for i, v in enumerate(model.trainable_variables):
        np.testing.assert_allclose(v.numpy(), v_ref[i], rtol=0, atol=atol, err_msg=v.name)
        m1, m2 = slots(optimizer, v)
        np.testing.assert_allclose(m1, m1_ref[i], rtol=1e-5, atol=1e-6, err_msg=f"m1 {v.name}")
        np.testing.assert_allclose(m2, m2_ref[i], rtol=1e-5, atol=1e-9, err_msg=f"m2 {v.name}")


# ------------------------------------------------------------------------------------------------
# Applying known gradients: eagerly, in a tf.function, through model.fit
# ------------------------------------------------------------------------------------------------


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
    """Apply `grads` step by step: eagerly, inside a `tf.function`, or through `fit` (the model
    must then be a `ReplayGradients`)."""
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


def assert_same_training(make_a, make_b, mode="function", steps=25, model_fn=mixed_model):
    """Two optimizers applied to the same gradients from the same weights give the same
    weights and slots, bit for bit, and the same iteration count."""
    models = [model_fn(), model_fn()]
    for model in models:
        spread_weights(model)
    grads = random_gradients(models[0], steps=steps)
    optimizers = [make_a(), make_b()]
    for model, optimizer in zip(models, optimizers):
        run_optimizer(mode, model, optimizer, grads)
    for v_a, v_b in zip(models[0].trainable_variables, models[1].trainable_variables):
        assert np.array_equal(v_a.numpy(), v_b.numpy()), v_a.name
        for s_a, s_b in zip(slots(optimizers[0], v_a), slots(optimizers[1], v_b)):
            assert np.array_equal(s_a, s_b), v_a.name
    assert optimizers[0].iterations.numpy() == optimizers[1].iterations.numpy() == steps


# ------------------------------------------------------------------------------------------------
# run_optimizer_test
# ------------------------------------------------------------------------------------------------


def check_config_round_trip(make_optimizer, model_fn=mixed_model):
    """`get_config` / `from_config` (and `tf.keras.optimizers.serialize`) give an equal
    config, the same kinds of values (schedules, not dicts), and the same updates bit for bit."""
    optimizer = make_optimizer()
    clone = checks.assert_config_round_trip(optimizer)
    m = getattr(optimizer, "m", None)
    if isinstance(m, dict):
        assert set(clone.m) == set(m)
        for key, value in m.items():
            assert type(clone.m[key]) is type(value), key
    elif m is not None:
        assert type(clone.m) is type(m)
    assert type(clone._learning_rate) is type(optimizer._learning_rate)
    assert_same_training(lambda: optimizer, lambda: clone, mode="eager", steps=12,
                         model_fn=model_fn)


def check_against_reference(make_optimizer, mode="function", steps=50, model_fn=mixed_model,
                            seed=0):
    """The optimizer's weights and moments after `steps` known gradients match
    `reference_run` for its config; where the config damps something, the damping matters
    (the undamped reference ends more than 1e-2 away), so the comparison can fail."""
    model = model_fn(ReplayGradients) if mode == "fit" else model_fn()
    initial = spread_weights(model, seed=seed)
    grads = random_gradients(model, steps=steps, seed=seed + 1)
    optimizer = make_optimizer()
    config = optimizer.get_config()
    run_optimizer(mode, model, optimizer, grads)
    m_fns = m_functions_from_config(model, config)
    hyper = _reference_hyperparameters(config)
    expected = reference_run(initial, grads, m_fns, **hyper)
    assert_matches_reference(model, getattr(optimizer, "inner_optimizer", optimizer), expected)
    damped = [f for f in m_fns if f is not None]
    if any(f(step) > 0 for f in damped for step in range(steps)):
        undamped = reference_run(initial, grads, [None] * len(m_fns), **hyper)
        gap = max(np.max(np.abs(a - b)) for a, b in zip(undamped[0], expected[0]))
        assert gap > 1e-2, "the damping does not change the result: the test cannot fail"
    return model, optimizer


def _compiled(model_fn, optimizer, weights=None):
    model = model_fn()
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def check_keras_save_load(make_optimizer, directory, model_fn=mixed_model, data=None,
                          epochs=1, model=None):
    """A small model compiled with the optimizer, trained `epochs` (unless a trained `model`
    is given), saved as `.keras` and loaded: equal weights, optimizer config, iterations and
    slots (exactly), equal predictions; then one more epoch on the same batches gives the
    loaded model and the unsaved one the same weights and optimizer state, bit for bit.
    Returns both models."""
    x, y = data if data is not None else classification_data(64)
    if model is None:
        model = _compiled(model_fn, make_optimizer())
        model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == epochs * math.ceil(len(x) / 16)
    loaded = checks.assert_keras_save_load(model, x, directory)
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    checks.assert_model_state_equal(model, loaded)
    checks.assert_optimizer_state_equal(model.optimizer, loaded.optimizer)
    return model, loaded


def check_converges(make_optimizer, model_fn=mixed_model, epochs=5, min_accuracy=0.5):
    """Trained on `classification_data` (real labels), the model's loss falls by a fifth and
    its accuracy on held-out points of the same problem reaches `min_accuracy` (chance: 0.25;
    `mixed_model`, 16 and 12 binary units, reaches about 0.65). Returns the trained model."""
    x, y = classification_data(768, seed=11)
    (x_train, y_train), (x_test, y_test) = (x[:512], y[:512]), (x[512:], y[512:])
    tf.keras.utils.set_random_seed(3)
    model = _compiled(model_fn, make_optimizer())
    history = model.fit(x_train, y_train, batch_size=16, epochs=epochs, shuffle=False,
                        verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    assert accuracy >= min_accuracy, accuracy
    # MetaplasticAdam's per-step checks (if any) flagged nothing on good values.
    assert getattr(model.optimizer, "fault", None) is None, model.optimizer.fault
    return model


def run_optimizer_test(
    make_optimizer,
    directory,
    *,
    keras_twin=None,
    reference=True,
    model_fn=mixed_model,
    converges=True,
    min_accuracy=0.5,
):
    """Run an optimizer through every shared check.

    # Arguments
        make_optimizer: A function returning a fresh optimizer (called several times).
        directory: A temporary folder for `.keras` files (pytest's `tmp_path`).
        keras_twin: A function returning a Keras optimizer that must give the same weights
            and slots bit for bit (e.g. `Adam` with the same arguments for `m=0`), or None.
        reference: Compare 50 steps with the numpy reference for the optimizer's config.
        model_fn: The model every check uses (default: `mixed_model`; a per-layer `m` must
            name its layers).
        converges: Check training on a small problem with real labels.
        min_accuracy: The held-out accuracy `converges` needs.
    """
    check_config_round_trip(make_optimizer, model_fn)
    # The converged model is the one saved and reloaded (one model, one training).
    trained = None
    if converges:
        trained = check_converges(make_optimizer, model_fn, min_accuracy=min_accuracy)
    check_keras_save_load(make_optimizer, directory, model_fn, model=trained)
    if reference:
        check_against_reference(make_optimizer, model_fn=model_fn)
    if keras_twin is not None:
        assert_same_training(make_optimizer, keras_twin, model_fn=model_fn)


# ------------------------------------------------------------------------------------------------
# run_model_test
# ------------------------------------------------------------------------------------------------


def run_model_test(
    build_model,
    input_data,
    directory,
    *,
    expected_output_shape,
    labels=None,
    make_optimizer=None,
    check_config_equal=True,
    atol=0.0,
):
    """Run a model builder through every shared check.

    - `type(model).from_config(model.get_config())` builds a model that, after
      `set_weights(model.get_weights())`, predicts the same (and, with `check_config_equal`,
      whose config is the same);
    - the output has `expected_output_shape` (batch dimension included);
    - if `labels` are given, the model (compiled with `make_optimizer()`, unless
      `build_model` compiles it) trains one epoch first, so the `.keras` file holds an
      optimizer state;
    - `.keras` save/load gives equal weights, predictions and (if compiled) optimizer config,
      iterations and slots.

    # Arguments
        build_model: A function returning a fresh model.
        input_data: A batch of inputs.
        directory: A temporary folder (pytest's `tmp_path`).
        expected_output_shape: The output shape for `input_data`.
        labels: Integer labels for `input_data`, to train one epoch before saving.
        make_optimizer: Returns the optimizer to compile an uncompiled model with.
        check_config_equal: Also require equal configs (larq records a padded build shape
            for rebuilt binary convolutions, so convnets skip it).
        atol: Tolerance of the prediction comparisons (0: bit for bit).

    # Returns
        The trained (or built) model.
    """
    model = build_model()
    outputs = model(input_data, training=False)
    assert tuple(outputs.shape) == tuple(expected_output_shape), outputs.shape

    if check_config_equal:
        clone = checks.assert_config_round_trip(model)
    else:
        clone = type(model).from_config(copy.deepcopy(model.get_config()))
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(input_data, training=False), outputs, rtol=0, atol=atol)

    if labels is not None:
        if model.optimizer is None:
            model.compile(
                optimizer=make_optimizer(),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(input_data, labels, batch_size=max(1, len(labels) // 2), epochs=1,
                  shuffle=False, verbose=0)
        assert int(model.optimizer.iterations.numpy()) >= 1
    checks.assert_keras_save_load(model, input_data, os.fspath(directory), atol=atol)
    return model


# ------------------------------------------------------------------------------------------------
# run_task_callback_test
# ------------------------------------------------------------------------------------------------


def run_task_callback_test(make_callback, *args, **kwargs):
    """Run a task callback through the shared checks (to be written with the task-callback
    protocol of issue #13): `get_state()` / `set_state()` round trip through JSON and the
    checkpoint module, `on_task_begin(k, task)` / `on_task_end(k, task)` driven by the trainer
    with the task index from one source, and a resumed run equal to an uninterrupted one.

    Not implemented yet; the lead engineer writes it with the protocol.
    """
    raise NotImplementedError("run_task_callback_test comes with the task-callback protocol.")
