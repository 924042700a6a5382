"""Matplotlib figures (PNG): accuracy curves and matrices of sequence results, hidden-weight
histograms, flip importance (Fig. 5c-e) and the quadratic toy problem (Fig. 5a,b).

!!! example
    ```python
    result = larq_meta.training.train_sequence(model, tasks, epochs_per_task=5)
    larq_meta.plots.plot_task_accuracies({"m=1.35": result}, "accuracy.png")
    ```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from larq_meta._utils import pyplot, save_figure

__all__ = [
    "plot_task_accuracies",
    "plot_accuracy_matrix",
    "plot_hidden_weights",
    "plot_flip_importance",
    "plot_quadratic_toy",
    "plot_trials",
    "plot_layer_comparison",
]


def _as_mapping(results) -> Mapping:
    return results if isinstance(results, Mapping) else {"": results}


def plot_task_accuracies(results, path: str, title: str | None = None) -> str:
    """Test accuracy of every task over the epochs of the sequence (the paper's Fig. 2 style).

    # Arguments
        results: A `SequenceResult`, or a mapping label -> `SequenceResult` (one panel each,
            e.g. `{"m = 0": r0, "m = 1.35": r1}`).
        path: PNG file to write.
        title: Figure title.

    # Returns
        `path`.
    """
    plt = pyplot()
    results = _as_mapping(results)
    fig, axes = plt.subplots(
        1, len(results), figsize=(5.5 * len(results), 3.8), sharey=True, squeeze=False
    )
    for ax, (label, result) in zip(axes[0], results.items()):
        accuracies = np.array([record["accuracies"] for record in result.history]) * 100
        # Position along the whole sequence; a task's last epoch is always evaluated, so it
        # gives the task's length even when only every n-th epoch was evaluated.
        lengths = [
            1 + max((r["epoch"] for r in result.history if r["task"] == k), default=-1)
            for k in range(len(result.task_names))
        ]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        epochs = np.array([offsets[r["task"]] + r["epoch"] + 1 for r in result.history])
        if len(result.task_names) > 1 and np.array_equal(
            accuracies, np.repeat(accuracies[:, :1], accuracies.shape[1], axis=1)
        ):  # one test set for all tasks (a stream): one curve
            ax.plot(epochs, accuracies[:, 0], marker=".", label="test set (every subset)")
        else:
            for j, name in enumerate(result.task_names):
                ax.plot(epochs, accuracies[:, j], marker=".", label=name)
        many = len(result.task_names) > 12
        for b in offsets[1:-1]:
            ax.axvline(b + 0.5, color="grey", lw=0.5 if many else 0.8, ls="--",
                       alpha=0.3 if many else 1)
        ax.set_xlabel("epoch (task boundaries dashed)")
        bn = result.bn_description
        ax.set_title(f"{label}  (BN: {bn})" if label else f"BN: {bn}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].set_ylim(0, 100)
    if len(axes[0][-1].get_legend_handles_labels()[1]) <= 12:  # more would hide the curves
        axes[0][-1].legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_accuracy_matrix(results, path: str, title: str | None = None) -> str:
    """Heatmap of the accuracy matrix `R[i, j]` (test accuracy on task `j` after training
    task `i`, in %), one panel per result; the numbers are written in the cells up to 12 tasks.

    !!! example
        ```python
        plot_accuracy_matrix({"m=0": r0, "m=1.35": r1}, "matrix.png")
        ```

    # Arguments
        results: A `SequenceResult`, or a mapping label -> `SequenceResult` (one panel each).
        path: PNG file to write.
        title: Figure title.

    # Returns
        `path`.
    """
    plt = pyplot()
    results = _as_mapping(results)
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        R = np.asarray(result.accuracy_matrix) * 100
        image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        if len(R) <= 12:  # beyond that the numbers do not fit in their cells
            for (i, j), value in np.ndenumerate(R):
                color = "w" if value < 60 else "k"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", color=color)
        ticks = np.arange(len(R))[:: max(1, len(R) // 12)]
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        ax.set_title(label or "accuracy matrix (%)")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_hidden_weights(
    snapshots: Sequence[Mapping[str, np.ndarray]],
    path: str,
    labels: Sequence[str] | None = None,
    bins: int = 100,
) -> str:
    """Histograms of the hidden weights `W_h` of each binarized variable, one panel per
    variable and one curve per snapshot, e.g. after each task (Fig. 2g,h); the bins are shared
    by the snapshots of a panel, the counts on a log scale.

    !!! example
        ```python
        snapshots = [larq_meta.hidden_weights.hidden_weights(model)]  # e.g. after each task
        plot_hidden_weights(snapshots, "hidden_weights.png", labels=["after task 1"])
        ```

    # Arguments
        snapshots: One mapping name -> hidden-weight array per snapshot (as
            `larq_meta.hidden_weights.hidden_weights` gives).
        path: PNG file to write.
        labels: Legend label per snapshot (default "after task k").
        bins: Histogram bins.

    # Returns
        `path`.
    """
    plt = pyplot()
    if not snapshots:
        raise ValueError("`snapshots` is empty: nothing to plot.")
    layers = list(snapshots[0])
    labels = labels or [f"after task {k + 1}" for k in range(len(snapshots))]
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.5), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        values = [np.ravel(s[layer]) for s in snapshots]
        edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
        for label, v in zip(labels, values):
            ax.hist(v, bins=edges, histtype="step", label=label, log=True)
        ax.set_title(layer)
        ax.set_xlabel("hidden weight $W_h$")
    axes[0][0].set_ylabel("count (log)")
    axes[0][-1].legend(fontsize=8)
    return save_figure(fig, path)


def plot_flip_importance(tables, path: str, title: str | None = None) -> str:
    """Loss increase of flipping a bin of weights against the bin's `|W_h| / max |W_h|`
    (the paper's Fig. 5c-e), one panel per table, with the standard deviation over runs.

    !!! example
        ```python
        table = larq_meta.hidden_weights.flip_importance(model, (x, y), "dense_2")
        plot_flip_importance(table, "flips.png")
        ```

    # Arguments
        tables: A `larq_meta.hidden_weights.ImportanceTable`, a sequence of them (panels
            titled by their layer) or a mapping panel title -> table.
        path: PNG file to write.
        title: Figure title.

    # Returns
        `path`.
    """
    plt = pyplot()
    if hasattr(tables, "loss_increase"):  # one ImportanceTable
        tables = {tables.layer: tables}
    elif not isinstance(tables, Mapping):
        tables = {t.layer: t for t in tables}
    if not tables:
        raise ValueError("`tables` is empty: nothing to plot.")
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 3.6), squeeze=False)
    for ax, (label, table) in zip(axes[0], tables.items()):
        ax.errorbar(
            table.relative_magnitude, table.loss_increase, yerr=table.loss_increase_std,
            fmt="o", ms=5, capsize=3,
        )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel(r"$|W^h| / \max |W^h|$ of flipped weights")
        ax.set_title(f"{label} ({int(np.max(table.flipped))} flips/bin)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(r"loss increase $\Delta\mathcal{L}$")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_quadratic_toy(result, path: str, title: str | None = None) -> str:
    """Figure of a `larq_meta.quadratic.quadratic_toy` run (the paper's Fig. 5a,b).

    `d = 2`: the hidden-weight trajectory over the loss landscape with the binary corners
    (Fig. 5a), and the binary loss `L(sign(W_h))` over the steps. `d != 2`: the loss increase
    of flipping a weight against `|W_h| / max |W_h|` (Fig. 5b, binned means with standard
    deviations over a scatter of all weights), and the binary loss over the steps.

    !!! example
        ```python
        plot_quadratic_toy(larq_meta.quadratic.quadratic_toy(d=2), "toy_2.png")
        ```

    # Arguments
        result: A `larq_meta.quadratic.QuadraticToyResult`.
        path: PNG file to write.
        title: Figure title.

    # Returns
        `path`.
    """
    plt = pyplot()
    problem = result.problem
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    if problem.dim == 2:
        trajectory = result.trajectory
        # the notebook's window: hidden weights keep growing once their corner is right
        zoom = max(4.5, 1.5 * float(np.abs(problem.theta_star).max()))
        grid = np.linspace(-zoom, zoom, 120)
        gx, gy = np.meshgrid(grid, grid)
        z = problem.loss(np.stack([gx, gy], axis=-1))
        left.contourf(gx, gy, z, 30, cmap="OrRd")
        left.plot(trajectory[:, 0], trajectory[:, 1], ".-", ms=3, lw=0.6, color="tab:blue",
                  label=r"hidden weights $W^h$")
        left.plot(*problem.theta_init, "o", color="tab:blue")
        left.plot(*problem.theta_star, "*", ms=14, color="red", label=r"optimum $W^*$")
        corner = np.where(trajectory[-1] >= 0, 1.0, -1.0)
        left.plot(*corner, "s", ms=8, color="black", label=r"sign$(W^h_T)$")
        left.plot([1, 1, -1, -1, 1], [1, -1, -1, 1, 1], color="black", lw=0.8)
        left.set_xlim(-zoom, zoom)
        left.set_ylim(-zoom, zoom)
        left.set_aspect("equal")
        left.set_xlabel(r"$W^h_x$")
        left.set_ylabel(r"$W^h_y$")
        left.legend(fontsize=7, loc="lower left")
        left.set_title(f"trajectory (eta {result.eta:g}, m {result.m:g})")
    else:
        magnitude = np.abs(result.theta_h)
        peak = magnitude.max() if magnitude.max() > 0 else 1.0
        left.scatter(magnitude / peak, result.flip_cost, s=4, alpha=0.25, color="grey")
        left.errorbar(result.binned["relative_magnitude"], result.binned["flip_cost_mean"],
                      yerr=result.binned["flip_cost_std"], fmt="o", ms=6, capsize=3)
        rho = result.correlations["flip_cost"]["spearman"]
        left.set_title(f"d={problem.dim}: flip cost vs |W^h| (Spearman {rho:.2f})")
        left.set_xlabel(r"$|W^h| / \max |W^h|$")
        left.set_ylabel(r"loss increase of a flip $\Delta\mathcal{L}$")
        left.grid(alpha=0.3)
    right.plot(np.arange(len(result.loss)), result.loss, lw=1)
    right.set_xlabel("step")
    right.set_ylabel(r"$\mathcal{L}(\mathrm{sign}(W^h))$")
    right.set_title("loss of the binary weights")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_trials(rows, path: str, objective, hp_names=("m", "learning_rate")) -> str:
    """A tuning search's objective vs `m` (and vs the learning rate if it was searched).

    One panel per searched hyperparameter among `m` and `learning_rate`, one point per
    completed trial, the best trial starred; with both searched, the points of each panel are
    coloured by the other (log10 of the learning rate).

    !!! example
        ```python
        rows = larq_meta.tuning.trial_rows(tuner.oracle.trials.values(),
                                           tuner.oracle.objective, ["m"])
        larq_meta.plots.plot_trials(rows, "objective.png", tuner.oracle.objective, ["m"])
        ```

    # Arguments
        rows: The trials as `larq_meta.tuning.trial_rows` gives them (dicts with the
            hyperparameters and `objective`, None for unfinished trials).
        path: PNG file to write.
        objective: The search's objective (anything with `name` and `direction`, e.g. a
            `keras_tuner.Objective`).
        hp_names: The searched hyperparameters.

    # Returns
        `path`.
    """
    import matplotlib.ticker

    plt = pyplot()
    axes_of = [n for n in ("m", "learning_rate") if n in hp_names] or ["m"]
    done = [r for r in rows if r["objective"] is not None]
    best = None
    if done:
        pick = max if objective.direction == "max" else min
        best = pick(done, key=lambda r: r["objective"])
    fig, axes = plt.subplots(
        1, len(axes_of), figsize=(5.6 * len(axes_of), 3.8), squeeze=False, layout="constrained"
    )
    for ax, name in zip(axes[0], axes_of):
        other = next((n for n in axes_of if n != name), None)
        x = [r[name] for r in done]
        y = [r["objective"] for r in done]
        if other is not None and done:
            colors = [r[other] for r in done]
            label = other
            if other == "learning_rate":
                colors, label = np.log10(colors), "log10 learning_rate"
            points = ax.scatter(x, y, c=colors, cmap="viridis", zorder=2)
            fig.colorbar(points, ax=ax, label=label)
        else:
            order = np.argsort(x)
            ax.plot(np.asarray(x)[order], np.asarray(y)[order], "-", color="0.8", zorder=1)
            ax.scatter(x, y, zorder=2)
        if best is not None:
            ax.scatter([best[name]], [best["objective"]], marker="*", s=220, color="tab:red",
                       zorder=3, label=f"best: {name}={best[name]:.3g}")
            ax.legend(loc="best", fontsize=8)
        if name == "learning_rate":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel(f"{objective.name} ({objective.direction})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(done)} completed trials")
    return save_figure(fig, path)


def plot_layer_comparison(comparison, path: str, title: str | None = None) -> str:
    """Keras vs LCE layer by layer (`larq_meta.export.compare_layers`): the relative max
    |difference| of each layer output LCE materialises (log scale; the tolerance dashed) and
    the fraction of sign flips at each binarized input, the first diverging layer in red.

    !!! example
        ```python
        diff = larq_meta.export.compare_layers(model, report.flatbuffer, x_test[:64])
        larq_meta.plots.plot_layer_comparison(diff, "layers.png")
        ```

    # Arguments
        comparison: A `LayerComparison`.
        path: PNG file to write.
        title: Figure title (default: the model name and the cause).

    # Returns
        `path`.
    """
    plt = pyplot()
    rows = comparison.layers
    x = np.arange(len(rows))
    first = [i for i, r in enumerate(rows) if r.layer == comparison.first_divergence]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(6.0, 0.28 * len(rows) + 2), 5.6), sharex=True, layout="constrained"
    )
    floor = comparison.rtol * 1e-3
    measured = [(i, max(r.relative_diff, floor)) for i, r in enumerate(rows)
                if r.relative_diff is not None]
    if measured:
        top.scatter(*zip(*measured), s=14, color="tab:blue", zorder=2)
    top.axhline(comparison.rtol, color="0.5", ls="--", lw=1, label=f"rtol {comparison.rtol:g}")
    top.set_yscale("log")
    top.set_ylabel("max |diff| / max |Keras|")
    top.legend(loc="upper left", fontsize=8)
    flips = [(i, r.sign_flip_fraction) for i, r in enumerate(rows)
             if r.sign_flip_fraction is not None]
    if flips:
        bottom.bar(*zip(*flips), color="tab:orange", width=0.8)
    bottom.set_ylabel("sign flips at input")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        for i in first:
            ax.axvline(i, color="tab:red", lw=1.2)
    bottom.set_xticks(x, [r.layer for r in rows], rotation=90, fontsize=7)
    cause = f": first divergence {comparison.first_divergence} ({comparison.cause})" if (
        comparison.first_divergence) else ": agree at every layer"
    fig.suptitle(title or f"{comparison.model_name}{cause}", fontsize=10)
    return save_figure(fig, path)
