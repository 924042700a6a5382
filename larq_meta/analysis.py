"""The paper's interpretation of hidden weights, made checkable (Laborieux et al. 2021, Fig. 5).

In a BNN the hidden weight `W_h` of a synapse only matters through `sign(W_h)`, yet its
magnitude carries information: a weight whose sign the loss keeps confirming grows, so a
large `|W_h|` marks a synapse whose flip would cost a lot. Metaplasticity uses `|W_h|` as the
consolidation signal for that reason. This module measures it:

- `hidden_weights`: the latent values of every binarized kernel (histograms, Fig. 2g,h).
- `flip_importance`: loss increase caused by flipping the signs of weights, per bin of
  `|W_h|` (Fig. 5c-e); larger `|W_h|` bins should cost more.
- `fisher_correlation`: rank and linear correlation between `|W_h|` and the EWC Fisher
  importance of the same weights.
- `quadratic_toy`: the quadratic binary task of Fig. 5a,b, where the relation between
  `|W_h|` and the cost of a flip can be computed exactly.

!!! example
    ```python
    table = larq_meta.analysis.flip_importance(model, (x_train, y_train), layer="dense_2")
    print(table)
    result = larq_meta.analysis.quadratic_toy(d=500, steps=1000, seed=1)
    larq_meta.analysis.plot_quadratic_toy(result, "toy_500.png")
    ```
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from larq_meta._utils import check_int
from larq_meta.optimizers import is_binarized, latent
from larq_meta.tasks import Data, make_dataset

__all__ = [
    "hidden_weights",
    "binarized_layers",
    "ImportanceTable",
    "flip_importance",
    "plot_flip_importance",
    "correlation",
    "fisher_correlation",
    "QuadraticProblem",
    "QuadraticToyResult",
    "quadratic_problem",
    "binary_quadratic_descent",
    "quadratic_flip_costs",
    "quadratic_toy",
    "plot_quadratic_toy",
    "train_mnist_bnn",
    "analysis_main",
    "toy_main",
]


# -- hidden weights --------------------------------------------------------------------------


def _layers(model: tf.keras.Model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def binarized_layers(model: tf.keras.Model) -> dict[str, tf.Variable]:
    """Name -> binarized kernel variable, in model order (nested models included).

    The name is the layer's name, or `"<layer>/<weight>"` for a layer with several
    binarized weights. Only larq `QuantizedVariable`s of precision 1 count.
    """
    found: dict[str, tf.Variable] = {}
    for layer in _layers(model):
        weights = [w for w in layer.trainable_weights if is_binarized(w)]
        for w in weights:
            short = w.name.split("/")[-1].split(":")[0]
            found[layer.name if len(weights) == 1 else f"{layer.name}/{short}"] = w
    return found


def hidden_weights(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """The hidden (latent, real-valued) weights of every binarized kernel of `model`.

    # Returns
        A dict layer name -> copy of its hidden weights, e.g. `{"dense_1": (784, 1024) array,
        ...}`. `larq_meta.plots.plot_hidden_weights` takes a list of these (one per task).
    """
    return {name: latent(v).numpy().copy() for name, v in binarized_layers(model).items()}


# -- correlations -----------------------------------------------------------------------------


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as `scipy.stats.rankdata`)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def correlation(a, b) -> dict[str, float]:
    """Pearson and Spearman (rank) correlation of two equally long arrays (flattened).

    # Returns
        `{"pearson": r, "spearman": rho, "n": n}`; a coefficient is NaN when one side is
        constant.
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"correlation: {a.size} values against {b.size}.")

    def pearson(x, y):
        x, y = x - x.mean(), y - y.mean()
        denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
        return float(np.sum(x * y) / denominator) if denominator > 0 else float("nan")

    return {"pearson": pearson(a, b), "spearman": pearson(_ranks(a), _ranks(b)), "n": int(a.size)}


# -- importance of weights by flipping their signs -------------------------------------------------


