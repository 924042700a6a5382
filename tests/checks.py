"""Reusable checks shared by the larq-meta tests (in the spirit of keras-hub's `TestCase`).

Every optimizer, layer and model test should go through the same serialization and saving
checks instead of re-implementing them:

- `assert_config_round_trip(obj)`: `get_config` is JSON-serializable and survives
  `from_config`, and the matching `tf.keras.*.serialize`/`deserialize` pair.
- `assert_keras_save_load(model, x, directory)`: `model.save("….keras")` +
  `tf.keras.models.load_model` restore weights, optimizer (config, slots, iterations) and
  predictions.
- `assert_checkpoint_restore(model, fresh_model, directory)`: the same through
  `tf.train.Checkpoint(model=..., optimizer=...)`.
- `assert_model_state_equal`, `assert_optimizer_state_equal`: the comparisons those use.
- `synthetic_tasks(...)`: small linearly-separable 4-class tasks for trainer/tuner tests.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np

import larq_meta  # noqa: F401  (must come before tf.keras: makes it tf-keras)
import tensorflow as tf

__all__ = [
    "assert_config_round_trip",
    "assert_keras_save_load",
    "assert_checkpoint_restore",
    "assert_model_state_equal",
    "assert_optimizer_state_equal",
    "model_state",
    "optimizer_state",
    "synthetic_tasks",
]


def _serializers(obj):
    """The `tf.keras` serialize/deserialize pair for `obj`'s kind, or None."""
    keras = tf.keras
    if isinstance(obj, keras.optimizers.schedules.LearningRateSchedule):
        return keras.optimizers.schedules.serialize, keras.optimizers.schedules.deserialize
    if isinstance(obj, keras.optimizers.Optimizer):
        return keras.optimizers.serialize, keras.optimizers.deserialize
    if isinstance(obj, keras.Model):
        return None  # Model configs are checked through `from_config`; use save/load for more.
    if isinstance(obj, keras.layers.Layer):
        return keras.layers.serialize, keras.layers.deserialize
    return None


def assert_config_round_trip(obj, custom_objects=None):
    """Check that `obj`'s config is JSON-serializable and rebuilds an equal object.

    Rebuilds through `type(obj).from_config(obj.get_config())` and, for optimizers,
    schedules and layers, through `tf.keras.<kind>.serialize` / `deserialize`; each rebuilt
    object must be of the same class and give back exactly the same config.

    # Returns
        The object rebuilt by `from_config`.
    """
    config = obj.get_config()
    # A `.keras` file stores the config as JSON (after `serialize_keras_object` turns numpy
    # scalars, such as Keras' own learning-rate value, into Python numbers).
    json.dumps(config, default=_numpy_to_python)
    clone = type(obj).from_config(copy.deepcopy(config), **_custom_objects_kwarg(custom_objects))
    assert type(clone) is type(obj), f"from_config gave a {type(clone)}, not a {type(obj)}"
    assert clone.get_config() == config, _config_diff(config, clone.get_config())

    pair = _serializers(obj)
    if pair is not None:
        serialize, deserialize = pair
        payload = serialize(obj)
        json.dumps(payload)
        restored = deserialize(copy.deepcopy(payload), custom_objects=custom_objects)
        assert type(restored) is type(obj), f"deserialize gave a {type(restored)}"
        assert restored.get_config() == config, _config_diff(config, restored.get_config())
    return clone


