"""Matplotlib figures (PNG) of sequence results: accuracy curves, accuracy matrices, weights.

!!! example
    ```python
    result = larq_meta.training.train_sequence(model, tasks, epochs_per_task=5)
    larq_meta.plots.plot_task_accuracies({"m=1.35": result}, "accuracy.png")
    ```
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["plot_task_accuracies", "plot_accuracy_matrix", "plot_hidden_weights"]


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _as_mapping(results) -> Mapping:
    return results if isinstance(results, Mapping) else {"": results}


def _save(fig, path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


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
    plt = _pyplot()
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
            ax.axvline(b + 0.5, color="grey", lw=0.5 if many else 0.8, ls="--", alpha=0.3 if many else 1)
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
    return _save(fig, path)


def plot_accuracy_matrix(results, path: str, title: str | None = None) -> str:
    """Heatmap of `R[i, j]` (accuracy on task j after task i), one panel per result."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_hidden_weights(
    snapshots: Sequence[Mapping[str, np.ndarray]],
    path: str,
    labels: Sequence[str] | None = None,
    bins: int = 100,
) -> str:
    """Histograms of the hidden weights of each binarized layer after each task (Fig. 2g,h).

    # Arguments
        snapshots: One mapping layer name -> hidden-weight array per task (see
            `larq_meta.analysis.hidden_weights`).
        path: PNG file to write.
        labels: Legend label per snapshot (default "after task k").
        bins: Histogram bins.
    """
    plt = _pyplot()
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
    return _save(fig, path)