@dataclasses.dataclass
class ImportanceTable:
    """Loss increase caused by flipping the signs of binarized weights, per bin of `|W_h|`.

    # Attributes
        layer: Layer name.
        edges: Bin edges of `|W_h|` (`len = bins + 1`).
        count: Weights per bin.
        flipped: Weights flipped per run in each bin.
        mean_abs: Mean `|W_h|` of the flipped weights per bin (averaged over runs).
        relative_magnitude: `mean_abs / max |W_h|` (the paper's x axis).
        loss_increase: Mean over runs of `L(flipped) - L(original)` per bin.
        loss_increase_std: Its standard deviation over runs.
        per_weight: `loss_increase / flipped` (the reference code's normalization).
        base_loss: The loss before any flip.
        runs: Number of random draws per bin.
    """

    layer: str
    edges: np.ndarray
    count: np.ndarray
    flipped: np.ndarray
    mean_abs: np.ndarray
    relative_magnitude: np.ndarray
    loss_increase: np.ndarray
    loss_increase_std: np.ndarray
    per_weight: np.ndarray
    base_loss: float
    runs: int

    def to_dict(self) -> dict:
        return {
            key: value.tolist() if isinstance(value, np.ndarray) else value
            for key, value in dataclasses.asdict(self).items()
        }

    def __str__(self) -> str:
        lines = [
            f"layer {self.layer}: loss {self.base_loss:.4f} before flipping; "
            f"{self.runs} run(s) per bin",
            f"{'bin':>3} {'|W_h| range':>21} {'weights':>8} {'flipped':>8} "
            f"{'mean |W_h|':>11} {'loss increase':>14} {'± std':>9}",
        ]
        for k in range(len(self.count)):
            lines.append(
                f"{k + 1:>3} {self.edges[k]:>10.4g}-{self.edges[k + 1]:<10.4g} "
                f"{self.count[k]:>8d} {self.flipped[k]:>8d} {self.mean_abs[k]:>11.4g} "
                f"{self.loss_increase[k]:>14.5f} {self.loss_increase_std[k]:>9.5f}"
            )
        return "\n".join(lines)


def _materialize(data: Data, num_samples: int | None, batch_size: int) -> list:
    if isinstance(data, tf.data.Dataset):
        if num_samples is not None:
            data = data.take(num_samples)
    elif num_samples is not None:
        data = (np.asarray(data[0])[:num_samples], np.asarray(data[1])[:num_samples])
    return [(x, tf.reshape(y, (-1,))) for x, y in make_dataset(data, batch_size)]


def _loss_function(model: tf.keras.Model, from_logits: bool):
    @tf.function
    def batch_loss_sum(x, y):
        out = model(x, training=False)
        return tf.reduce_sum(
            tf.keras.losses.sparse_categorical_crossentropy(y, out, from_logits=from_logits)
        )

    return batch_loss_sum


