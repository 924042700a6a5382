"""EWC and random consolidation: Fisher, penalty, its place in `fit`'s loss, the shuffle."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta.consolidation import (
    EWC,
    RandomConsolidation,
    consolidated_variables,
    empirical_fisher,
    shuffle_fisher,
)
from larq_meta.callbacks import TaskCallback
from larq_meta.tasks import Task, from_arrays
from larq_meta.training import train_sequence

from checks import ewc_penalty_numpy


def task(x, y, name="t"):
    return Task(name, (x, y), (x, y))


def data(n, seed, features=784):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, features), dtype=np.uint8)
    return x, rng.integers(0, 10, n).astype(np.uint8)


def tiny_bnn(seed=0, units=(6,), features=784):
    tf.keras.utils.set_random_seed(seed)
    model = larq_meta.models.paper_mlp(hidden_units=units, input_shape=(features,), init_width=0.4)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.0),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def per_sample_fisher(model, x, y, variables, from_logits=True):
    """Reference: a GradientTape per sample, batch size 1, mean of squared gradients."""
    totals = [np.zeros(v.shape) for v in variables]
    for i in range(len(x)):
        xi = tf.constant(x[i : i + 1], tf.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
        with tf.GradientTape() as tape:
            out = model(xi, training=False)
            nll = tf.keras.losses.sparse_categorical_crossentropy(
                y[i : i + 1], out, from_logits=from_logits)
        for total, g in zip(totals, tape.gradient(nll, variables)):
            total += np.square(g.numpy())
    return [t / len(x) for t in totals]


def test_fisher_matches_a_per_sample_gradient_loop():
    model = tiny_bnn(units=(5, 4), features=20)
    x, y = data(11, seed=1, features=20)
    variables = consolidated_variables(model)
    assert [v.name for v in variables] == [f"dense_{i}/kernel:0" for i in (1, 2, 3)]
    fisher = empirical_fisher(model, (x, y), fisher_samples=11, fisher_batch_size=4)  # chunks 4, 4, 3
    expected = per_sample_fisher(model, x, y, variables)
    for v, e in zip(variables, expected):
        assert np.abs(e).max() > 0
        np.testing.assert_allclose(fisher[v.name], e, rtol=1e-4, atol=1e-12)
    # a subset of samples: a seeded random choice, reproducible
    sub = empirical_fisher(model, (x, y), fisher_samples=5, seed=3)
    with pytest.warns(DeprecationWarning, match="num_samples"):  # the old names still work
        again = empirical_fisher(model, (x, y), num_samples=5, seed=3)
    np.testing.assert_array_equal(sub["dense_1/kernel:0"], again["dense_1/kernel:0"])
    assert not np.allclose(sub["dense_1/kernel:0"], fisher["dense_1/kernel:0"])
    # a tf.data.Dataset gives the same Fisher as the arrays
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    from_ds = empirical_fisher(model, ds, 11, seed=None)
    np.testing.assert_allclose(from_ds["dense_2/kernel:0"], fisher["dense_2/kernel:0"], rtol=1e-5)


def test_fisher_of_a_linear_softmax_model_is_analytic():
    """Per-sample gradient of -log softmax(xW + b)[y] is x^T (p - onehot(y)), (p - onehot(y))."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    y = rng.integers(0, 4, 9)
    inputs = tf.keras.Input((3,))
    dense = tf.keras.layers.Dense(4, activation="softmax", kernel_initializer="glorot_normal",
                                  bias_initializer="random_normal")
    model = tf.keras.Model(inputs, dense(inputs))
    model.compile(loss="sparse_categorical_crossentropy")  # probabilities: from_logits=False
    fisher = empirical_fisher(model, (x, y), 100, apply_to="all")
    w, b = dense.kernel.numpy(), dense.bias.numpy()
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p - np.eye(4)[y]
    expected_kernel = np.mean(x[:, :, None] ** 2 * delta[:, None, :] ** 2, axis=0)
    np.testing.assert_allclose(fisher[dense.kernel.name], expected_kernel, rtol=1e-4)
    np.testing.assert_allclose(fisher[dense.bias.name], np.mean(delta**2, 0), rtol=1e-4)


def test_variable_selection_excludes_batchnorm():
    inputs = tf.keras.Input((7,))
    h = lq.layers.QuantDense(5, use_bias=False, kernel_quantizer="ste_sign", name="binary")(inputs)
    h = tf.keras.layers.BatchNormalization(name="bn")(h)
    out = tf.keras.layers.Dense(3, name="float")(h)
    model = tf.keras.Model(inputs, out)
    assert [v.name for v in consolidated_variables(model)] == ["binary/kernel:0"]
    assert sorted(v.name for v in consolidated_variables(model, "all")) == [
        "binary/kernel:0", "float/bias:0", "float/kernel:0"]
    float_model = larq_meta.models.float_mlp(hidden_units=(4,))
    with pytest.raises(ValueError, match="no binarized"):
        consolidated_variables(float_model)
    with pytest.raises(ValueError):
        consolidated_variables(model, "kernels")


