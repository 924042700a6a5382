"""Hidden-weight analyses: binarized variables, sign-flip importance, Fisher correlation,
the MNIST model of `larq-meta analyze` and the command itself."""

import json
import warnings

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta.cli import main
from larq_meta.consolidation import empirical_fisher
from larq_meta.hidden_weights import (
    binarized_variables,
    correlation,
    fisher_correlation,
    flip_importance,
    hidden_weights,
    train_mnist_bnn,
)


def tiny_bnn(seed=0, units=(6,), features=20):
    tf.keras.utils.set_random_seed(seed)
    model = larq_meta.models.paper_mlp(hidden_units=units, input_shape=(features,), init_width=0.4)
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n, seed, features=20):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, features), dtype=np.uint8), rng.integers(0, 10, n)


def mean_loss(model, x, y):
    """The mean cross-entropy of the true labels, computed here (not by the module)."""
    out = model(tf.constant(x, tf.float32) / 255.0, training=False)
    return float(tf.reduce_mean(
        tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)))


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
    assert list(binarized_variables(larq_meta.models.binary_convnet(filters=(4, 4)))) == [
        "conv_1", "conv_2", "dense_3"]


def test_binarized_variables_are_the_precision_1_ones():
    """A layer with two binarized variables names both; a precision-2 kernel is not one."""
    inputs = tf.keras.Input((6, 6, 2))
    both = lq.layers.QuantSeparableConv2D(
        3, 3, depthwise_quantizer="ste_sign", pointwise_quantizer="ste_sign", name="both")(inputs)
    ternary = lq.layers.QuantConv2D(2, 1, kernel_quantizer="ste_tern", name="ternary")(both)
    found = binarized_variables(tf.keras.Model(inputs, ternary))
    assert list(found) == ["both/depthwise_kernel", "both/pointwise_kernel"]
    assert [v.shape.as_list() for v in found.values()] == [[3, 3, 2, 1], [1, 1, 2, 3]]
    assert all(larq_meta.optimizers.is_binarized(v) for v in found.values())


def test_correlation_against_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    result = correlation(a, 2 * a + 0.5 * b)
    assert result["pearson"] == pytest.approx(np.corrcoef(a, 2 * a + 0.5 * b)[0, 1])
    assert result["n"] == 50
    assert correlation(a, np.exp(a))["spearman"] == pytest.approx(1.0)  # monotone, not linear
    assert correlation(a, -a**3)["spearman"] == pytest.approx(-1.0)
    # Spearman = Pearson of the ranks, ties sharing their average rank (as scipy.stats.rankdata)
    ties = correlation([3.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0])
    assert ties["spearman"] == pytest.approx(np.corrcoef([3.5, 1, 3.5, 2], [1, 2, 3, 4])[0, 1])
    order = np.argsort(np.argsort(b)) + 1.0
    assert correlation(a, b)["spearman"] == pytest.approx(
        np.corrcoef(np.argsort(np.argsort(a)) + 1.0, order)[0, 1])
    assert np.isnan(correlation(a, np.ones(50))["pearson"])
    with pytest.raises(ValueError, match="50 values against 10"):
        correlation(a, a[:10])


def test_flip_importance_matches_flipping_by_hand_and_restores_weights():
    model = tiny_bnn(units=(8,))
    x, y = data(40, seed=1)
    before = hidden_weights(model)
    table = flip_importance(model, (x, y), "dense_2", bins=4, sample=None, runs=1,
                            eval_batch_size=16)
    for name, w in hidden_weights(model).items():
        np.testing.assert_array_equal(w, before[name])  # restored exactly
    kernel = model.get_layer("dense_2").kernel.latent_variable
    w = before["dense_2"]
    assert table.count.sum() == w.size and table.count.max() - table.count.min() <= 1  # quantiles
    np.testing.assert_array_equal(table.flipped, table.count)  # sample=None: the whole bin
    base = mean_loss(model, x, y)
    assert table.base_loss == pytest.approx(base, rel=1e-5)
    which = np.clip(np.searchsorted(table.edges, np.abs(w), side="right") - 1, 0, 3)
    for k in range(4):
        kernel.assign(np.where(which == k, -w, w))  # flip the whole bin
        assert table.loss_increase[k] == pytest.approx(mean_loss(model, x, y) - base,
                                                       rel=1e-4, abs=1e-6)
        assert table.mean_abs[k] == pytest.approx(np.abs(w[which == k]).mean(), rel=1e-5)
        kernel.assign(w)
    np.testing.assert_allclose(table.relative_magnitude, table.mean_abs / np.abs(w).max())
    np.testing.assert_allclose(table.per_weight, table.loss_increase / table.count)
    np.testing.assert_array_equal(table.loss_increase_std, 0)  # one run, nothing to vary
    assert "loss increase" in str(table) and str(table).count("\n") == 4 + 1
    assert json.loads(json.dumps(table.to_dict()))["count"] == table.count.tolist()


