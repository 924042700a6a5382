"""Figures of the hidden-weight analyses and the quadratic toy: what they draw, read back from
the figure (matplotlib's public API), and that a PNG is written."""

import matplotlib.figure
import numpy as np
import pytest

from larq_meta import plots
from larq_meta.hidden_weights import ImportanceTable
from larq_meta.quadratic import quadratic_toy

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved during the test (the PNG is still written)."""
    saved = []
    savefig = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        saved.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return saved


def table(layer, increase, seed=0):
    rng = np.random.default_rng(seed)
    bins = len(increase)
    mean_abs = np.sort(rng.uniform(0, 1, bins))
    return ImportanceTable(
        layer=layer, edges=np.linspace(0, 1, bins + 1), count=np.full(bins, 20),
        flipped=np.full(bins, 7), mean_abs=mean_abs, relative_magnitude=mean_abs / 1.0,
        loss_increase=np.asarray(increase, float), loss_increase_std=rng.uniform(0, 0.1, bins),
        per_weight=np.asarray(increase, float) / 7, base_loss=0.5, runs=2,
    )


def errorbar_data(ax):
    (container,) = [c for c in ax.containers if hasattr(c, "has_yerr")]
    line = container.lines[0]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def test_flip_importance_figure_draws_each_table(tmp_path, figures):
    tables = [table("dense_1", [0.1, 0.3, 0.9]), table("dense_2", [0.0, 0.2, 0.5], seed=1)]
    path = plots.plot_flip_importance(tables, tmp_path / "flips.png", title="flips")
    assert path == str(tmp_path / "flips.png") and (tmp_path / "flips.png").read_bytes()[:8] == PNG
    (fig,) = figures
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["dense_1 (7 flips/bin)", "dense_2 (7 flips/bin)"]
    for ax, t in zip(axes, tables):
        x, y = errorbar_data(ax)
        np.testing.assert_allclose(x, t.relative_magnitude)
        np.testing.assert_allclose(y, t.loss_increase)
    assert fig.get_suptitle() == "flips"
    # one table, or a mapping title -> table, is accepted too
    plots.plot_flip_importance(tables[0], tmp_path / "one.png")
    assert len(figures[-1].axes) == 1
    plots.plot_flip_importance({"first layer": tables[0]}, tmp_path / "named.png")
    assert figures[-1].axes[0].get_title().startswith("first layer")
    with pytest.raises(ValueError, match="`tables` is empty"):
        plots.plot_flip_importance([], tmp_path / "none.png")


def test_quadratic_toy_figure_in_two_dimensions_draws_the_trajectory(tmp_path, figures):
    result = quadratic_toy(d=2, steps=50)
    plots.plot_quadratic_toy(result, tmp_path / "two.png")
    assert (tmp_path / "two.png").read_bytes()[:8] == PNG
    (fig,) = figures
    left, right = fig.axes[:2]
    (trajectory,) = [line for line in left.get_lines()
                     if line.get_label() == r"hidden weights $W^h$"]
    np.testing.assert_allclose(trajectory.get_xdata(), result.trajectory[:, 0])
    np.testing.assert_allclose(trajectory.get_ydata(), result.trajectory[:, 1])
    (corner,) = [line for line in left.get_lines() if line.get_label() == r"sign$(W^h_T)$"]
    np.testing.assert_array_equal(
        [corner.get_xdata()[0], corner.get_ydata()[0]], np.sign(result.theta_h))
    (loss,) = right.get_lines()
    np.testing.assert_allclose(loss.get_ydata(), result.loss)


def test_quadratic_toy_figure_in_many_dimensions_draws_flip_costs(tmp_path, figures):
    result = quadratic_toy(d=30, steps=50, bins=4)
    plots.plot_quadratic_toy(result, tmp_path / "many.png", title="d=30")
    assert (tmp_path / "many.png").read_bytes()[:8] == PNG
    (fig,) = figures
    left = fig.axes[0]
    x, y = errorbar_data(left)
    np.testing.assert_allclose(x, result.binned["relative_magnitude"])
    np.testing.assert_allclose(y, result.binned["flip_cost_mean"])
    points = left.collections[0].get_offsets()
    magnitude = np.abs(result.theta_h)
    np.testing.assert_allclose(points[:, 0], magnitude / magnitude.max())
    np.testing.assert_allclose(points[:, 1], result.flip_cost)
    spearman = result.correlations["flip_cost"]["spearman"]
    assert left.get_title() == f"d=30: flip cost vs |W^h| (Spearman {spearman:.2f})"


def test_hidden_weight_histograms_count_every_weight(tmp_path, figures):
    rng = np.random.default_rng(0)
    snapshots = [{"dense_1": rng.normal(size=(6, 4)), "dense_2": rng.normal(size=(4, 3))}
                 for _ in range(2)]
    plots.plot_hidden_weights(snapshots, tmp_path / "hist.png", labels=["a", "b"], bins=5)
    (fig,) = figures
    for ax, layer in zip(fig.axes, ("dense_1", "dense_2")):
        assert ax.get_title() == layer
        assert [p.get_label() for p in ax.patches] == ["a", "b"]
        values = [s[layer].ravel() for s in snapshots]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=5)  # shared by both
        for patch, v in zip(ax.patches, values):
            xy = patch.get_xy()
            np.testing.assert_allclose(np.unique(xy[:, 0]), edges)
            counts = np.histogram(v, edges)[0]
            assert xy[:, 1].max() == counts.max()
    with pytest.raises(ValueError, match="`snapshots` is empty"):
        plots.plot_hidden_weights([], tmp_path / "none.png")
