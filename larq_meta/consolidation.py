"""Elastic Weight Consolidation (EWC) and random consolidation for binarized networks.

The paper compares metaplasticity with EWC applied to the same BNN (Laborieux et al. 2021,
Fig. 3 and Supp.): after each task `k`, the diagonal empirical Fisher information `F_k` of
the weights is estimated and every later task is trained with the extra loss

```
lambda/2 * sum_k sum_i F_k,i * (theta_i - theta*_k,i)²
```

where `theta*_k` are the weights at the end of task `k`. "Random consolidation" is the same
penalty with each layer's Fisher values shuffled across its weights: as much total
consolidation, but on the wrong synapses. It tells whether EWC's benefit comes from *which*
weights it protects.

Here the penalty is attached to the model with `model.add_loss`, so plain `model.fit` (and
`larq_meta.training.train_sequence`) trains with it and reports it in the `loss` it logs.

!!! example
    ```python
    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3)
    model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
    model.compile(optimizer=larq_meta.MetaplasticAdam(m=0.0, learning_rate=0.005),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ewc = larq_meta.consolidation.EWC(lambda_=5000, fisher_samples=5000)
    result = larq_meta.training.train_sequence(model, tasks, callbacks=[ewc])
    ```
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from larq_meta._utils import check_int, model_outputs_logits, reject_unexpected, renamed_argument
from larq_meta.batchnorm import batchnorm_layers
from larq_meta.callbacks import TaskCallback
from larq_meta.distribute import model_strategy
from larq_meta.optimizers import is_binarized, latent
from larq_meta.tasks import Data, Task, TaskSequence, make_dataset

__all__ = [
    "EWC",
    "RandomConsolidation",
    "consolidated_variables",
    "empirical_fisher",
    "shuffle_fisher",
]

#: Memory budget (bytes) of one chunk of per-sample gradients when `fisher_batch_size` is automatic.
FISHER_CHUNK_BYTES = 256 * 2**20


def _variable_key(variable: tf.Variable) -> str:
    return variable.name


def consolidated_variables(
    model: tf.keras.Model, apply_to: str = "binarized", **deprecated
) -> list[tf.Variable]:
    """The weights EWC consolidates.

    # Arguments
        model: A Keras model.
        apply_to: `"binarized"` (default): the hidden weights of binarized kernels (larq
            `QuantizedVariable`s of precision 1). `"all"`: every trainable weight except those
            of BatchNormalization layers (float kernels, biases, binarized kernels).
            (Formerly `variables=`.)

    BatchNorm parameters are never consolidated, as in the reference implementation: the
    evaluation protocols give each task its own BatchNorm state instead
    (`larq_meta.batchnorm`).
    """
    apply_to = renamed_argument(deprecated, "variables", "apply_to", apply_to)
    reject_unexpected("consolidated_variables", deprecated)
    if apply_to == "binarized":
        chosen = [v for v in model.trainable_variables if is_binarized(v)]
    elif apply_to == "all":
        bn = {id(v) for layer in batchnorm_layers(model) for v in layer.weights}
        chosen = [v for v in model.trainable_variables if id(v) not in bn]
    else:
        raise ValueError(f'`apply_to` must be "binarized" or "all", got {apply_to!r}.')
    if not chosen and apply_to == "binarized":
        raise ValueError(
            'The model has no binarized weights to consolidate (use apply_to="all" for a '
            "float model)."
        )
    if not chosen:
        raise ValueError("The model has no trainable non-BatchNorm weights to consolidate.")
    return chosen


def _sample_data(data: Data, num_samples: int, seed: int | None) -> Data:
    """At most `num_samples` samples of `data`: a seeded random subset (all when fewer)."""
    if isinstance(data, tf.data.Dataset):
        if seed is not None:
            data = data.shuffle(10_000, seed=seed, reshuffle_each_iteration=False)
        return data.take(num_samples)
    x, y = data
    n = len(x)
    if num_samples >= n:
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(n, size=num_samples, replace=False))
    return np.asarray(x)[index], np.asarray(y)[index]


def _auto_chunk(variables: Sequence[tf.Variable]) -> int:
    size = sum(int(np.prod(v.shape)) for v in variables) * 4
    return int(max(1, min(64, FISHER_CHUNK_BYTES // max(size, 1))))


#: model -> {(variable ids, from_logits, input spec): traced per-chunk function}
_FISHER_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fisher_function(model, variables, from_logits: bool, element_spec):
    """`(x, y) -> [sum over the chunk of squared per-sample gradients]`, traced once per model,
    variable list and input signature (and reused for every task)."""
    x_spec, y_spec = element_spec
    y_spec = tf.TensorSpec((None,), y_spec.dtype)
    key = (tuple(id(v) for v in variables), from_logits, repr(x_spec), repr(y_spec))
    cache = _FISHER_FUNCTIONS.setdefault(model, {})
    if key in cache:
        return cache[key]

    def squared_gradient(sample):
        x, y = sample
        with tf.GradientTape() as tape:
            out = model(x[None], training=False)
            nll = tf.keras.losses.sparse_categorical_crossentropy(
                tf.reshape(y, (1,)), out, from_logits=from_logits
            )[0]
        grads = tape.gradient(nll, variables)
        return [
            tf.zeros(v.shape, v.dtype) if g is None else tf.square(tf.convert_to_tensor(g))
            for g, v in zip(grads, variables)
        ]

    @tf.function(input_signature=[x_spec, y_spec])
    def chunk_sum(x, y):
        squares = tf.vectorized_map(squared_gradient, (x, y))
        return [tf.reduce_sum(s, axis=0) for s in squares]

    cache[key] = chunk_sum
    return chunk_sum


def empirical_fisher(
    model: tf.keras.Model,
    data: Data,
    fisher_samples: int = 5000,
    *,
    apply_to: str | Sequence[tf.Variable] = "binarized",
    fisher_batch_size: int | None = None,
    from_logits: bool | None = None,
    seed: int | None = 1,
    **deprecated,
) -> dict[str, np.ndarray]:
    """Diagonal empirical Fisher information of `model` on `data`.

    `F_i = 1/N sum_n (d log p(y_n | x_n) / d theta_i)²` over `N = min(fisher_samples, len(data))`
    samples, where `y_n` is the true label ("empirical" Fisher), exactly as the reference
    implementation's `estimate_fisher` with batches of size 1. The per-sample gradients are
    computed `fisher_batch_size` samples at a time with `tf.vectorized_map` (one gradient per
    sample, not the gradient of a batch mean), so the result is the batch-size-1 value.

    The model runs in inference mode (`training=False`): BatchNorm normalizes with its moving
    statistics, which is what makes a single sample's gradient well defined. For a binarized
    kernel the gradient is that of the hidden weight through the straight-through estimator.

    # Arguments
        model: A Keras model whose outputs are class scores (logits or probabilities).
        data: `(x, y)` arrays or a `tf.data.Dataset` of unbatched `(x, y)` samples; integer
            labels. Integer images are scaled to `[0, 1]` as in training (`make_dataset`).
        fisher_samples: Number of samples (the paper: 5000). With fewer samples, all are
            used. (Formerly `num_samples`.)
        apply_to: `"binarized"`, `"all"` (see `consolidated_variables`) or a list of
            variables. (Formerly `variables`.)
        fisher_batch_size: Samples per vectorized chunk; None picks one that keeps a chunk's
            per-sample gradients under `FISHER_CHUNK_BYTES` (256 MiB), at most 64.
            (Formerly `batch_size`.)
        from_logits: Whether the model outputs logits; None reads it from the compiled loss
            (default True).
        seed: Seed of the random choice of samples when `data` has more than `fisher_samples`
            (arrays: a uniform choice; a dataset: its first samples after a shuffle with a
            10 000-sample buffer, or its first samples with `seed=None`).

    # Returns
        A dict variable name (e.g. `"dense_1/kernel:0"`) -> Fisher array of the variable's
        shape (float32).
    """
    fisher_samples = renamed_argument(deprecated, "num_samples", "fisher_samples", fisher_samples)
    fisher_batch_size = renamed_argument(
        deprecated, "batch_size", "fisher_batch_size", fisher_batch_size
    )
    apply_to = renamed_argument(deprecated, "variables", "apply_to", apply_to)
    reject_unexpected("empirical_fisher", deprecated)
    check_int(fisher_samples, "fisher_samples")
    variables = consolidated_variables(model, apply_to) if isinstance(apply_to, str) else list(apply_to)
    logits = model_outputs_logits(model, from_logits)
    chunk = fisher_batch_size or _auto_chunk(variables)
    dataset = make_dataset(_sample_data(data, int(fisher_samples), seed), chunk)

    chunk_sum = _fisher_function(model, variables, logits, dataset.element_spec)
    totals = [np.zeros(v.shape, np.float64) for v in variables]
    count = 0
    for x, y in dataset:
        for total, part in zip(totals, chunk_sum(x, tf.reshape(y, (-1,)))):
            total += part.numpy()
        count += int(tf.shape(x)[0])
    if count == 0:
        raise ValueError("empirical_fisher: `data` is empty.")
    return {_variable_key(v): (t / count).astype(np.float32) for v, t in zip(variables, totals)}


def shuffle_fisher(fisher: dict[str, np.ndarray], seed: int | None = None) -> dict[str, np.ndarray]:
    """Random consolidation: each array's values permuted at random across its elements.

    Every layer keeps exactly its multiset of Fisher values (so the same total and the same
    distribution of consolidation), but they land on random weights.
    """
    rng = np.random.default_rng(seed)
    return {
        name: np.asarray(f).ravel()[rng.permutation(np.size(f))].reshape(np.shape(f))
        for name, f in fisher.items()
    }


class EWC(TaskCallback):
    """Elastic Weight Consolidation as a task callback (`larq_meta.callbacks.TaskCallback`).

    When attached (first `on_train_begin`), the callback adds the penalty to the model with
    `model.add_loss(callable)`; the callable reads `tf.Variable`s, so the compiled train step
    includes it and always sees their current values. The cached train and test functions
    are rebuilt once at that moment, so a model that was trained before also gets it. The
    `loss` that `fit` (and `evaluate`) reports then includes the penalty. The penalty is not
    saved with the model (`model.save`) nor in `train_sequence` checkpoints: keep
    `get_state()` yourself to resume a run mid-sequence.

    At the end of each task (`on_task_end(k, task)`, called by `train_sequence` or your loop)
    the callback estimates the
    empirical Fisher `F_k` of the consolidated weights on that task's training data
    (`empirical_fisher`, `fisher_samples` samples, per-sample gradients) and adds task `k`
    to the penalty. The sum over tasks is stored in an exactly equivalent, constant-size
    form, `sum_k F_k (theta - theta*_k)² = A (theta - M)² + c` with `A = sum_k F_k`,
    `M = sum_k F_k theta*_k / A` and a constant `c`, so memory does not grow with the
    number of tasks.

    Under a `tf.distribute` strategy (model built in `strategy.scope()`), the penalty's
    variables are mirrored like the weights and each replica's loss carries its share of the
    penalty, so the update is the single-device one; the Fisher is computed once, on the full
    sample, in every worker (identical weights give identical values).

    Before the first task ends the penalty is 0. BatchNorm parameters are not consolidated
    (as in the reference); pair the callback with a BatchNorm protocol (`TaskEvaluation`'s
    `bn_protocol`) for evaluation.

    Where the Fisher data comes from (`fisher_data`):

    - `"task"` (default): the ended task's training data, `task.train` (a seeded random
      subset of `fisher_samples`; task `k` uses seed `seed + k`).
    - `"recorded"`: the last `fisher_samples` training samples the model was fed during the
      task (inputs exactly as batched, e.g. already scaled), recorded by wrapping
      `model.train_step`; with shuffled data these are a random subset of the task. It needs
      one input tensor whose shape (without the batch axis) is fully known, and integer
      labels.

    !!! example
        ```python
        ewc = EWC(lambda_=5000, fisher_samples=5000)
        for k, task in enumerate(tasks):
            ewc.on_task_begin(k, task)
            model.fit(*task.train, epochs=5, batch_size=100, callbacks=[ewc])
            ewc.on_task_end(k, task)
        ```

    # Arguments
        lambda_: Penalty strength `lambda` (the paper: 5000), a finite float >= 0.
        fisher_samples: Samples of each task used for its Fisher (the paper: 5000).
        apply_to: `"binarized"` (hidden weights of binarized kernels, default) or `"all"`
            (every trainable non-BatchNorm weight). (Formerly `variables`.)
        penalty_on: `"hidden"` (default): the penalty acts on the hidden weights `W_h`
            and anchors `W_h*`. `"sign"`: on `sign(W_h)` with straight-through gradient and
            anchors `sign(W_h*)`, which is what the reference code ends up computing (its
            weights hold their signs after each forward pass). Float weights are always
            used as they are.
        shuffle_fisher: Random consolidation: shuffle each layer's Fisher values across its
            weights before use (`shuffle_fisher`).
        seed: Seed of the Fisher sample choice and of the shuffles (task k uses `seed + k`).
        fisher_data: `"task"` or `"recorded"` (see above).
        fisher_batch_size: Samples per vectorized chunk of per-sample gradients (None: auto).
        from_logits: Whether the model outputs logits (None: from the compiled loss).
        verbose: Log a line (`logging`, INFO) when a task is consolidated.

    # Attributes
        consolidated_tasks: Indices of the tasks added to the penalty, in order.
        last_fisher: The last task's Fisher (before any shuffle), name -> array.
        last_importance: What was added to the penalty for it (shuffled for random
            consolidation), name -> array.

    # References
        - [Kirkpatrick, J. et al. Overcoming catastrophic forgetting in neural networks.
          PNAS 114, 3521 (2017)](https://doi.org/10.1073/pnas.1611835114)
        - [Laborieux, A. et al. Synaptic metaplasticity in binarized neural networks.
          Nat. Commun. 12, 2549 (2021)](https://doi.org/10.1038/s41467-021-22768-y)
    """

    def __init__(
        self,
        lambda_: float = 5000.0,
        fisher_samples: int = 5000,
        *,
        apply_to: str = "binarized",
        penalty_on: str = "hidden",
        shuffle_fisher: bool = False,
        seed: int | None = 1,
        fisher_data: str = "task",
        fisher_batch_size: int | None = None,
        from_logits: bool | None = None,
        verbose: bool = False,
        **deprecated,
    ):
        super().__init__()
        self.task_data = None
        if "tasks" in deprecated:
            tasks = deprecated.pop("tasks")
            warnings.warn(
                "EWC(tasks=...) is deprecated: the task callback protocol passes each task to "
                "`on_task_end`.", DeprecationWarning, stacklevel=2,
            )
            if tasks is None:  # the old way of asking for recorded samples
                fisher_data = "recorded"
            else:
                self.task_data = [t.train if isinstance(t, Task) else t for t in tasks]
        apply_to = renamed_argument(deprecated, "variables", "apply_to", apply_to)
        reject_unexpected("EWC", deprecated)
        if isinstance(lambda_, bool) or not isinstance(lambda_, numbers.Real) or not (
            math.isfinite(lambda_) and lambda_ >= 0
        ):
            raise ValueError(f"`lambda_` must be a finite float >= 0, got {lambda_!r}.")
        check_int(fisher_samples, "fisher_samples")
        if apply_to not in ("binarized", "all"):
            raise ValueError(f'`apply_to` must be "binarized" or "all", got {apply_to!r}.')
        if penalty_on not in ("hidden", "sign"):
            raise ValueError(f'`penalty_on` must be "hidden" or "sign", got {penalty_on!r}.')
        if fisher_data not in ("task", "recorded"):
            raise ValueError(f'`fisher_data` must be "task" or "recorded", got {fisher_data!r}.')
        if fisher_batch_size is not None:
            check_int(fisher_batch_size, "fisher_batch_size")
        self.lambda_ = float(lambda_)
        self.fisher_samples = int(fisher_samples)
        self.apply_to = apply_to
        self.penalty_on = penalty_on
        self.shuffle_fisher = bool(shuffle_fisher)
        self.seed = seed
        self.fisher_data = fisher_data
        self.fisher_batch_size = fisher_batch_size
        self.from_logits = from_logits
        self.verbose = verbose

        self.consolidated_tasks: list[int] = []
        self.last_fisher: dict[str, np.ndarray] = {}
        self.last_importance: dict[str, np.ndarray] = {}
        self._attached_to = None
        self._targets: list[tf.Variable] = []
        self._importance: list[tf.Variable] = []
        self._anchor: list[tf.Variable] = []
        self._offset: tf.Variable | None = None
        self._lambda: tf.Variable | None = None
        self._buffer_x = self._buffer_y = self._seen = None

    @property
    def tasks_consolidated(self) -> int:
        """Number of tasks added to the penalty."""
        return len(self.consolidated_tasks)

    # -- the penalty -------------------------------------------------------------------------
    def _value(self, variable: tf.Variable) -> tf.Tensor:
        value = tf.convert_to_tensor(latent(variable))
        if self.penalty_on == "sign" and is_binarized(variable):
            # sign with a straight-through gradient (identity), as the binarized forward pass
            return value + tf.stop_gradient(tf.where(value >= 0, 1.0, -1.0) - value)
        return value

    def penalty(self) -> tf.Tensor:
        """The current penalty `lambda/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)²`."""
        if self._offset is None:
            return tf.constant(0.0)
        total = self._offset
        for variable, importance, anchor in zip(self._targets, self._importance, self._anchor):
            diff = self._value(variable) - anchor
            total = total + tf.reduce_sum(importance * tf.square(diff))
        return 0.5 * self._lambda * total

    def _attach(self, model: tf.keras.Model) -> None:
        if self._attached_to is model:
            return
        if self._attached_to is not None:
            raise RuntimeError("This EWC callback is attached to another model; use one per model.")
        if not model.built:
            raise ValueError("EWC needs a built model (call it once, or give it an input shape).")
        strategy = model_strategy(model)
        if self.fisher_data == "recorded" and strategy.num_replicas_in_sync > 1:
            raise ValueError(
                'EWC(fisher_data="recorded") records training samples in the train step, which '
                "a tf.distribute strategy runs once per replica; use fisher_data=\"task\"."
            )
        self._targets = consolidated_variables(model, self.apply_to)
        with strategy.scope():  # mirrored like the weights they are compared with
            self._importance = [
                tf.Variable(tf.zeros(v.shape), trainable=False, name="ewc_importance")
                for v in self._targets
            ]
            self._anchor = [
                tf.Variable(tf.zeros(v.shape), trainable=False, name="ewc_anchor")
                for v in self._targets
            ]
            self._offset = tf.Variable(0.0, trainable=False, name="ewc_offset")
            self._lambda = tf.Variable(self.lambda_, trainable=False, name="ewc_lambda")
        if self.fisher_data == "recorded":
            self._install_recorder(model)
        model.add_loss(self.penalty)
        # Cached step functions were traced without the penalty (and the recorder): rebuild.
        model.make_train_function(force=True)
        model.test_function = None
        self._attached_to = model

    # -- recording training samples (tasks=None) ----------------------------------------------
    def _install_recorder(self, model: tf.keras.Model) -> None:
        shape = getattr(model, "input_shape", None)
        if not isinstance(shape, tuple) or any(d is None for d in shape[1:]):
            raise ValueError(
                'EWC(fisher_data="recorded") records training samples' ", which needs a model with one "
                f"input of fully known shape; this model's input shape is {shape!r}. Pass "
                '`fisher_data="task"` instead.'
            )
        n = self.fisher_samples
        self._buffer_x = tf.Variable(tf.zeros((n, *shape[1:])), trainable=False, name="ewc_x")
        self._buffer_y = tf.Variable(tf.zeros((n,), tf.int64), trainable=False, name="ewc_y")
        self._seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="ewc_seen")
        original = model.train_step

        def train_step(data):
            x, y, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
            self._record(x, y)
            return original(data)

        model.train_step = train_step

    def _record(self, x, y) -> None:
        if not tf.is_tensor(x) or y is None or not tf.is_tensor(y):
            raise ValueError(
                'EWC(fisher_data="recorded") needs one input tensor and integer labels per batch.'
            )
        if y.shape.rank is not None and y.shape.rank > 1 and y.shape[-1] != 1:
            raise ValueError(
                f'EWC(fisher_data="recorded") needs integer labels' ", got labels of shape {y.shape} "
                "(one-hot?). Pass `tasks=` or use sparse labels."
            )
        n = self.fisher_samples
        x = tf.cast(x, self._buffer_x.dtype)[-n:]
        y = tf.cast(tf.reshape(y, (-1,)), tf.int64)[-n:]
        count = tf.shape(x, out_type=tf.int64)[0]
        index = (self._seen + tf.range(count, dtype=tf.int64)) % n
        self._buffer_x.scatter_nd_update(index[:, None], x)
        self._buffer_y.scatter_nd_update(index[:, None], y)
        self._seen.assign_add(count)

    def _recorded(self) -> tuple[np.ndarray, np.ndarray]:
        count = int(min(int(self._seen.numpy()), self.fisher_samples))
        if count == 0:
            raise RuntimeError("EWC recorded no training sample during this fit.")
        return self._buffer_x.numpy()[:count], self._buffer_y.numpy()[:count]

    # -- hooks -------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._attach(self.model)

    def on_task_begin(self, task_index, task=None, logs=None):
        self._attach(self.model)
        if self._seen is not None:
            self._seen.assign(0)

    def on_task_end(self, task_index, task=None, logs=None):
        self.consolidate(task_index=task_index, data=self._task_data(task_index, task))

    # -- consolidation -----------------------------------------------------------------------
    def _task_data(self, task_index: int, task: Task | None) -> Data:
        """The data the Fisher of the ended task is computed on."""
        if self.fisher_data == "recorded":
            return self._recorded()
        if self.task_data is not None:  # deprecated `tasks=`
            if task_index >= len(self.task_data):
                raise RuntimeError(
                    f"EWC: task {task_index + 1} ended, but `tasks` gave data for "
                    f"{len(self.task_data)} tasks."
                )
            return self.task_data[task_index]
        if task is None:
            raise ValueError('EWC(fisher_data="task").on_task_end needs the task.')
        return task.train

    def consolidate(self, data: Data, task_index: int | None = None) -> dict[str, np.ndarray]:
        """Add a task to the penalty: estimate its Fisher on `data` (its training data) and
        anchor the weights at their current values. Called by `on_task_end`.

        # Arguments
            data: `(x, y)` arrays or a `tf.data.Dataset` (see `empirical_fisher`).
            task_index: The task's index, for the seed (`seed + task_index`); default: the
                number of tasks consolidated so far.

        # Returns
            The importance added (the Fisher, shuffled for random consolidation).
        """
        self._attach(self.model)
        k = len(self.consolidated_tasks) if task_index is None else int(task_index)
        seed = None if self.seed is None else self.seed + k
        fisher = empirical_fisher(
            self.model,
            data,
            self.fisher_samples,
            apply_to=self._targets,
            fisher_batch_size=self.fisher_batch_size,
            from_logits=self.from_logits,
            seed=seed,
        )
        importance = shuffle_fisher(fisher, seed) if self.shuffle_fisher else fisher
        offset = float(self._offset.numpy())
        for variable, imp_var, anchor_var in zip(self._targets, self._importance, self._anchor):
            f = importance[_variable_key(variable)].astype(np.float64)
            star = np.asarray(tf.convert_to_tensor(self._value(variable)), np.float64)
            a_old = imp_var.numpy().astype(np.float64)
            m_old = anchor_var.numpy().astype(np.float64)
            a_new = a_old + f
            safe = np.where(a_new > 0, a_new, 1.0)
            m_new = np.where(a_new > 0, (a_old * m_old + f * star) / safe, star)
            offset += float(np.sum(a_old * (m_new - m_old) ** 2 + f * (m_new - star) ** 2))
            imp_var.assign(a_new.astype(np.float32))
            anchor_var.assign(m_new.astype(np.float32))
        self._offset.assign(offset)
        self.last_fisher = fisher
        self.last_importance = importance
        self.consolidated_tasks.append(k)
        if self.verbose:
            total = sum(float(np.sum(f)) for f in fisher.values())
            logging.getLogger(__name__).info(
                "EWC: task %d consolidated (Fisher sum %.4g, %s).", k + 1, total,
                "shuffled" if self.shuffle_fisher else "in place",
            )
        return importance

    # -- state a checkpoint needs ------------------------------------------------------------
    def get_state(self) -> dict:
        """Accumulated importance, anchors and offset (numpy), to save beside a checkpoint."""
        return {
            "consolidated_tasks": list(self.consolidated_tasks),
            "importance": [v.numpy() for v in self._importance],
            "anchor": [v.numpy() for v in self._anchor],
            "offset": None if self._offset is None else float(self._offset.numpy()),
        }

    def set_state(self, state: dict) -> None:
        """Restore `get_state()` (attaches the callback to its model first if needed)."""
        if self._attached_to is None:
            if self.model is None:
                raise RuntimeError("Attach the callback first: `ewc.attach(model)`.")
            self.attach(self.model)
        for variable, value in zip(self._importance, state["importance"]):
            variable.assign(value)
        for variable, value in zip(self._anchor, state["anchor"]):
            variable.assign(value)
        self._offset.assign(state["offset"] or 0.0)
        self.consolidated_tasks = [int(k) for k in state["consolidated_tasks"]]

    def attach(self, model: tf.keras.Model) -> None:
        """Add the penalty to `model` now (otherwise done by the first `fit`)."""
        self.set_model(model)
        self._attach(model)


class RandomConsolidation(EWC):
    """`EWC` with each layer's Fisher values shuffled across its weights (random
    consolidation, the paper's control). Same arguments as `EWC`."""

    def __init__(self, *args, **kwargs):
        kwargs["shuffle_fisher"] = True
        super().__init__(*args, **kwargs)