def test_flip_importance_draws_are_seeded_and_uniform_bins_equal_width():
    model = tiny_bnn(units=(8,))
    x, y = data(40, seed=1)
    args = dict(layer="dense_1", bins=3, sample=5, runs=2, binning="uniform")
    first, again = flip_importance(model, (x, y), **args), flip_importance(model, (x, y), **args)
    np.testing.assert_array_equal(first.loss_increase, again.loss_increase)  # same seed
    other = flip_importance(model, (x, y), **args, seed=5)
    assert not np.allclose(other.mean_abs, first.mean_abs)  # other draws
    w = np.abs(hidden_weights(model)["dense_1"])
    np.testing.assert_allclose(first.edges, np.linspace(0, w.max(), 4))
    np.testing.assert_array_equal(first.count, np.histogram(w, first.edges)[0])
    np.testing.assert_array_equal(first.flipped, np.minimum(first.count, 5))
    # a dataset, or the first `num_samples` samples, give the loss of those samples
    part = flip_importance(model, (x, y), **args, eval_samples=25)
    assert part.base_loss == pytest.approx(mean_loss(model, x[:25], y[:25]), rel=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    assert flip_importance(model, dataset, **args, eval_samples=25).base_loss == pytest.approx(
        part.base_loss, rel=1e-6)
    with pytest.warns(DeprecationWarning, match="`num_samples` is deprecated; use `eval_samples`"):
        old = flip_importance(model, (x, y), **args, num_samples=25, batch_size=7)
    np.testing.assert_allclose(old.loss_increase, part.loss_increase, atol=1e-5)  # same samples
    with pytest.raises(TypeError, match="unexpected keyword argument.*samples"):
        flip_importance(model, (x, y), samples=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": "bn_1"}, "No binarized variable 'bn_1'"),
        ({"bins": 0}, "`bins` must be a positive int"),
        ({"runs": 0}, "`runs` must be a positive int"),
        ({"sample": 0}, "`sample` must be a positive int"),
        ({"eval_samples": 0}, "`eval_samples` must be a positive int"),
        ({"eval_batch_size": -1}, "`eval_batch_size` must be a positive int"),
        ({"binning": "log"}, '`binning` must be "quantile" or "uniform"'),
    ],
)
def test_flip_importance_refuses_bad_values_by_name(kwargs, message):
    model = tiny_bnn()
    with pytest.raises(ValueError, match=message):
        flip_importance(model, data(10, seed=0), **kwargs)


def test_flip_importance_needs_binarized_variables_and_data():
    with pytest.raises(ValueError, match="no binarized variable"):
        flip_importance(larq_meta.models.float_mlp((4,), input_shape=(20,)), data(10, seed=0))
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 20), np.uint8), np.zeros(0, int)))
    with pytest.raises(ValueError, match="`data` is empty"):
        flip_importance(tiny_bnn(), empty)


@pytest.mark.slow
def test_flip_importance_grows_with_hidden_weight_magnitude_on_mnist():
    """The paper's Fig. 5c-e on real MNIST: flipping the signs of large-|W_h| weights costs more."""
    from larq_meta.datasets import DatasetNotFoundError

    try:
        model, (x, y) = train_mnist_bnn(1.35, width=128, epochs=1, train_size=10000, seed=3)
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
    variables = binarized_variables(model)
    # a Fisher that is a monotone function of |W_h| correlates perfectly (rank)
    fake = {v.name: np.abs(v.numpy()) ** 2 for v in variables.values()}
    perfect = fisher_correlation(model, (x, y), fisher=fake)
    assert set(perfect) == {"dense_1", "dense_2", "dense_3", "all"}
    assert all(perfect[name]["spearman"] == pytest.approx(1.0) for name in variables)
    assert perfect["all"]["n"] == 20 * 6 + 6 * 5 + 5 * 10
    # computed: the same as correlating by hand with empirical_fisher
    fisher = empirical_fisher(model, (x, y), 30)
    result = fisher_correlation(model, (x, y), 30)
    with pytest.warns(DeprecationWarning, match="use `fisher_batch_size`"):
        chunked = fisher_correlation(model, (x, y), 30, batch_size=7)
    # (the same Fisher up to float rounding, which reorders its many ties: compare Pearson)
    assert chunked["all"]["pearson"] == pytest.approx(result["all"]["pearson"], abs=1e-5)
    for name, v in variables.items():
        expected = correlation(np.abs(v.numpy()), fisher[v.name])
        assert result[name]["spearman"] == pytest.approx(expected["spearman"], abs=1e-6)
        assert result[name]["pearson"] == pytest.approx(
            np.corrcoef(np.abs(v.numpy()).ravel(), fisher[v.name].ravel())[0, 1], abs=1e-6)
    del fake["dense_2/kernel:0"]
    with pytest.raises(ValueError, match="no entry 'dense_2/kernel:0'"):
        fisher_correlation(model, (x, y), fisher=fake)


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