def flip_importance(
    model: tf.keras.Model,
    data: Data,
    layer: str | None = None,
    *,
    bins: int = 10,
    sample: int | None = 100,
    runs: int = 3,
    binning: str = "quantile",
    num_samples: int | None = None,
    batch_size: int = 1000,
    from_logits: bool | None = None,
    seed: int | None = 0,
) -> ImportanceTable:
    """How much the loss rises when the signs of weights with a given `|W_h|` are flipped.

    The binarized weights of `layer` are split into `bins` bins of `|W_h|`. For each bin and
    each of `runs` draws, `sample` weights of the bin are chosen at random, their hidden
    weights negated (which flips their binary weights and keeps `|W_h|`), and the mean loss
    on `data` measured; the weights are then restored exactly. The result is the paper's
    Fig. 5c-e: with a trained BNN, bins of larger `|W_h|` cost more.

    The model runs in inference mode (`training=False`, BatchNorm moving statistics). The
    loss is the sparse categorical cross-entropy of the true labels.

    # Arguments
        model: A model with binarized layers (e.g. `paper_mlp`), trained on `data`'s task.
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset`, usually the learned task's
            training data (as the reference) or test data.
        layer: Name of a binarized layer (see `binarized_layers`); None: the first one.
        bins: Number of bins.
        sample: Weights flipped per bin and run (all of the bin if it has fewer; None: all).
        runs: Random draws per bin (mean and standard deviation reported).
        binning: `"quantile"` (equal-count bins, default) or `"uniform"` (equal-width bins
            over `[0, max |W_h|]`, as the reference; empty bins report NaN).
        num_samples: Use only the first `num_samples` samples of `data`.
        batch_size: Evaluation batch size.
        from_logits: Whether the model outputs logits (None: from the compiled loss).
        seed: Seed of the random choice of flipped weights.

    # Returns
        An `ImportanceTable` (print it for a text table; `to_dict()` for JSON).
    """
    from larq_meta.consolidation import _from_logits

    layers = binarized_layers(model)
    if not layers:
        raise ValueError("The model has no binarized layer (larq layer with a precision-1 kernel).")
    if layer is None:
        layer = next(iter(layers))
    if layer not in layers:
        raise ValueError(f"No binarized layer {layer!r}; binarized layers: {list(layers)}.")
    for argument, value in (("bins", bins), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{argument}` must be a positive int, got {value!r}.")
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int) or sample < 1
    ):
        raise ValueError(f"`sample` must be a positive int or None, got {sample!r}.")
    if binning not in ("quantile", "uniform"):
        raise ValueError(f'`binning` must be "quantile" or "uniform", got {binning!r}.')

    variable = latent(layers[layer])
    original = variable.numpy().copy()
    magnitude = np.abs(original).ravel()
    if binning == "quantile":
        edges = np.quantile(magnitude, np.linspace(0, 1, bins + 1))
    else:
        edges = np.linspace(0, magnitude.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, magnitude, side="right") - 1, 0, bins - 1)

    batches = _materialize(data, num_samples, batch_size)
    if not batches:
        raise ValueError("flip_importance: `data` is empty.")
    total = sum(int(tf.shape(y)[0]) for _, y in batches)
    batch_loss_sum = _loss_function(model, _from_logits(model, from_logits))

    def mean_loss() -> float:
        return sum(float(batch_loss_sum(x, y)) for x, y in batches) / total

    rng = np.random.default_rng(seed)
    count = np.bincount(which, minlength=bins)
    flipped = np.zeros(bins, np.int64)
    mean_abs = np.full(bins, np.nan)
    increase = np.full(bins, np.nan)
    increase_std = np.full(bins, np.nan)
    try:
        base = mean_loss()
        for k in range(bins):
            members = np.flatnonzero(which == k)
            if members.size == 0:
                continue
            n = members.size if sample is None else min(sample, members.size)
            flipped[k] = n
            deltas, sizes = [], []
            for _ in range(runs):
                chosen = rng.choice(members, size=n, replace=False)
                values = original.ravel().copy()
                values[chosen] = -values[chosen]
                variable.assign(values.reshape(original.shape))
                deltas.append(mean_loss() - base)
                sizes.append(magnitude[chosen].mean())
            mean_abs[k] = float(np.mean(sizes))
            increase[k] = float(np.mean(deltas))
            increase_std[k] = float(np.std(deltas))
    finally:
        variable.assign(original)
    peak = magnitude.max()
    return ImportanceTable(
        layer=layer,
        edges=edges,
        count=count,
        flipped=flipped,
        mean_abs=mean_abs,
        relative_magnitude=mean_abs / peak if peak > 0 else mean_abs,
        loss_increase=increase,
        loss_increase_std=increase_std,
        per_weight=np.where(flipped > 0, increase / np.maximum(flipped, 1), np.nan),
        base_loss=float(base),
        runs=runs,
    )


def fisher_correlation(
    model: tf.keras.Model,
    data: Data,
    fisher_samples: int = 1000,
    *,
    fisher: Mapping[str, np.ndarray] | None = None,
    batch_size: int | None = None,
    from_logits: bool | None = None,
    seed: int | None = 0,
) -> dict[str, dict[str, float]]:
    """Correlation between `|W_h|` and the EWC Fisher importance of the same weights.

    The Fisher is `larq_meta.consolidation.empirical_fisher` on `fisher_samples` samples of
    `data` (per-sample squared gradients of the log-likelihood of the true label). If the
    hidden-weight magnitude is an importance signal, as the paper argues, the two agree:
    positive correlations, especially the rank (Spearman) one.

    # Arguments
        model: A model with binarized layers.
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset` of the learned task.
        fisher_samples: Samples for the Fisher.
        fisher: A precomputed Fisher (variable name -> array, e.g. `EWC.last_fisher`)
            instead of computing one.
        batch_size, from_logits, seed: As in `empirical_fisher`.

    # Returns
        Layer name -> `{"pearson", "spearman", "n"}`, plus `"all"` for all layers pooled.
    """
    from larq_meta.consolidation import empirical_fisher

    layers = binarized_layers(model)
    if not layers:
        raise ValueError("The model has no binarized layer.")
    if fisher is None:
        fisher = empirical_fisher(
            model, data, fisher_samples, variables=list(layers.values()),
            batch_size=batch_size, from_logits=from_logits, seed=seed,
        )
    result, pooled_w, pooled_f = {}, [], []
    for name, variable in layers.items():
        if variable.name not in fisher:
            raise ValueError(f"`fisher` has no entry {variable.name!r} for layer {name!r}.")
        w = np.abs(latent(variable).numpy()).ravel()
        f = np.asarray(fisher[variable.name]).ravel()
        result[name] = correlation(w, f)
        pooled_w.append(w)
        pooled_f.append(f)
    result["all"] = correlation(np.concatenate(pooled_w), np.concatenate(pooled_f))
    return result


def plot_flip_importance(
    tables: ImportanceTable | Mapping[str, ImportanceTable] | Sequence[ImportanceTable],
    path: str,
    title: str | None = None,
) -> str:
    """Loss increase per flipped bin against the bin's `|W_h| / max |W_h|` (Fig. 5c-e), one
    panel per table. Writes a PNG and returns `path`."""
    from larq_meta.plots import _pyplot, _save

    plt = _pyplot()
    if isinstance(tables, ImportanceTable):
        tables = {tables.layer: tables}
    elif not isinstance(tables, Mapping):
        tables = {t.layer: t for t in tables}
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
    return _save(fig, path)


# -- the quadratic binary task (Fig. 5a,b) ------------------------------------------------------


@dataclasses.dataclass
class QuadraticProblem:
    """`L(theta) = 1/2 (theta - theta*)^T H (theta - theta*)`, learned with binary weights.

    # Attributes
        hessian: `(d, d)` symmetric positive definite matrix `H`.
        theta_star: `(d,)` optimum `theta*` (generally not binary).
        theta_init: `(d,)` initial hidden weights.
    """

    hessian: np.ndarray
    theta_star: np.ndarray
    theta_init: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.theta_star)

    def loss(self, theta: np.ndarray) -> np.ndarray:
        """`L` at `theta` of shape `(d,)` or `(..., d)` (one value per row)."""
        diff = np.asarray(theta, np.float64) - self.theta_star
        return 0.5 * np.sum((diff @ self.hessian) * diff, axis=-1)


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal matrix, uniform (Haar) on O(d) (QR of a Gaussian matrix with
    the signs fixed; the reference notebook uses Shahshahani's subgroup algorithm)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def quadratic_problem(
    d: int = 500,
    seed: int | None = 1,
    *,
    eigenvalues: tuple[float, float] | None = None,
    rotate: bool = True,
    target_scale: float | None = None,
    init_scale: float = 0.01,
) -> QuadraticProblem:
    """A random instance of the quadratic binary task, with the reference notebook's settings.

    `H = R^T diag(lambda) R` with eigenvalues `lambda ~ U(eigenvalues)` and `R` a random
    rotation (`rotate=False`: `H` diagonal). Defaults, as in `Fig-5ab.ipynb`:

    - `d = 2` (Fig. 5a): eigenvalues `U(0, 5)`, `theta* = (1.5, 0.5)`,
      `theta_init = (0.01, 0.02)`.
    - `d > 2` (Fig. 5b, `d = 500`): eigenvalues `U(10.5, 29.5)` (`20 + 19 (U - 1/2)`),
      `theta* ~ U(-4, 4)`, `theta_init ~ 0.01 N(0, 1)`.

    # Arguments
        d: Dimension (number of synapses).
        seed: Seed of `numpy.random.default_rng` (the notebook's torch draws differ).
        eigenvalues: `(low, high)` of the uniform eigenvalue distribution, `0 <= low < high`.
        rotate: Rotate the eigenbasis at random (True) or keep `H` diagonal.
        target_scale: `theta* ~ U(-target_scale, target_scale)` (default 4; for `d = 2` the
            default is the fixed point `(1.5, 0.5)`).
        init_scale: Standard deviation of the initial hidden weights (`d > 2`).
    """
    check_int(d, "d")
    rng = np.random.default_rng(seed)
    low, high = eigenvalues if eigenvalues is not None else ((0.0, 5.0) if d == 2 else (10.5, 29.5))
    if not 0 <= low < high:
        raise ValueError(
            f"`eigenvalues` must be (low, high) with 0 <= low < high, got {eigenvalues!r}."
        )
    lam = rng.uniform(low, high, d)
    if rotate:
        r = _haar_orthogonal(d, rng)
        hessian = r.T @ (lam[:, None] * r)
        hessian = (hessian + hessian.T) / 2
    else:
        hessian = np.diag(lam)
    if d == 2 and target_scale is None:
        theta_star = np.array([1.5, 0.5])
        theta_init = np.array([0.01, 0.02])
    else:
        scale = 4.0 if target_scale is None else float(target_scale)
        theta_star = rng.uniform(-scale, scale, d)
        theta_init = init_scale * rng.standard_normal(d)
    return QuadraticProblem(hessian, theta_star, theta_init)


def _sign(theta: np.ndarray) -> np.ndarray:
    return np.where(theta >= 0, 1.0, -1.0)


def binary_quadratic_descent(
    problem: QuadraticProblem,
    eta: float,
    steps: int,
    m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on hidden weights, with the gradient taken at their signs.

    `theta_h <- theta_h - eta * f * H (sign(theta_h) - theta*)`, with `f = 1` (the reference
    notebook, `m = 0`) or, with `m > 0`, the metaplastic damping of `MetaplasticAdam`:
    `f = 1 - tanh²(m |theta_h|)` where the update moves `theta_h` towards zero
    (`sign(theta_h) * update > 0`), `f = 1` elsewhere. `sign(0)` is taken as +1.

    # Returns
        `(trajectory, loss)`: hidden weights after each step, shape `(steps + 1, d)` (row 0
        is `theta_init`), and the loss of the binary weights `L(sign(theta_h))` at each row.
    """
    check_int(steps, "steps", 0)
    if not eta > 0:
        raise ValueError(f"`eta` must be > 0, got {eta!r}.")
    if not m >= 0:
        raise ValueError(f"`m` must be >= 0, got {m!r}.")
    theta = np.array(problem.theta_init, np.float64)
    trajectory = np.empty((steps + 1, problem.dim))
    trajectory[0] = theta
    for t in range(steps):
        update = eta * problem.hessian @ (_sign(theta) - problem.theta_star)
        if m > 0:
            towards_zero = _sign(theta) * update > 0
            update = np.where(towards_zero, (1 - np.tanh(m * np.abs(theta)) ** 2) * update, update)
        theta = theta - update
        trajectory[t + 1] = theta
    return trajectory, problem.loss(_sign(trajectory))


def quadratic_flip_costs(problem: QuadraticProblem, theta_h: np.ndarray) -> np.ndarray:
    """Exact loss increase `L(s with s_i flipped) - L(s)` for each `i`, at `s = sign(theta_h)`.

    For a quadratic, `= 2 H_ii - 2 s_i [H (s - theta*)]_i`: the curvature of the synapse plus
    how much the current gradient disagrees with flipping it.
    """
    s = _sign(np.asarray(theta_h))
    gradient = problem.hessian @ (s - problem.theta_star)
    return 2 * np.diag(problem.hessian) - 2 * s * gradient


@dataclasses.dataclass
class QuadraticToyResult:
    """What `quadratic_toy` computed.

    # Attributes
        problem: The `QuadraticProblem`.
        eta, steps, m: The descent settings.
        trajectory: Hidden weights after each step, `(steps + 1, d)`.
        loss: `L(sign(theta_h))` at each step.
        theta_h: Final hidden weights.
        flip_cost: Exact loss increase of flipping each final binary weight.
        hessian_diagonal: `diag(H)`.
        correlations: `{"flip_cost": {...}, "hessian_diagonal": {...}}`, Pearson and
            Spearman correlations of `|theta_h|` with each.
        binned: Fig. 5b: bins of `|theta_h| / max |theta_h|` (equal width, empty bins
            dropped) with `relative_magnitude`, `flip_cost_mean`, `flip_cost_std`, `count`.
    """

    problem: QuadraticProblem
    eta: float
    steps: int
    m: float
    trajectory: np.ndarray
    loss: np.ndarray
    theta_h: np.ndarray
    flip_cost: np.ndarray
    hessian_diagonal: np.ndarray
    correlations: dict
    binned: dict

    def to_dict(self, trajectory: bool = False) -> dict:
        """JSON-friendly summary (the trajectory only if asked: it can be large)."""
        out = {
            "d": self.problem.dim, "eta": self.eta, "steps": self.steps, "m": self.m,
            "final_loss": float(self.loss[-1]),
            "best_loss": float(self.loss.min()),
            "correlations": self.correlations,
            "binned": {k: np.asarray(v).tolist() for k, v in self.binned.items()},
        }
        if trajectory:
            out["trajectory"] = self.trajectory.tolist()
        return out


def quadratic_toy(
    d: int = 500,
    eta: float | None = None,
    steps: int | None = None,
    m: float = 0.0,
    seed: int | None = 1,
    *,
    bins: int = 15,
    problem: QuadraticProblem | None = None,
    **problem_kwargs,
) -> QuadraticToyResult:
    """Run the quadratic binary task (Fig. 5a,b) and relate `|theta_h|` to importance.

    Hidden weights follow `binary_quadratic_descent` on a random `quadratic_problem`. At
    the end, the importance of each synapse is the exact loss increase of flipping its
    binary weight (`quadratic_flip_costs`); the paper's point is that it grows with
    `|theta_h|` (strong positive correlation), because a weight whose sign the gradient
    keeps confirming keeps growing. The Hessian diagonal (the synapse's own curvature) is
    reported too.

    !!! example
        ```python
        result = quadratic_toy(d=500, eta=0.01, steps=1000, seed=1)
        result.correlations["flip_cost"]["spearman"]     # close to 1
        plot_quadratic_toy(result, "toy.png")
        ```

    # Arguments
        d: Dimension (2 for Fig. 5a's trajectory, 500 for Fig. 5b).
        eta: Learning rate (default: 0.35 for `d = 2`, 0.01 otherwise, as the notebook).
        steps: Number of steps (default: 500 for `d = 2`, 1000 otherwise).
        m: Metaplastic damping strength (0, the notebook's setting: plain descent).
        seed: Seed of the problem.
        bins: Bins of `|theta_h|` for the Fig. 5b summary.
        problem: A `QuadraticProblem` to use instead of drawing one.
        **problem_kwargs: Passed to `quadratic_problem` (`eigenvalues`, `rotate`,
            `target_scale`, `init_scale`).

    # Returns
        A `QuadraticToyResult`.
    """
    if problem is None:
        problem = quadratic_problem(d, seed, **problem_kwargs)
    eta = (0.35 if problem.dim == 2 else 0.01) if eta is None else float(eta)
    steps = (500 if problem.dim == 2 else 1000) if steps is None else int(steps)
    trajectory, loss = binary_quadratic_descent(problem, eta, steps, m)
    theta_h = trajectory[-1]
    costs = quadratic_flip_costs(problem, theta_h)
    diagonal = np.diag(problem.hessian).copy()
    magnitude = np.abs(theta_h)
    relative = magnitude / magnitude.max() if magnitude.max() > 0 else magnitude
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, relative, side="right") - 1, 0, bins - 1)
    binned = {"relative_magnitude": [], "flip_cost_mean": [], "flip_cost_std": [], "count": []}
    for k in range(bins):
        members = which == k
        if members.any():
            binned["relative_magnitude"].append(float(relative[members].mean()))
            binned["flip_cost_mean"].append(float(costs[members].mean()))
            binned["flip_cost_std"].append(float(costs[members].std()))
            binned["count"].append(int(members.sum()))
    constant_diagonal = np.ptp(diagonal) == 0
    return QuadraticToyResult(
        problem=problem, eta=eta, steps=steps, m=float(m),
        trajectory=trajectory, loss=loss, theta_h=theta_h, flip_cost=costs,
        hessian_diagonal=diagonal,
        correlations={
            "flip_cost": correlation(magnitude, costs),
            "hessian_diagonal": (
                {"pearson": float("nan"), "spearman": float("nan"), "n": problem.dim}
                if constant_diagonal else correlation(magnitude, diagonal)
            ),
        },
        binned={k: np.asarray(v) for k, v in binned.items()},
    )


