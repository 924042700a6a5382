"""Hidden-weight analysis: weights, sign-flip importance, Fisher correlation, the quadratic toy."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta import analysis
from larq_meta.analysis import (
    binary_quadratic_descent,
    binarized_layers,
    correlation,
    fisher_correlation,
    flip_importance,
    hidden_weights,
    quadratic_flip_costs,
    quadratic_problem,
    quadratic_toy,
)
from larq_meta.consolidation import empirical_fisher


def tiny_bnn(seed=0, units=(6,), features=20):
    tf.keras.utils.set_random_seed(seed)
    model = larq_meta.models.paper_mlp(hidden_units=units, input_shape=(features,), init_width=0.4)
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n, seed, features=20):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, features), dtype=np.uint8), rng.integers(0, 10, n)


def test_hidden_weights_are_copies_of_the_latent_values():
    model = tiny_bnn(units=(6, 5))
    weights = hidden_weights(model)
    assert list(weights) == ["dense_1", "dense_2", "dense_3"]
    assert weights["dense_1"].shape == (20, 6) and weights["dense_3"].shape == (5, 10)
    kernel = model.get_layer("dense_2").kernel
    np.testing.assert_array_equal(weights["dense_2"], kernel.latent_variable.numpy())
    assert len(np.unique(np.abs(weights["dense_2"]))) > 2  # real values, not signs
    weights["dense_2"][:] = 0  # a copy
    assert np.any(kernel.latent_variable.numpy() != 0)
    assert hidden_weights(larq_meta.models.float_mlp(hidden_units=(4,))) == {}
    assert list(binarized_layers(larq_meta.models.binary_convnet(filters=(4, 4)))) == [
        "conv_1", "conv_2", "dense_3"]


def test_correlation_against_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    result = correlation(a, 2 * a + 0.5 * b)
    assert result["pearson"] == pytest.approx(np.corrcoef(a, 2 * a + 0.5 * b)[0, 1])
    assert correlation(a, np.exp(a))["spearman"] == pytest.approx(1.0)  # monotone, not linear
    assert correlation(a, -a**3)["spearman"] == pytest.approx(-1.0)
    # ties share their average rank (as scipy.stats.rankdata)
    np.testing.assert_allclose(analysis._ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
    assert np.isnan(correlation(a, np.ones(50))["pearson"])
    with pytest.raises(ValueError):
        correlation(a, a[:10])


def test_flip_importance_matches_flipping_by_hand_and_restores_weights():
    model = tiny_bnn(units=(8,))
    x, y = data(40, seed=1)
    before = hidden_weights(model)
    table = flip_importance(model, (x, y), "dense_2", bins=4, sample=None, runs=1, batch_size=16)
    for name, w in hidden_weights(model).items():
        np.testing.assert_array_equal(w, before[name])  # restored exactly
    kernel = model.get_layer("dense_2").kernel.latent_variable
    w = before["dense_2"]
    assert table.count.sum() == w.size and table.count.max() - table.count.min() <= 1  # quantiles

    def loss():
        out = model(tf.constant(x, tf.float32) / 255.0, training=False)
        nll = tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
        return float(tf.reduce_mean(nll))

    base = loss()
    assert table.base_loss == pytest.approx(base, rel=1e-5)
    which = np.clip(np.searchsorted(table.edges, np.abs(w), side="right") - 1, 0, 3)
    for k in range(4):
        kernel.assign(np.where(which == k, -w, w))  # flip the whole bin
        assert table.loss_increase[k] == pytest.approx(loss() - base, rel=1e-4, abs=1e-6)
        assert table.mean_abs[k] == pytest.approx(np.abs(w[which == k]).mean(), rel=1e-5)
        kernel.assign(w)
    assert "loss increase" in str(table)
    json.dumps(table.to_dict())
    with pytest.raises(ValueError, match="binarized layer"):
        flip_importance(model, (x, y), "bn_1")


@pytest.mark.slow
def test_flip_importance_grows_with_hidden_weight_magnitude_on_mnist():
    """The paper's Fig. 5c-e on real MNIST: flipping the signs of large-|W_h| weights costs more."""
    from larq_meta.datasets import DatasetNotFoundError

    try:
        model, (x, y) = analysis.train_mnist_bnn(
            1.35, width=128, epochs=1, train_size=10000, seed=3)
    except DatasetNotFoundError as error:  # pragma: no cover - data is part of the setup
        pytest.skip(f"MNIST not available: {error}")
    table = flip_importance(
        model, (x[:4000], y[:4000]), "dense_2", bins=5, sample=300, runs=2, seed=3)
    increase = table.loss_increase
    assert increase[-1] > 2 * increase[0] + 0.005  # the largest |W_h| bin costs clearly more
    assert correlation(np.arange(5), increase)["spearman"] >= 0.7  # and it grows overall
    assert np.all(np.diff(table.mean_abs) > 0)


def test_fisher_correlation():
    model = tiny_bnn(units=(6, 5))
    x, y = data(30, seed=2)
    layers = binarized_layers(model)
    # a Fisher that is a monotone function of |W_h| correlates perfectly (rank)
    fake = {v.name: np.abs(v.numpy()) ** 2 for v in layers.values()}
    perfect = fisher_correlation(model, (x, y), fisher=fake)
    assert set(perfect) == {"dense_1", "dense_2", "dense_3", "all"}
    assert all(perfect[name]["spearman"] == pytest.approx(1.0) for name in layers)
    assert perfect["all"]["n"] == 20 * 6 + 6 * 5 + 5 * 10
    # computed: the same as correlating by hand with empirical_fisher
    fisher = empirical_fisher(model, (x, y), 30)
    result = fisher_correlation(model, (x, y), 30)
    for name, v in layers.items():
        expected = correlation(np.abs(v.numpy()), fisher[v.name])
        assert result[name]["spearman"] == pytest.approx(expected["spearman"], abs=1e-6)


