"""What the hidden weights of a trained BNN say about importance (Laborieux et al. 2021, Fig. 5c-e).

In a BNN the hidden weight `W_h` of a synapse only acts through its binary weight
`W_b = sign(W_h)`, yet its magnitude carries information: a weight whose sign the loss keeps
confirming grows, so a large `|W_h|` marks a synapse whose flip would cost a lot.
Metaplasticity uses `|W_h|` as the consolidation signal for that reason. This module measures
it on Keras models:

- `binarized_variables` / `hidden_weights`: the binarized variables of a model (larq
  quantized variables with a precision-1 quantizer) and copies of their hidden values, e.g.
  for histograms (Fig. 2g,h; `larq_meta.plots.plot_hidden_weights`).
- `flip_importance`: the loss increase caused by flipping the signs of weights, per bin of
  `|W_h|` (Fig. 5c-e; `larq_meta.plots.plot_flip_importance`). Larger `|W_h|` bins should
  cost more.
- `fisher_correlation`: rank and linear correlation between `|W_h|` and the EWC Fisher
  importance of the same weights.
- `train_mnist_bnn`: the MNIST model these analyses run on in `larq-meta analyze`.

The exactly solvable quadratic counterpart (Fig. 5a,b) is `larq_meta.quadratic`.

!!! example
    ```python
    model, (x, y) = larq_meta.hidden_weights.train_mnist_bnn(1.35, width=512, epochs=2)
    table = larq_meta.hidden_weights.flip_importance(model, (x, y), "dense_2")
    print(table)
    larq_meta.plots.plot_flip_importance(table, "flips.png")
    ```
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from larq_meta import _utils
from larq_meta._utils import (
    check_float,
    check_int,
    iter_layers,
    model_outputs_logits,
    reject_unexpected,
    renamed_argument,
)
from larq_meta.optimizers import is_binarized, latent
from larq_meta.tasks import Data, make_dataset

__all__ = [
    "binarized_variables",
    "hidden_weights",
    "correlation",
    "ImportanceTable",
    "flip_importance",
    "fisher_correlation",
    "train_mnist_bnn",
]

logger = logging.getLogger(__name__)


# -- hidden weights -------------------------------------------------------------------------------


def binarized_variables(model: tf.keras.Model) -> dict[str, tf.Variable]:
    """The binarized variables of `model`, by layer, in model order (nested models included).

    A variable is binarized when it is a larq `QuantizedVariable` whose quantizer has
    precision 1 (`larq_meta.optimizers.is_binarized`): its forward value is
    `W_b = sign(W_h)` of a real-valued hidden (latent) weight `W_h`.

    !!! example
        ```python
        model = larq_meta.models.paper_mlp((512, 512))
        list(binarized_variables(model))  # ["dense_1", "dense_2", "dense_3"]
        ```

    # Arguments
        model: A Keras model, e.g. `larq_meta.models.paper_mlp`.

    # Returns
        A dict name -> variable. The name is the layer's name, or `"<layer>/<weight>"` for a
        layer with several binarized variables. Empty for a model without any.
    """
    found: dict[str, tf.Variable] = {}
    for layer in iter_layers(model):
        weights = [w for w in layer.trainable_weights if is_binarized(w)]
        for w in weights:
            short = w.name.split("/")[-1].split(":")[0]
            found[layer.name if len(weights) == 1 else f"{layer.name}/{short}"] = w
    return found


def hidden_weights(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Copies of the hidden weights `W_h` of every binarized variable of `model`.

    # Arguments
        model: A Keras model.

    # Returns
        A dict name (as `binarized_variables`) -> copy of the hidden weights, e.g.
        `{"dense_1": (784, 1024) array, ...}`; empty for a model without binarized variables.
        `larq_meta.plots.plot_hidden_weights` takes a list of these (one per task).
    """
    return {name: latent(v).numpy().copy() for name, v in binarized_variables(model).items()}