def weights_of(model):
    return {v.name: v.numpy().copy() for v in consolidated_variables(model)}


def perturb(model, seed):
    rng = np.random.default_rng(seed)
    for v in consolidated_variables(model):
        v.assign(rng.uniform(-0.5, 0.5, v.shape).astype(np.float32))


@pytest.mark.parametrize("penalty_on", ["hidden", "sign"])
def test_penalty_against_numpy_over_two_tasks(penalty_on):
    model = tiny_bnn(units=(5,), features=12)
    tasks = [data(20, seed=3, features=12), data(20, seed=4, features=12)]
    ewc = EWC(lambda_=1e4, fisher_samples=15, penalty_on=penalty_on)
    ewc.attach(model)
    assert float(ewc.penalty()) == 0.0 and float(tf.add_n(model.losses)) == 0.0
    fishers, anchors = [], []
    for k in range(2):
        anchors.append(weights_of(model))
        # each task's Fisher is computed on its own data, samples chosen with seed + k (seed 1 by default)
        expected_fisher = empirical_fisher(model, tasks[k], 15, seed=1 + k)
        ewc.on_task_end(k, task(*tasks[k]))
        fishers.append(ewc.last_fisher)
        for name, f in expected_fisher.items():
            np.testing.assert_array_equal(ewc.last_fisher[name], f)
        perturb(model, seed=10 + k)
    assert ewc.consolidated_tasks == [0, 1] and ewc.tasks_consolidated == 2
    assert any(not np.allclose(fishers[0][n], fishers[1][n]) for n in fishers[0])
    now = weights_of(model)
    if penalty_on == "sign":
        sign = lambda d: {k: np.where(v >= 0, 1.0, -1.0) for k, v in d.items()}  # noqa: E731
        now, anchors = sign(now), [sign(a) for a in anchors]
    expected = ewc_penalty_numpy(now, fishers, anchors, 1e4)
    assert expected > 1e-3
    assert float(ewc.penalty()) == pytest.approx(expected, rel=1e-4)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_penalty_is_zero_during_the_first_task_and_in_the_fit_loss_after():
    model = tiny_bnn(units=(5,), features=12)
    x1, y1 = data(16, seed=5, features=12)
    x2, y2 = data(16, seed=6, features=12)
    ewc = EWC(lambda_=2e4, fisher_samples=16)

    def training_loss(x, y):  # what fit computes for one full batch (training-mode BatchNorm)
        out = model(tf.constant(x, tf.float32) / 255.0, training=True)
        return float(tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)))

    expected_1 = training_loss(x1, y1)
    ewc.on_task_begin(0, task(x1, y1))
    h1 = model.fit(x1.astype(np.float32) / 255.0, y1, batch_size=16, epochs=1, shuffle=False,
                   verbose=0, callbacks=[ewc])
    ewc.on_task_end(0, task(x1, y1))
    assert h1.history["loss"][0] == pytest.approx(expected_1, rel=1e-5)  # no penalty yet
    assert ewc.tasks_consolidated == 1 and float(ewc.penalty()) == 0.0  # weights = anchors
    anchors, fisher = weights_of(model), ewc.last_fisher
    perturb(model, seed=7)  # SGD(0) keeps the weights, so the penalty is known exactly
    penalty = ewc_penalty_numpy(weights_of(model), [fisher], [anchors], 2e4)
    assert penalty > 1e-3
    expected_2 = training_loss(x2, y2) + penalty
    ewc.on_task_begin(1, task(x2, y2))
    h2 = model.fit(x2.astype(np.float32) / 255.0, y2, batch_size=16, epochs=1, shuffle=False,
                   verbose=0, callbacks=[ewc])
    ewc.on_task_end(1, task(x2, y2))
    assert h2.history["loss"][0] == pytest.approx(expected_2, rel=1e-4)
    assert ewc.tasks_consolidated == 2


def test_deprecated_tasks_argument_gives_each_task_its_data():
    model = tiny_bnn(units=(5,), features=12)
    data_sets = [data(16, seed=5, features=12), data(16, seed=6, features=12)]
    with pytest.warns(DeprecationWarning, match="tasks"):
        ewc = EWC(lambda_=1.0, fisher_samples=16, tasks=data_sets)
    ewc.attach(model)
    ewc.on_task_end(1, None)  # the data of task 2 comes from `tasks`, not from the hook
    for name, f in empirical_fisher(model, data_sets[1], 16, seed=2).items():
        np.testing.assert_array_equal(ewc.last_fisher[name], f)
    with pytest.raises(RuntimeError, match="gave data for 2 tasks"):
        ewc.on_task_end(2, None)