def test_fisher_of_a_layer_with_binary_inputs_is_one_value_per_neuron():
    """Finding: the gradient of W_ij is x_i * delta_j with x_i = ±1 after the sign activation, so
    the diagonal Fisher of a hidden binarized layer is constant over its inputs i: EWC on a BNN
    weighs neurons, not synapses (the first layer, with real-valued pixels, is not affected)."""
    model = tiny_bnn(units=(6, 5))
    fisher = empirical_fisher(model, data(30, seed=3), 30)
    for name in ("dense_2/kernel:0", "dense_3/kernel:0"):
        f = fisher[name]
        np.testing.assert_allclose(f, np.broadcast_to(f[:1], f.shape), rtol=1e-5)
        assert np.ptp(f[0]) > 0  # but it differs between neurons
    f1 = fisher["dense_1/kernel:0"]
    assert np.ptp(f1[:, 0]) > 0.1 * f1[:, 0].max()


def test_quadratic_descent_matches_a_numpy_reference():
    problem = quadratic_problem(6, seed=3)
    H, star = problem.hessian, problem.theta_star
    for m in (0.0, 1.3):
        trajectory, loss = binary_quadratic_descent(problem, eta=0.05, steps=3, m=m)
        theta = problem.theta_init.copy()
        for t in range(3):
            s = np.where(theta >= 0, 1.0, -1.0)
            u = 0.05 * H @ (s - star)
            if m:
                u = np.where(s * u > 0, (1 - np.tanh(m * abs(theta)) ** 2) * u, u)
            theta = theta - u
            np.testing.assert_allclose(trajectory[t + 1], theta, rtol=1e-12)
            diff = np.where(theta >= 0, 1.0, -1.0) - star
            assert loss[t + 1] == pytest.approx(0.5 * diff @ H @ diff)
    assert np.allclose(H, H.T) and np.linalg.eigvalsh(H).min() >= 10.5 - 1e-9


def test_flip_costs_are_exact():
    problem = quadratic_problem(8, seed=4)
    theta = np.random.default_rng(0).normal(size=8)
    s = np.where(theta >= 0, 1.0, -1.0)
    costs = quadratic_flip_costs(problem, theta)
    for i in range(8):
        flipped = s.copy()
        flipped[i] = -flipped[i]
        assert costs[i] == pytest.approx(problem.loss(flipped) - problem.loss(s), rel=1e-9)


def test_toy_hidden_weight_magnitude_tracks_the_cost_of_a_flip():
    result = quadratic_toy(d=200, eta=0.01, steps=300, seed=2)
    assert result.trajectory.shape == (301, 200) and result.loss.shape == (301,)
    assert result.loss[-1] < 0.6 * result.loss[0]  # it learns
    assert result.correlations["flip_cost"]["spearman"] > 0.9
    assert result.correlations["flip_cost"]["pearson"] > 0.85
    # a rotated H has an almost constant diagonal: no relation there
    assert abs(result.correlations["hessian_diagonal"]["spearman"]) < 0.3
    means = result.binned["flip_cost_mean"]
    assert means[-1] > means[0] and sum(result.binned["count"]) == 200
    # with a diagonal H whose curvatures differ, the curvature shows up as well
    diagonal = quadratic_toy(d=200, eta=0.01, steps=300, seed=2, rotate=False, eigenvalues=(1, 40))
    assert diagonal.correlations["hessian_diagonal"]["spearman"] > 0.2
    # metaplastic damping changes the trajectory but keeps the relation
    meta = quadratic_toy(d=200, eta=0.01, steps=300, seed=2, m=1.0)
    assert not np.allclose(meta.theta_h, result.theta_h)
    assert meta.correlations["flip_cost"]["spearman"] > 0.9


def test_toy_defaults_follow_the_notebook():
    result = quadratic_toy(d=2)
    assert (result.eta, result.steps) == (0.35, 500)
    np.testing.assert_array_equal(result.problem.theta_star, [1.5, 0.5])
    np.testing.assert_array_equal(result.trajectory[0], [0.01, 0.02])
    big = quadratic_problem(500, seed=1)
    eig = np.linalg.eigvalsh(big.hessian)
    assert 10.5 <= eig.min() and eig.max() <= 29.5 and np.abs(big.theta_star).max() <= 4


def test_plots_and_command_line(tmp_path):
    two = analysis.plot_quadratic_toy(quadratic_toy(d=2, steps=50), str(tmp_path / "two.png"))
    many = analysis.plot_quadratic_toy(quadratic_toy(d=30, steps=50), str(tmp_path / "many.png"))
    model = tiny_bnn(units=(8,))
    x, y = data(30, seed=5)
    tables = [flip_importance(model, (x, y), layer, bins=3, sample=5)
              for layer in ("dense_1", "dense_2")]
    flips = analysis.plot_flip_importance(tables, str(tmp_path / "flips.png"))
    for path in (two, many, flips):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "toy"
    assert analysis.toy_main(["--d", "2", "20", "--steps", "30", "--output", str(out)]) == 0
    summary = json.loads((out / "toy.json").read_text())
    assert set(summary) == {"d=2", "d=20"} and "trajectory" in summary["d=2"]
    assert os.path.exists(out / "toy_d20.png")