@pytest.mark.slow  # trains twice: 5-10 s
def test_train_mnist_bnn_is_the_compiled_paper_model_and_reproducible():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (700, 12), dtype=np.uint8)
    y = (x[:, 0] > 127).astype(int)  # learnable from one pixel
    given = ((x, y), (x[:10], y[:10]))
    settings = dict(width=64, epochs=3, train_size=600, batch_size=20, seed=4, data=given,
                    jit_compile=False)
    model, (used_x, used_y) = train_mnist_bnn(1.2, learning_rate=0.01, **settings)
    np.testing.assert_array_equal(used_x, x[:600])
    np.testing.assert_array_equal(used_y, y[:600])
    optimizer = model.optimizer
    assert isinstance(optimizer, larq_meta.optimizers.MetaplasticAdam)
    assert optimizer.get_config()["m"] == pytest.approx(1.2)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert [w.shape for w in hidden_weights(model).values()] == [(12, 64), (64, 64), (64, 10)]
    accuracy = np.mean(np.argmax(model.predict(x[:600] / 255.0, verbose=0), axis=1) == y[:600])
    assert accuracy > 0.75  # it learned the true labels (chance: about 0.5)
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        again, _ = train_mnist_bnn(1.2, lr=0.01, **settings)
    for name, w in hidden_weights(model).items():  # same seed and settings, same weights
        np.testing.assert_array_equal(hidden_weights(again)[name], w)
    with pytest.raises(ValueError, match="`learning_rate` must be a finite float > 0"):
        train_mnist_bnn(1.0, learning_rate=-1.0, data=given)
    with pytest.raises(ValueError, match="`m` must be a finite float >= 0"):
        train_mnist_bnn(float("nan"), data=given)


def test_deprecated_analysis_module_forwards_with_warnings():
    from larq_meta import analysis

    with pytest.warns(DeprecationWarning, match="`larq_meta.hidden_weights.binarized_variables`"):
        assert analysis.binarized_layers is binarized_variables
    with pytest.warns(DeprecationWarning, match="larq_meta.plots.plot_flip_importance"):
        assert analysis.plot_flip_importance is larq_meta.plots.plot_flip_importance
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "flip_importance" in dir(analysis)  # listing warns about nothing


# -- `larq-meta analyze` --------------------------------------------------------------------------


@pytest.mark.slow  # trains on real MNIST: about 10 s
def test_analyze_command_writes_consistent_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "analyze"
    assert main(["analyze", "--width", "16", "--epochs", "1", "--train-size", "1000",
                 "--eval-size", "500", "--bins", "3", "--sample", "10", "--runs", "2",
                 "--fisher-samples", "50", "--m", "1.35", "1.35", "--no-jit",
                 "--output", str(out)]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    assert set(summary) == {"m=1.35"}  # a repeated value runs once
    sizes = {"dense_1": 784 * 16, "dense_2": 16 * 16, "dense_3": 16 * 10}
    for result in summary.values():
        tables = result["flip_importance"]
        assert set(tables) == set(sizes)
        for layer, table in tables.items():
            assert sum(table["count"]) == sizes[layer] and table["runs"] == 2
            assert table["flipped"] == [min(10, c) for c in table["count"]]
            assert np.all(np.diff(table["mean_abs"]) > 0)  # quantile bins of |W_h|, in order
        assert result["fisher_correlation"]["all"]["n"] == sum(sizes.values())
        assert set(result["fisher_correlation"]) == {*sizes, "all"}
    for name in ("flip_importance_m1.35.png", "hidden_weights.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("corr(|W_h|, Fisher) all") == 1 and "layer dense_3" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--width", "0"], "--width: must be a positive integer"),
        (["--epochs", "-1"], "--epochs: must be a positive integer"),
        (["--train-size", "0"], "--train-size: must be a positive integer"),
        (["--lr", "-0.1"], "--lr: must be a finite number > 0"),
        (["--lr", "0"], "--lr: must be a finite number > 0, got 0"),
        (["--m", "nan"], "--m: must be a finite number >= 0"),
        (["--bins", "0"], "--bins: must be a positive integer"),
        (["--sample", "0"], "--sample: must be a positive integer"),
        (["--runs", "0"], "--runs: must be a positive integer"),
        (["--eval-size", "0"], "--eval-size: must be a positive integer"),
        (["--fisher-samples", "-5"], "--fisher-samples: must be a positive integer"),
        (["--seed", "-1"], "--seed: must be an integer >= 0"),
        (["--binning", "log"], "--binning: invalid choice"),
    ],
)
def test_analyze_command_refuses_bad_values(tmp_path, capsys, argv, message):
    assert main(["analyze", *argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_analyze_command_refuses_an_output_that_is_a_file_before_training(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["analyze", "--output", str(target)]) == 2  # default size: would train minutes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larq-meta analyze: error: --output")