def plot_quadratic_toy(result: QuadraticToyResult, path: str, title: str | None = None) -> str:
    """Figure of a `quadratic_toy` run, written as PNG; returns `path`.

    `d = 2`: the hidden-weight trajectory over the loss landscape with the binary corners
    (Fig. 5a), and the binary loss over the steps. `d > 2`: the loss increase of flipping a
    weight against `|theta_h| / max |theta_h|` (Fig. 5b, binned means with standard
    deviations over a scatter of all weights), and the binary loss over the steps.
    """
    from larq_meta.plots import _pyplot, _save

    plt = _pyplot()
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
        corner = _sign(trajectory[-1])
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
    return _save(fig, path)


# -- command-line entry points (`larq-meta toy`, `larq-meta analyze`) --------------------------


def _toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-meta toy",
        description="The quadratic binary task of Laborieux et al. (2021), Fig. 5a,b: hidden "
        "weights descend a quadratic loss evaluated at their signs; the cost of flipping a "
        "weight grows with |W_h|.",
    )
    parser.add_argument("--d", type=int, nargs="+", default=[2, 500],
                        help="dimensions, one run each (2 500)")
    parser.add_argument("--eta", type=float, help="learning rate (0.35 for d=2, else 0.01)")
    parser.add_argument("--steps", type=int, help="steps (500 for d=2, else 1000)")
    parser.add_argument("--m", type=float, default=0.0, help="metaplastic damping m (0)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the problem (1)")
    parser.add_argument("--bins", type=int, default=15, help="bins of |W_h| (15)")
    parser.add_argument("--output", default="runs/toy", help="output folder (runs/toy)")
    return parser