def test_penalty_reaches_a_model_that_was_trained_before():
    """A model fit before the callback existed gets its train function rebuilt with the penalty."""
    model = tiny_bnn(units=(5,), features=12)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data(16, seed=8, features=12)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # traces a train function
    ewc = EWC(lambda_=1e9, fisher_samples=16)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ewc])
    ewc.on_task_end(0, task(x, y))
    anchors = weights_of(model)
    perturb(model, seed=9)
    before = weights_of(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ewc])
    after = weights_of(model)
    for name, importance in ewc.last_importance.items():
        # the huge penalty dominates the gradient: weights that matter step towards their
        # anchors (without the penalty in the train step, about half would)
        strong = importance > np.median(importance)
        closer = np.abs(after[name] - anchors[name]) < np.abs(before[name] - anchors[name])
        assert closer[strong].mean() > 0.9


def test_random_consolidation_is_a_permutation_of_the_fisher():
    model = tiny_bnn(units=(6, 6), features=12)
    x, y = data(20, seed=11, features=12)
    ewc = RandomConsolidation(lambda_=1.0, fisher_samples=20, seed=4)
    assert ewc.shuffle_fisher
    ewc.attach(model)
    added = ewc.consolidate((x, y))
    for variable, accumulated in zip(ewc._targets, ewc._importance):
        f, s = ewc.last_fisher[variable.name], added[variable.name]
        assert s.shape == f.shape
        np.testing.assert_array_equal(np.sort(s.ravel()), np.sort(f.ravel()))  # same multiset
        assert not np.array_equal(s, f)  # but moved around
        np.testing.assert_array_equal(accumulated.numpy(), s)  # and that is what is used
    # the plain function: reproducible with a seed, per array
    fisher = {"a": np.arange(12.0).reshape(3, 4), "b": np.arange(5.0)}
    one, two = shuffle_fisher(fisher, seed=1), shuffle_fisher(fisher, seed=1)
    for k in fisher:
        np.testing.assert_array_equal(one[k], two[k])
        np.testing.assert_array_equal(np.sort(one[k].ravel()), fisher[k].ravel())


def test_recorded_fisher_data_uses_the_last_samples_seen():
    model = tiny_bnn(units=(5,), features=12)
    x, y = data(30, seed=12, features=12)
    ewc = EWC(lambda_=1.0, fisher_samples=20, fisher_data="recorded")
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0, callbacks=[ewc])
    ewc.on_task_end(0, None)
    # the last 20 samples of the epoch, as fed to the model (ring buffer: batch 3 overwrote
    # batch 1's slots); the Fisher on exactly those equals the callback's
    recorded_x = np.concatenate([x[20:30], x[10:20]]).astype(np.float32)
    recorded_y = np.concatenate([y[20:30], y[10:20]])
    direct = empirical_fisher(model, (recorded_x, recorded_y), 20)
    for name, f in direct.items():
        np.testing.assert_allclose(ewc.last_fisher[name], f, rtol=1e-5)
    other = empirical_fisher(model, (x[:20].astype(np.float32), y[:20]), 20)
    assert any(not np.allclose(other[n], f, rtol=1e-3) for n, f in direct.items())


class AnchorRecorder(TaskCallback):
    """After EWC consolidated a task: the weights (anchors) and that task's Fisher."""

    def __init__(self, ewc):
        super().__init__()
        self.ewc, self.anchors, self.fishers = ewc, [], []

    def on_task_end(self, task_index, task=None, logs=None):
        self.anchors.append(weights_of(self.model))
        self.fishers.append(self.ewc.last_fisher)


def test_ewc_through_train_sequence():
    tasks = from_arrays([(*data(60, 13), *data(20, 14)), (*data(60, 15), *data(20, 16))])
    model = tiny_bnn(units=(8,))
    model.compile(
        optimizer=larq_meta.MetaplasticAdam(0.01, m=0.0),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ewc = EWC(lambda_=5000, fisher_samples=30)
    recorder = AnchorRecorder(ewc)
    train_sequence(model, tasks, epochs_per_task=1, batch_size=20, callbacks=[ewc, recorder],
                   shuffle_seed=1, progress=False)
    assert ewc.consolidated_tasks == [0, 1]
    # the penalty after the sequence is exactly lambda/2 sum_k F_k (theta - theta*_k)^2;
    # right after task 2 the weights are task 2's anchors, so only task 1's term remains
    expected = ewc_penalty_numpy(weights_of(model), recorder.fishers, recorder.anchors, 5000)
    assert expected > 0
    assert float(ewc.penalty()) == pytest.approx(expected, rel=1e-4)
    state = ewc.get_state()
    assert state["consolidated_tasks"] == [0, 1] and len(state["importance"]) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_": -1.0}, "lambda_"),
        ({"lambda_": float("nan")}, "lambda_"),
        ({"fisher_samples": 0}, "fisher_samples"),
        ({"apply_to": "kernels"}, "apply_to"),
        ({"fisher_data": "batches"}, "fisher_data"),
        ({"penalty_on": "binary"}, "penalty_on"),
        ({"fisher_batch_size": 0}, "fisher_batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EWC(**kwargs)
