"""`MetaplasticAdam(relaxation=r, relaxation_bound=b)` (issue #18): the bounded relaxation of
hidden weights, against a numpy reference written from its equation, through the shared
optimizer harness, and off by default (the paper's rule, bit for bit).

The rule (after the paper's update of a binarized kernel `v`):
    v <- v - r * sign(v) * max(|v| - b, 0)
"""

from __future__ import annotations

import numpy as np
import pytest

import larq_meta  # noqa: F401  (first: makes tf.keras tf-keras)
import tensorflow as tf

import harness
from harness import (
    binarized_kernels,
    metaplastic_step,
    mixed_model,
    random_gradients,
    run_optimizer,
    spread_weights,
)
from larq_meta import MetaplasticAdam

ARGS = dict(learning_rate=0.01, beta_1=0.85, beta_2=0.995, epsilon=1e-8)


def relaxed_reference(initial, grads, targets, *, m, rate, bound, lr, beta_1, beta_2, epsilon,
                      weight_decay=0.0):
    """float64: the paper's step (harness.metaplastic_step), then, on binarized kernels,
    `v - rate * sign(v) * max(|v| - bound, 0)`."""
    v = [np.asarray(w, np.float64).copy() for w in initial]
    m1 = [np.zeros_like(w) for w in v]
    m2 = [np.zeros_like(w) for w in v]
    for t, step in enumerate(grads, start=1):
        for i, g in enumerate(step):
            v[i], m1[i], m2[i] = metaplastic_step(
                v[i], g, m1[i], m2[i], t, lr=lr, m=m if targets[i] else None, beta_1=beta_1,
                beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay,
            )
            if targets[i]:
                excess = np.maximum(np.abs(v[i]) - bound, 0.0)
                v[i] = v[i] - rate * np.sign(v[i]) * excess
    return v, m1, m2


@pytest.mark.parametrize(
    "mode, m, rate, bound, weight_decay",
    [
        ("function", 1.3, 0.05, 0.5, 0.0),
        ("fit", 2.0, 0.02, 1.0, 1e-3),
        ("function", 0.0, 0.05, 0.0, 0.0),  # m = 0: Adam, plus the relaxation on kernels
    ],
)
def test_relaxation_matches_numpy_reference(mode, m, rate, bound, weight_decay):
    model = mixed_model(harness.ReplayGradients) if mode == "fit" else mixed_model()
    initial = spread_weights(model, seed=4)
    grads = random_gradients(model, steps=40, seed=5)
    optimizer = MetaplasticAdam(m=m, relaxation=rate, relaxation_bound=bound,
                                weight_decay=weight_decay, **ARGS)
    run_optimizer(mode, model, optimizer, grads)
    kernels = binarized_kernels(model)
    targets = [v.ref() in kernels for v in model.trainable_variables]
    hyper = dict(lr=ARGS["learning_rate"], beta_1=ARGS["beta_1"], beta_2=ARGS["beta_2"],
                 epsilon=ARGS["epsilon"], weight_decay=weight_decay)
    expected = relaxed_reference(initial, grads, targets, m=m, rate=rate, bound=bound, **hyper)
    harness.assert_matches_reference(model, optimizer, expected)
    # The relaxation changes the result (so the comparison can fail), on kernels only.
    plain = relaxed_reference(initial, grads, targets, m=m, rate=0.0, bound=bound, **hyper)
    for i, target in enumerate(targets):
        gap = np.max(np.abs(plain[0][i] - expected[0][i]))
        assert (gap > 1e-2) if target else (gap == 0), (i, gap)


def test_relaxation_keeps_signs_and_bound():
    """Relaxation alone (zero gradients, so Adam's update is 0) never flips a sign nor pulls
    a weight inside ±bound; above the bound, the excess shrinks by (1 - r) per step."""
    model = mixed_model()
    initial = spread_weights(model, seed=2)
    zeros = [[np.zeros(v.shape, np.float32) for v in model.trainable_variables]] * 3
    rate, bound = 0.3, 0.8
    run_optimizer("eager", model, MetaplasticAdam(m=1.0, relaxation=rate,
                                                  relaxation_bound=bound), zeros)
    kernels = binarized_kernels(model)
    for v, before in zip(model.trainable_variables, initial):
        after = v.numpy()
        if v.ref() not in kernels:
            np.testing.assert_array_equal(after, before)
            continue
        assert np.all(np.sign(after) == np.sign(before))
        expected = np.where(np.abs(before) > bound,
                            np.sign(before) * (bound + (1 - rate) ** 3 * (np.abs(before) - bound)),
                            before)
        np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)


def test_off_by_default_is_the_paper_rule_bit_for_bit():
    """`relaxation=0` (any bound) trains exactly as the default, and adds nothing to the
    config (so configs saved before the option are unchanged)."""
    harness.assert_same_training(lambda: MetaplasticAdam(m=1.3, **ARGS),
                                 lambda: MetaplasticAdam(m=1.3, relaxation=0.0,
                                                         relaxation_bound=0.7, **ARGS))
    config = MetaplasticAdam(m=1.3).get_config()
    assert "relaxation" not in config and "relaxation_bound" not in config


def test_relaxation_through_the_harness(tmp_path):
    """Config round trip (same updates bit for bit), `.keras` save/load with the next epoch
    equal, and training on real labels. The harness' reference knows only the paper's rule,
    so the reference comparison is the test above."""
    make = lambda: MetaplasticAdam(m=1.35, relaxation=0.01, relaxation_bound=0.3, **ARGS)  # noqa: E731
    config = make().get_config()
    assert config["relaxation"] == 0.01 and config["relaxation_bound"] == 0.3
    harness.run_optimizer_test(make, tmp_path, reference=False)
    clone = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(make()))
    assert (clone.relaxation, clone.relaxation_bound) == (0.01, 0.3)


@pytest.mark.parametrize(
    "kwargs",
    [{"relaxation": -0.1}, {"relaxation": 1.5}, {"relaxation": float("nan")},
     {"relaxation": True}, {"relaxation_bound": -1.0}, {"relaxation_bound": "1"}],
)
def test_bad_relaxation_is_rejected(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        MetaplasticAdam(**kwargs)