def _numpy_to_python(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in a config is not JSON serializable: {value!r}")


def _custom_objects_kwarg(custom_objects):
    return {"custom_objects": custom_objects} if custom_objects else {}


def _config_diff(expected: dict, actual: dict) -> str:
    keys = sorted(set(expected) | set(actual))
    diff = {k: (expected.get(k), actual.get(k)) for k in keys if expected.get(k) != actual.get(k)}
    return f"config changed in a round trip (key: (before, after)): {diff}"


def model_state(model: tf.keras.Model) -> list[tuple[str, np.ndarray]]:
    """All weights (trainable and not; larq kernels as their latent values) in order, with
    their names.

    States are compared by position, not by name: variable names are not stable across a
    reload (tf-keras rebuilds larq layers from their config outside the layer's name scope,
    so a reloaded `dense_1/kernel:0` is just `kernel:0`, and optimizer slot names follow).
    """
    return list(zip([w.name for w in model.weights], model.get_weights()))


def _base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def optimizer_state(optimizer) -> list[tuple[str, np.ndarray]]:
    """All optimizer variables (iterations, slots, loss scale ...) in order, with names."""
    return [(v.name, np.asarray(v.numpy())) for v in optimizer.variables]


def _assert_states_equal(expected: list, actual: list, atol: float, what: str) -> None:
    assert len(expected) == len(actual), (
        f"{len(expected)} != {len(actual)} {what}s: {[n for n, _ in expected]} != "
        f"{[n for n, _ in actual]}"
    )
    for (name, value), (other_name, other) in zip(expected, actual):
        label = f"{what} {name} (vs {other_name})"
        assert value.shape == other.shape and value.dtype == other.dtype, (
            f"{label}: {value.dtype}{value.shape} != {other.dtype}{other.shape}"
        )
        if atol == 0:
            np.testing.assert_array_equal(other, value, err_msg=label)
        else:
            np.testing.assert_allclose(other, value, rtol=0, atol=atol, err_msg=label)


def assert_model_state_equal(expected: tf.keras.Model, actual: tf.keras.Model, atol=0.0):
    """Same weight dtypes, shapes and values in the same order (exactly, or within `atol`)."""
    _assert_states_equal(model_state(expected), model_state(actual), atol, "weight")


def assert_optimizer_state_equal(expected, actual, atol=0.0):
    """Same optimizer class, config, iterations and variables (slots), in order."""
    assert type(actual) is type(expected)
    assert actual.get_config() == expected.get_config(), _config_diff(
        expected.get_config(), actual.get_config()
    )
    assert int(actual.iterations.numpy()) == int(expected.iterations.numpy()), "iterations"
    exp_state, act_state = optimizer_state(expected), optimizer_state(actual)
    assert len(exp_state) > 1, "optimizer has no slots: was it built?"
    _assert_states_equal(exp_state, act_state, atol, "optimizer variable")


def assert_keras_save_load(model: tf.keras.Model, x, directory, atol=0.0) -> tf.keras.Model:
    """Save `model` as `.keras`, reload it, and compare weights, optimizer and predictions.

    The model must be built; if it was compiled and trained, the reloaded optimizer must have
    the same config, iterations and slot values.

    # Returns
        The reloaded model (e.g. to check that training continues identically).
    """
    path = os.path.join(os.fspath(directory), "model.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert_model_state_equal(model, loaded, atol)
    if getattr(model, "optimizer", None) is not None:
        assert_optimizer_state_equal(model.optimizer, loaded.optimizer, atol)
    expected = model(x, training=False)
    actual = loaded(x, training=False)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=max(atol, 1e-6))
    return loaded


def assert_checkpoint_restore(model: tf.keras.Model, fresh_model: tf.keras.Model, directory):
    """Save `tf.train.Checkpoint(model=, optimizer=)` of `model`, restore it into
    `fresh_model` (same architecture, compiled with an unbuilt optimizer of the same config)
    and compare weights and optimizer state exactly.
    """
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = checkpoint.save(os.path.join(os.fspath(directory), "ckpt"))
    status = tf.train.Checkpoint(model=fresh_model, optimizer=fresh_model.optimizer).restore(path)
    # Slot variables are created lazily; restoring into them is deferred until they exist.
    _base_optimizer(fresh_model.optimizer).build(fresh_model.trainable_variables)
    status.assert_existing_objects_matched()
    assert_model_state_equal(model, fresh_model)
    assert_optimizer_state_equal(model.optimizer, fresh_model.optimizer)


def synthetic_tasks(num_tasks: int = 2, n: int = 512, dim: int = 20, seed: int = 0):
    """`num_tasks` tasks of `n` Gaussian points in `dim` dimensions, labelled by the argmax of
    a random linear map to 4 classes; half of each task trains, half tests."""
    from larq_meta.tasks import Task, TaskSequence

    rng = np.random.default_rng(seed)
    tasks = []
    for k in range(num_tasks):
        w = rng.normal(size=(dim, 4))
        x = rng.normal(size=(n, dim)).astype("float32")
        y = np.argmax(x @ w, axis=1).astype("int64")
        half = n // 2
        tasks.append(Task(f"t{k + 1}", train=(x[:half], y[:half]), test=(x[half:], y[half:])))
    return TaskSequence(tasks, name="synthetic")


def small_model(m=1.0, seed=0, width=32, learning_rate=0.01):
    """The paper BNN at test size (20 inputs, two hidden layers of `width`, 4 classes),
    compiled with MetaplasticAdam(learning_rate, m=m); initialised from `seed`."""
    tf.keras.utils.set_random_seed(seed)
    return larq_meta.models.compiled_paper_mlp(
        (width, width), m=m, learning_rate=learning_rate, num_classes=4, input_shape=(20,),
        jit_compile=False,
    )


def ewc_penalty_numpy(weights, fishers, anchors, lambda_: float) -> float:
    """`lambda/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)²` in float64: the reference the
    EWC tests compare the TensorFlow penalty with."""
    total = 0.0
    for fisher, anchor in zip(fishers, anchors):
        for name, f in fisher.items():
            diff = np.asarray(weights[name], np.float64) - np.asarray(anchor[name], np.float64)
            total += float(np.sum(np.asarray(f, np.float64) * diff**2))
    return 0.5 * lambda_ * total