def toy_main(argv: Sequence[str] | None = None) -> int:
    """`larq-meta toy`: run `quadratic_toy` for each `--d`, write JSON and PNG per run."""
    args = _toy_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    os.makedirs(args.output, exist_ok=True)
    summary = {}
    for d in args.d:
        result = quadratic_toy(d=d, eta=args.eta, steps=args.steps, m=args.m, seed=args.seed,
                               bins=args.bins)
        png = plot_quadratic_toy(result, os.path.join(args.output, f"toy_d{d}.png"))
        summary[f"d={d}"] = result.to_dict(trajectory=d <= 2)
        corr = result.correlations
        print(
            f"d={d}: eta {result.eta:g}, {result.steps} steps, m {result.m:g}: binary loss "
            f"{result.loss[0]:.3f} -> {result.loss[-1]:.3f}; corr(|W_h|, flip cost) Spearman "
            f"{corr['flip_cost']['spearman']:.3f}, Pearson {corr['flip_cost']['pearson']:.3f}; "
            f"corr(|W_h|, diag H) Spearman {corr['hessian_diagonal']['spearman']:.3f}  [{png}]"
        )
    with open(os.path.join(args.output, "toy.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"Results: {args.output}/")
    return 0


def _analysis_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-meta analyze",
        description="Train the paper's BNN on MNIST, then measure how hidden-weight magnitude "
        "relates to importance: loss increase of sign flips per |W_h| bin (Fig. 5c-e), "
        "correlation of |W_h| with the EWC Fisher, and hidden-weight histograms.",
    )
    parser.add_argument("--m", type=float, nargs="+", default=[1.35],
                        help="metaplastic m, one model each (1.35)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (512)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (2)")
    parser.add_argument("--train-size", type=int, default=20000,
                        help="training images used (20000)")
    parser.add_argument("--lr", type=float, default=0.005, help="learning rate (0.005)")
    parser.add_argument("--bins", type=int, default=10, help="bins of |W_h| (10)")
    parser.add_argument("--sample", type=int, default=200,
                        help="weights flipped per bin and run (200)")
    parser.add_argument("--runs", type=int, default=3, help="random draws per bin (3)")
    parser.add_argument("--binning", choices=("quantile", "uniform"), default="quantile",
                        help="equal-count or equal-width bins (quantile)")
    parser.add_argument("--eval-size", type=int, default=10000,
                        help="training images the loss increase is measured on (10000)")
    parser.add_argument("--fisher-samples", type=int, default=2000,
                        help="samples for the Fisher (2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed (1)")
    parser.add_argument("--output", default="runs/analyze", help="output folder (runs/analyze)")
    return parser


def train_mnist_bnn(
    m: float,
    *,
    width: int = 512,
    epochs: int = 2,
    train_size: int | None = 20000,
    lr: float = 0.005,
    batch_size: int = 100,
    seed: int = 1,
    data=None,
) -> tuple[tf.keras.Model, tuple[np.ndarray, np.ndarray]]:
    """A `paper_mlp` (784-width-width-10) trained with `MetaplasticAdam(m)` on MNIST.

    # Returns
        `(model, (x_train, y_train))`, the training data as used (flattened `uint8`).
    """
    from larq_meta.models import paper_mlp
    from larq_meta.optimizers import MetaplasticAdam

    if data is None:
        from larq_meta.datasets import load_mnist

        data = load_mnist()
    (x, y), _ = data
    x = np.asarray(x).reshape(len(x), -1)[:train_size]
    y = np.asarray(y)[:train_size]
    tf.keras.utils.set_random_seed(seed)
    model = paper_mlp((width, width))
    model.compile(
        optimizer=MetaplasticAdam(m=m, learning_rate=lr),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(make_dataset((x, y), batch_size, shuffle=True, seed=seed), epochs=epochs, verbose=0)
    return model, (x, y)


def analysis_main(argv: Sequence[str] | None = None) -> int:
    """`larq-meta analyze`: for each `--m`, train a BNN on MNIST and write the importance
    tables, Fisher correlations (JSON) and plots (PNG)."""
    from larq_meta import plots

    args = _analysis_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    os.makedirs(args.output, exist_ok=True)
    summary, snapshots = {}, []
    for m in args.m:
        label = f"m={m:g}"
        print(f"== {label}: training 784-{args.width}-{args.width}-10 for {args.epochs} epoch(s) "
              f"on {args.train_size} MNIST images ==")
        model, (x, y) = train_mnist_bnn(m, width=args.width, epochs=args.epochs,
                                        train_size=args.train_size, lr=args.lr, seed=args.seed)
        evaluation = (x[: args.eval_size], y[: args.eval_size])
        tables = {}
        for layer in binarized_layers(model):
            tables[layer] = flip_importance(
                model, evaluation, layer, bins=args.bins, sample=args.sample, runs=args.runs,
                binning=args.binning, seed=args.seed,
            )
            print(tables[layer])
        fisher = fisher_correlation(model, (x, y), args.fisher_samples, seed=args.seed)
        for layer, values in fisher.items():
            print(f"corr(|W_h|, Fisher) {layer}: Spearman {values['spearman']:.3f}, "
                  f"Pearson {values['pearson']:.3f} ({values['n']} weights)")
        name = f"m{m:g}"
        plot_flip_importance(tables, os.path.join(args.output, f"flip_importance_{name}.png"),
                             title=f"loss increase of sign flips, {label}")
        snapshots.append(hidden_weights(model))
        summary[label] = {
            "flip_importance": {k: t.to_dict() for k, t in tables.items()},
            "fisher_correlation": fisher,
        }
    plots.plot_hidden_weights(snapshots, os.path.join(args.output, "hidden_weights.png"),
                              labels=[f"m={m:g}" for m in args.m])
    with open(os.path.join(args.output, "analysis.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"Results and plots: {args.output}/")
    return 0