def correlation(a, b) -> dict[str, float]:
    """Pearson and Spearman (rank) correlation of two equally long arrays (flattened).

    `pearson = sum (a_i - mean a)(b_i - mean b) / sqrt(sum (a_i - mean a)² sum (b_i - mean b)²)`;
    `spearman` is the same coefficient on the ranks of `a` and `b`, tied values sharing their
    average rank (as `scipy.stats.spearmanr`).

    !!! example
        ```python
        correlation(np.abs(w_h), fisher)  # {"pearson": 0.41, "spearman": 0.63, "n": 262144}
        ```

    # Arguments
        a, b: Array-likes with the same number of elements.

    # Returns
        `{"pearson": r, "spearman": rho, "n": n}`; a coefficient is NaN when one side is
        constant.

    # Raises
        ValueError: if the sizes differ.
    """
    return _utils.correlation(a, b)


# -- importance of weights by flipping their signs -------------------------------------------------


@dataclasses.dataclass
class ImportanceTable:
    """Loss increase caused by flipping the signs of binarized weights, per bin of `|W_h|`.

    For bin `k` and run `r` a set `S_kr` of weights of the bin is flipped
    (`W_h,i -> -W_h,i` for `i` in `S_kr`) and
    `loss_increase[k] = mean_r [L(W with S_kr flipped) - L(W)]`.

    # Attributes
        layer: Name of the binarized variable (as `binarized_variables`).
        edges: Bin edges of `|W_h|` (`bins + 1` values).
        count: Weights per bin.
        flipped: Weights flipped per run in each bin (`|S_kr|`).
        mean_abs: Mean `|W_h|` of the flipped weights per bin (averaged over runs).
        relative_magnitude: `mean_abs / max |W_h|` (the paper's x axis).
        loss_increase: Mean over runs of `L(flipped) - L(original)` per bin (NaN: empty bin).
        loss_increase_std: Its standard deviation over runs.
        per_weight: `loss_increase / flipped` (the reference code's normalization).
        base_loss: The loss `L(W)` before any flip.
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
        """The table as JSON-friendly lists and numbers."""
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


def _batches(data: Data, num_samples: int | None, batch_size: int) -> list:
    if isinstance(data, tf.data.Dataset):
        if num_samples is not None:
            data = data.take(num_samples)
    elif num_samples is not None:
        data = (np.asarray(data[0])[:num_samples], np.asarray(data[1])[:num_samples])
    return [(x, tf.reshape(y, (-1,))) for x, y in make_dataset(data, batch_size)]


def _loss_sum(model: tf.keras.Model, from_logits: bool):
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
    eval_samples: int | None = None,
    eval_batch_size: int = 1000,
    from_logits: bool | None = None,
    seed: int | None = 1,
    **deprecated,
) -> ImportanceTable:
    """How much the loss rises when the signs of weights with a given `|W_h|` are flipped.

    The weights of the binarized variable `layer` are split into `bins` bins of `|W_h|`. For
    each bin `k` and each of `runs` draws `r`, `sample` weights `S_kr` of the bin are chosen at
    random and their hidden weights negated, which flips their binary weights and keeps
    `|W_h|`; then

    `ΔL_kr = L(W with W_h,i -> -W_h,i for i in S_kr) - L(W)`

    is measured, where `L` is the mean sparse categorical cross-entropy of the true labels of
    `data` in inference mode (`training=False`, BatchNorm moving statistics). The weights are
    restored exactly afterwards (also on error). This is the paper's Fig. 5c-e: in a trained
    BNN, bins of larger `|W_h|` cost more.

    !!! example
        ```python
        table = flip_importance(model, (x_train, y_train), "dense_2", bins=10, sample=200)
        print(table)
        larq_meta.plots.plot_flip_importance(table, "flips.png")
        ```

    # Arguments
        model: A model with binarized variables (e.g. `paper_mlp`), trained on `data`'s task.
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset`, usually the learned task's
            training data (as the reference) or test data.
        layer: Name of a binarized variable (a key of `binarized_variables(model)`); None:
            the first one.
        bins: Number of bins.
        sample: Weights flipped per bin and run (all of the bin if it has fewer; None: all).
        runs: Random draws per bin (mean and standard deviation reported).
        binning: `"quantile"` (equal-count bins, default) or `"uniform"` (equal-width bins
            over `[0, max |W_h|]`, as the reference; empty bins report NaN).
        eval_samples: Use only the first `eval_samples` samples of `data` (None: all).
        eval_batch_size: Evaluation batch size.
        from_logits: Whether the model outputs logits (None: from the compiled loss).
        seed: Seed of the random choice of flipped weights.
        **deprecated: `num_samples` (now `eval_samples`) and `batch_size` (now
            `eval_batch_size`), with a `DeprecationWarning`.

    # Returns
        An `ImportanceTable` (`str()` gives a text table; `to_dict()` a JSON-friendly dict).

    # Raises
        ValueError: for a model without binarized variables, an unknown `layer`, empty `data`
            or an argument out of range (the message names it).
    """
    eval_samples = renamed_argument(deprecated, "num_samples", "eval_samples", eval_samples)
    eval_batch_size = renamed_argument(deprecated, "batch_size", "eval_batch_size", eval_batch_size)
    reject_unexpected("flip_importance", deprecated)
    variables = binarized_variables(model)
    if not variables:
        raise ValueError(
            "The model has no binarized variable (a larq quantized variable with a precision-1 "
            "quantizer), so there is no hidden weight to flip."
        )
    if layer is None:
        layer = next(iter(variables))
    if layer not in variables:
        raise ValueError(f"No binarized variable {layer!r}; the model has: {list(variables)}.")
    bins = check_int(bins, "bins")
    runs = check_int(runs, "runs")
    eval_batch_size = check_int(eval_batch_size, "eval_batch_size")
    if sample is not None:
        sample = check_int(sample, "sample")
    if eval_samples is not None:
        eval_samples = check_int(eval_samples, "eval_samples")
    if binning not in ("quantile", "uniform"):
        raise ValueError(f'`binning` must be "quantile" or "uniform", got {binning!r}.')

    variable = latent(variables[layer])
    original = variable.numpy().copy()
    magnitude = np.abs(original).ravel()
    if binning == "quantile":
        edges = np.quantile(magnitude, np.linspace(0, 1, bins + 1))
    else:
        edges = np.linspace(0, magnitude.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, magnitude, side="right") - 1, 0, bins - 1)

    batches = _batches(data, eval_samples, eval_batch_size)
    if not batches:
        raise ValueError("flip_importance: `data` is empty.")
    total = sum(int(tf.shape(y)[0]) for _, y in batches)
    batch_loss_sum = _loss_sum(model, model_outputs_logits(model, from_logits))

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
            logger.debug("flip_importance %s bin %d: loss increase %.5f", layer, k, increase[k])
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
    fisher_batch_size: int | None = None,
    from_logits: bool | None = None,
    seed: int | None = 1,
    **deprecated,
) -> dict[str, dict[str, float]]:
    """Correlation between `|W_h|` and the EWC Fisher importance of the same weights.

    The Fisher is the diagonal empirical Fisher of
    `larq_meta.consolidation.empirical_fisher`,
    `F_i = 1/N sum_n (d log p(y_n | x_n) / d W_h,i)²` over `N = fisher_samples` samples of
    `data` with their true labels `y_n`. If the hidden-weight magnitude is an importance
    signal, as the paper argues, the two agree: positive correlations (see `correlation`),
    especially the rank (Spearman) one.

    !!! example
        ```python
        result = fisher_correlation(model, (x_train, y_train), 2000)
        result["all"]["spearman"]
        ```

    # Arguments
        model: A model with binarized variables.
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset` of the learned task.
        fisher_samples: Samples for the Fisher.
        fisher: A precomputed Fisher (variable name -> array, e.g. `EWC.last_fisher`)
            instead of computing one.
        fisher_batch_size, from_logits, seed: As in `empirical_fisher`.
        **deprecated: `batch_size` (now `fisher_batch_size`), with a `DeprecationWarning`.

    # Returns
        Name (as `binarized_variables`) -> `{"pearson", "spearman", "n"}`, plus `"all"` for
        all binarized variables pooled.

    # Raises
        ValueError: for a model without binarized variables, or a `fisher` that misses one.
    """
    from larq_meta.consolidation import empirical_fisher

    fisher_batch_size = renamed_argument(
        deprecated, "batch_size", "fisher_batch_size", fisher_batch_size)
    reject_unexpected("fisher_correlation", deprecated)
    variables = binarized_variables(model)
    if not variables:
        raise ValueError(
            "The model has no binarized variable (a larq quantized variable with a precision-1 "
            "quantizer) to correlate with the Fisher."
        )
    if fisher is None:
        fisher = empirical_fisher(
            model, data, check_int(fisher_samples, "fisher_samples"),
            apply_to=list(variables.values()),
            fisher_batch_size=fisher_batch_size, from_logits=from_logits, seed=seed,
        )
    result, pooled_w, pooled_f = {}, [], []
    for name, variable in variables.items():
        if variable.name not in fisher:
            raise ValueError(f"`fisher` has no entry {variable.name!r} for {name!r}.")
        w = np.abs(latent(variable).numpy()).ravel()
        f = np.asarray(fisher[variable.name]).ravel()
        result[name] = correlation(w, f)
        pooled_w.append(w)
        pooled_f.append(f)
    result["all"] = correlation(np.concatenate(pooled_w), np.concatenate(pooled_f))
    return result


# -- the model of `larq-meta analyze` -------------------------------------------------------------


def train_mnist_bnn(
    m: float,
    *,
    width: int = 512,
    epochs: int = 2,
    train_size: int | None = 20000,
    learning_rate: float = 0.005,
    batch_size: int = 100,
    seed: int = 1,
    data=None,
    jit_compile: bool = True,
    **deprecated,
) -> tuple[tf.keras.Model, tuple[np.ndarray, np.ndarray]]:
    """A `paper_mlp` (784-width-width-10) trained with `MetaplasticAdam(m=m)` on MNIST.

    The model comes from `larq_meta.models.compiled_paper_mlp((width, width), m=m,
    learning_rate=learning_rate)`; it is trained for `epochs` epochs on the first
    `train_size` training images, shuffled with `seed`.

    !!! example
        ```python
        model, (x, y) = train_mnist_bnn(1.35, width=128, epochs=1, train_size=10000)
        flip_importance(model, (x, y), "dense_2")
        ```

    # Arguments
        m: Metaplastic damping strength of `MetaplasticAdam`.
        width: Hidden units per layer.
        epochs: Training epochs.
        train_size: Use the first `train_size` training images (None: all 60 000).
        learning_rate: Learning rate of `MetaplasticAdam`.
        batch_size: Training batch size.
        seed: Seed of initialization and data order (`tf.keras.utils.set_random_seed`).
        data: `((x_train, y_train), (x_test, y_test))` to use instead of
            `larq_meta.datasets.load_mnist()`.
        jit_compile: Compile the training step with XLA (as `compiled_paper_mlp`).
        **deprecated: `lr` (now `learning_rate`), with a `DeprecationWarning`.

    # Returns
        `(model, (x_train, y_train))`, the training data as used (flattened, as loaded).
    """
    from larq_meta.models import compiled_paper_mlp

    learning_rate = renamed_argument(deprecated, "lr", "learning_rate", learning_rate)
    reject_unexpected("train_mnist_bnn", deprecated)
    m = check_float(m, "m", minimum=0)
    learning_rate = check_float(learning_rate, "learning_rate", positive=True)
    width = check_int(width, "width")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    if train_size is not None:
        train_size = check_int(train_size, "train_size")
    if data is None:
        from larq_meta.datasets import load_mnist

        data = load_mnist()
    (x, y), _ = data
    x = np.asarray(x).reshape(len(x), -1)[:train_size]
    y = np.asarray(y)[:train_size]
    tf.keras.utils.set_random_seed(seed)
    model = compiled_paper_mlp(
        (width, width), m=m, learning_rate=learning_rate, input_shape=(x.shape[1],),
        jit_compile=jit_compile,
    )
    model.fit(make_dataset((x, y), batch_size, shuffle=True, seed=seed), epochs=epochs, verbose=0)
    return model, (x, y)
