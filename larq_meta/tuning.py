"""Search `m` (and the learning rate) with Keras Tuner, one whole task sequence per trial.

`MetaplasticTuner` is a `keras_tuner.Tuner` whose trial builds a model from the trial's
hyperparameters, trains it on every task of a sequence with
`larq_meta.training.train_sequence`, and reports continual-learning metrics computed from the
final accuracy matrix:

- `mean_accuracy`: mean accuracy over all tasks after the last one (maximized, the default);
- `backward_transfer`: mean change of the earlier tasks' accuracy since they were learned
  (maximized: closer to zero is less forgetting);
- `forgetting`: mean drop of the earlier tasks from their best accuracy (minimized);
- `last_task_accuracy`: accuracy on the last task (maximized: plasticity);
- `seconds`, `cpu_seconds`: wall and CPU time of the trial (reported, never objectives).

The objective is one of these names, a `keras_tuner.Objective` on one of them, or a weighted
sum such as `{"mean_accuracy": 1.0, "forgetting": -0.5}` (maximized, reported as
`combined_objective`). The oracle is Keras Tuner's random search (default), Bayesian
optimization or grid search, by name or as an instance; Hyperband is not supported (a trial
is a whole sequence, not a number of epochs).

Searches resume: rerunning with the same `directory` and `project_name` continues where the
last run stopped, and a trial that was interrupted before its sequence finished is run again.
Several processes can share one search through Keras Tuner's chief/worker protocol (the
`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` variables). After each
trial the tuner writes `trials.csv`, `trials.txt` and `objective.png` (objective vs `m`, and
vs the learning rate when it is searched) into `directory/project_name/`.

Models are built with `tf.keras` (tf-keras, what larq needs), not Keras 3: the tuner never
hands them to Keras Tuner's Keras-3 model code (it overrides `run_trial`, `save_model`,
`load_model`).

!!! example
    ```python
    import larq_meta
    from larq_meta.tuning import MetaplasticTuner, paper_mlp_builder

    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, train_size=10000)
    tuner = MetaplasticTuner(
        build_model=paper_mlp_builder(hidden_units=(256, 256), learning_rate=0.05),
        tasks=tasks, objective="mean_accuracy", oracle="bayesian", max_trials=12,
        directory="runs/tune", project_name="pmnist")
    tuner.search(epochs_per_task=2)
    best_m = tuner.get_best_hyperparameters()[0]["m"]
    ```
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import functools
import gc
import inspect
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import larq_meta  # noqa: F401  (legacy Keras before keras-tuner imports Keras 3)
import numpy as np
import tensorflow as tf

try:
    import keras_tuner
    from keras_tuner.src.distribute import utils as _dist_utils
    from keras_tuner.src.engine import trial as _trial_module
    from keras_tuner.src.tuners.gridsearch import LinkedList as _LinkedList
except ImportError as error:  # pragma: no cover
    raise ImportError(
        "larq_meta.tuning needs keras-tuner: pip install 'larq-meta[tuning]' "
        "(keras-tuner>=1.4.8,<1.5)."
    ) from error

from larq_meta._utils import check_int
from larq_meta.batchnorm import BN_PROTOCOLS
from larq_meta.tasks import Task, TaskSequence, as_sequence
from larq_meta.training import train_sequence

__all__ = [
    "METRICS",
    "COMBINED_OBJECTIVE",
    "ORACLES",
    "MetaplasticTuner",
    "make_objective",
    "paper_mlp_builder",
    "trial_rows",
    "tune_main",
]

#: Metrics a trial reports, with the direction in which each is better.
METRICS = {
    "mean_accuracy": "max",
    "backward_transfer": "max",
    "forgetting": "min",
    "last_task_accuracy": "max",
}
#: Name of the metric a weighted objective (a mapping metric -> weight) is reported as.
COMBINED_OBJECTIVE = "combined_objective"
#: Oracle names `MetaplasticTuner` accepts (or pass a `keras_tuner.Oracle` instance).
ORACLES = ("random", "bayesian", "grid")
_ORACLE_ALIASES = {
    "random": "random", "random_search": "random", "randomsearch": "random",
    "bayesian": "bayesian", "bayesian_optimization": "bayesian", "bayes": "bayesian",
    "grid": "grid", "grid_search": "grid", "gridsearch": "grid",
}
_METRIC_ALIASES = {"average_accuracy": "mean_accuracy"}
DEFAULT_M_RANGE = (0.0, 3.0)
#: Grid step of `m` when the grid oracle is used and `m_step` is not given.
DEFAULT_GRID_M_STEP = 0.25
#: Grid step (a factor: log sampling) of the learning rate for the grid oracle.
DEFAULT_GRID_LR_STEP = 10.0
SETTINGS_FILE = "larq_meta_search.json"
# train_sequence arguments the tuner sets itself; the others pass through `search`.
_TUNER_OWNED = ("model", "tasks", "checkpoint_dir", "progress", "shuffle_seed")


# -- validation ---------------------------------------------------------------------------------


def _is_real(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_range(value, argument: str, *, positive: bool = False) -> tuple[float, float]:
    """A `(low, high)` pair of finite numbers with low < high (and low >= 0, or > 0)."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_real(v) for v in value)
    ):
        raise ValueError(
            f"`{argument}` must be a (low, high) pair of finite numbers, got {value!r}."
        )
    low, high = float(value[0]), float(value[1])
    if not low < high:
        kind = "empty" if low == high else "inverted"
        raise ValueError(
            f"`{argument}` = {tuple(value)!r} is {kind}: it needs low < high, e.g. (0.0, 3.0)."
        )
    if positive and low <= 0:
        raise ValueError(f"`{argument}` must be > 0 (it is sampled on a log scale), got {value!r}.")
    if low < 0:
        raise ValueError(f"`{argument}` must be >= 0, got {value!r}.")
    return low, high


def _check_step(step, argument: str, span: tuple[float, float], log: bool) -> float | None:
    if step is None:
        return None
    if not _is_real(step):
        raise ValueError(f"`{argument}` must be a finite number, got {step!r}.")
    step = float(step)
    low, high = span
    if log and not 1 < step <= high / low:
        raise ValueError(
            f"`{argument}` is a factor between grid values (log scale): it needs "
            f"1 < step <= {high / low:g}, got {step!r}."
        )
    if not log and not 0 < step <= high - low:
        raise ValueError(f"`{argument}` must be in (0, {high - low:g}], got {step!r}.")
    return step


def _metric_name(name: str, argument: str = "objective") -> str:
    if not isinstance(name, str):
        raise ValueError(f"`{argument}`: metric names are strings, got {name!r}.")
    name = _METRIC_ALIASES.get(name, name)
    if name not in METRICS:
        raise ValueError(
            f"`{argument}` names no metric a trial reports: {name!r}. "
            f"Choose one of {sorted(METRICS)}, or a weighted combination of them, "
            'e.g. {"mean_accuracy": 1.0, "forgetting": -0.5}.'
        )
    return name


def make_objective(objective=None) -> tuple[keras_tuner.Objective, dict[str, float] | None]:
    """The Keras Tuner objective of `objective`, and the weights if it is a weighted sum.

    # Arguments
        objective: None (`mean_accuracy`), a metric name of `METRICS` (its direction is
            known: `forgetting` is minimized, the others maximized), a
            `keras_tuner.Objective` on one of those names, or a mapping metric -> weight,
            maximized as `COMBINED_OBJECTIVE` = sum of weight * metric (give `forgetting` a
            negative weight to penalize it).

    # Raises
        ValueError: unknown metric name, empty mapping, non-finite or all-zero weights.
    """
    if objective is None:
        return keras_tuner.Objective("mean_accuracy", "max"), None
    if isinstance(objective, str):
        name = _metric_name(objective)
        return keras_tuner.Objective(name, METRICS[name]), None
    if isinstance(objective, Mapping):
        if not objective:
            raise ValueError("`objective` mapping is empty: give at least one metric and weight.")
        weights = {}
        for key, weight in objective.items():
            name = _metric_name(key)
            if not _is_real(weight):
                raise ValueError(
                    f"`objective` weight of {key!r} must be a finite number, got {weight!r}."
                )
            weights[name] = weights.get(name, 0.0) + float(weight)
        if not any(weights.values()):
            raise ValueError(f"`objective` weights are all zero: {dict(objective)!r}.")
        return keras_tuner.Objective(COMBINED_OBJECTIVE, "max"), weights
    if isinstance(objective, keras_tuner.Objective) and type(objective) is keras_tuner.Objective:
        name = _metric_name(objective.name)
        if objective.direction not in ("min", "max"):
            raise ValueError(
                f"`objective` direction must be 'min' or 'max', got {objective.direction!r}."
            )
        return keras_tuner.Objective(name, objective.direction), None
    raise ValueError(
        "`objective` must be a metric name, a keras_tuner.Objective or a mapping "
        f"metric -> weight; got {objective!r}."
    )


def _objective_spec(objective: keras_tuner.Objective, weights) -> dict:
    if weights is not None:
        return {"weights": weights}
    return {"name": objective.name, "direction": objective.direction}


# -- model builder --------------------------------------------------------------------------------


def paper_mlp_builder(
    hidden_units: Sequence[int] = (1024, 1024),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    learning_rate: float = 0.005,
    epsilon: float = 1e-7,
    weight_decay: float = 0.0,
    **optimizer_kwargs,
) -> Callable:
    """A `build_model(hp)` for `MetaplasticTuner`: `paper_mlp` trained with `MetaplasticAdam`.

    The model is `larq_meta.models.paper_mlp(hidden_units, num_classes, input_shape)`,
    compiled with `MetaplasticAdam(m=hp m, learning_rate=hp learning rate)` and
    `SparseCategoricalCrossentropy(from_logits=True)`. `m` is `hp.Float("m", 0.0, 3.0)`
    (the tuner declares the range it searches before the model is built, so its range wins);
    the learning rate is the searched `"learning_rate"` if the tuner searches it, else
    `learning_rate`.

    # Arguments
        hidden_units, num_classes, input_shape: As in `paper_mlp`.
        learning_rate: Learning rate when it is not searched.
        epsilon, weight_decay, **optimizer_kwargs: As in `MetaplasticAdam` (e.g.
            `jit_compile=False` saves the XLA compilation of tiny trials).
    """
    hidden_units = tuple(hidden_units)
    input_shape = tuple(input_shape)

    def build_model(hp: keras_tuner.HyperParameters) -> tf.keras.Model:
        from larq_meta.models import paper_mlp
        from larq_meta.optimizers import MetaplasticAdam

        m = hp.Float("m", *DEFAULT_M_RANGE)
        lr = hp.values.get("learning_rate", learning_rate)
        model = paper_mlp(hidden_units, num_classes=num_classes, input_shape=input_shape)
        model.compile(
            optimizer=MetaplasticAdam(
                m=m, learning_rate=lr, epsilon=epsilon, weight_decay=weight_decay,
                **optimizer_kwargs,
            ),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    build_model.__name__ = f"paper_mlp_builder{hidden_units}"
    return build_model


def _infer_shapes(tasks: TaskSequence) -> tuple[tuple[int, ...], int] | None:
    """Input shape and number of classes of array tasks (None for tf.data tasks)."""
    try:
        shape = tuple(tasks[0].x_train.shape[1:])
        labels = max(int(np.max(task.y_train)) for task in tasks)
        labels = max(labels, max(int(np.max(task.y_test)) for task in tasks))
    except TypeError:
        return None
    return shape, labels + 1


class _CheckedHyperModel(keras_tuner.HyperModel):
    """Calls the user's `build_model(hp)` and checks it returns a compiled tf.keras model."""

    def __init__(self, build_model: Callable):
        super().__init__(name=getattr(build_model, "__name__", "build_model"))
        self.build_model = build_model

    def build(self, hp):
        model = self.build_model(hp)
        if not isinstance(model, tf.keras.Model):
            raise keras_tuner.errors.FatalTypeError(
                "`build_model(hp)` must return a tf.keras (tf-keras) Model, got "
                f"{type(model).__module__}.{type(model).__name__}. Import larq_meta before "
                "Keras and build with tf.keras / larq layers."
            )
        if not getattr(model, "optimizer", None) or not getattr(model, "compiled_loss", None):
            raise keras_tuner.errors.FatalValueError(
                "`build_model(hp)` must return a compiled model "
                "(model.compile(optimizer=MetaplasticAdam(m=hp.Float('m', 0, 3)), loss=...))."
            )
        return model


# -- oracles ------------------------------------------------------------------------------------


class _GridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """Keras Tuner's grid oracle with two fixes.

    - Parallel workers: Keras Tuner queues a trial's successor on the grid only when the trial
      ends (except for the first trial), so a second or third worker waits (IDLE) until then.
      Here every new trial is queued at once: workers take successive grid points.
    - Resume: Keras Tuner does not save the grid position, so a reloaded grid search stops at
      once. Here it is rebuilt from the trials on disk when the oracle is reloaded.
    """

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        if (
            response["status"] == _trial_module.TrialStatus.RUNNING
            and trial_id not in self._populate_next
        ):
            self._populate_next.append(trial_id)
        return response

    def set_state(self, state):
        super().set_state(state)
        ordered = sorted(
            self.trials.values(),
            key=functools.cmp_to_key(
                lambda a, b: self._compare(a.hyperparameters.values, b.hyperparameters.values)
            ),
        )
        self._ordered_ids = _LinkedList()
        self._populate_next = []
        for trial in ordered:
            self._ordered_ids.insert(trial.trial_id)
            self._populate_next.append(trial.trial_id)


def _make_oracle(name: str, objective, max_trials, hyperparameters, seed, oracle_kwargs):
    common = dict(objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
                  seed=seed, **oracle_kwargs)
    if name == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if name == "grid":
        return _GridSearchOracle(**common)
    try:
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The Bayesian oracle of keras-tuner needs scipy and scikit-learn: "
            "pip install scipy scikit-learn (or keras-tuner[bayesian])."
        ) from error
    return keras_tuner.oracles.BayesianOptimizationOracle(**common)


# -- the tuner ------------------------------------------------------------------------------------


class MetaplasticTuner(keras_tuner.Tuner):
    """Keras Tuner search over whole continual-learning runs: one trial = one task sequence.

    Each trial clears the tf.keras session, seeds everything with `tf.keras.utils.
    set_random_seed(seed)`, builds the model with `build_model(hp)` and trains it on `tasks`
    with `larq_meta.training.train_sequence` (fixed shuffle seed), then reports the metrics
    of `METRICS`, `seconds` and `cpu_seconds`, and the weighted objective if any. So a trial
    gives the same numbers as a direct `train_sequence` run with the same hyperparameters and
    seeds, and different trials differ only by their hyperparameters.

    The search space is `m` (`hp.Float("m", *m_range)`, linear, with `m_step` a grid), the
    learning rate if `learning_rate_range` is given (`hp.Float("learning_rate", *range,
    sampling="log")`), and whatever else `build_model(hp)` declares.

    # Arguments
        build_model: `build_model(hp) -> compiled tf.keras.Model`; it reads `m` with
            `hp.Float("m", 0.0, 3.0)` (or `hp["m"]`), the learning rate with
            `hp["learning_rate"]` when searched. None: `paper_mlp_builder()` with the input
            shape and number of classes of `tasks` (arrays) and 1024-1024 hidden units.
        tasks: The `TaskSequence` (or list of `Task`s) each trial trains on.
        objective: What to optimize: a metric name (`"mean_accuracy"`, the default;
            `"backward_transfer"`, `"forgetting"` (minimized), `"last_task_accuracy"`),
            a `keras_tuner.Objective` on one of them, or a mapping metric -> weight whose
            weighted sum is maximized (`{"mean_accuracy": 1.0, "forgetting": -0.5}`).
        oracle: `"random"` (default), `"bayesian"` (needs scipy and scikit-learn) or
            `"grid"`, or a `keras_tuner.Oracle` instance (not Hyperband); `m` and the
            learning rate are added to an instance's search space.
        max_trials: Number of trials (>= 1). None: 10, or every grid point for `"grid"`, or
            the oracle instance's own. Trials of an earlier run of the project count.
        m_range: `(low, high)` of `m`, 0 <= low < high.
        m_step: Grid step of `m` (values low, low + step, ...); default for `"grid"`: 0.25.
        learning_rate_range: `(low, high)` of the learning rate, searched on a log scale;
            None (default): not searched.
        learning_rate_step: Factor between grid values of the learning rate (> 1); default
            for `"grid"`: 10.
        seed: Seed of each trial's model (`set_random_seed(seed + execution)`), of the data
            order (unless `search(shuffle_seed=...)`) and, as `seed + 1`, of a named oracle.
        executions_per_trial: Runs per trial with seeds `seed, seed + 1, ...`; the metrics
            are averaged.
        save_models: Save each trial's trained weights (`trial_<id>/model_weights`) so that
            `get_best_models()` can load them.
        directory, project_name: Where the search lives (`directory/project_name/`).
        overwrite: Start the project afresh. False (default): continue an earlier search.
        tuner_id: ID of this tuner; default `KERASTUNER_TUNER_ID` or `"tuner0"`.
        **oracle_kwargs: Passed to the named oracle (e.g. `num_initial_points`, `alpha`,
            `beta` for Bayesian optimization, `max_retries_per_trial`).

    # Raises
        ValueError: before anything is written or trained, for an empty or inverted range, a
            metric that does not exist, zero trials, an unknown oracle, ...
    """

    def __init__(
        self,
        build_model: Callable | None = None,
        tasks: TaskSequence | Sequence[Task] | None = None,
        *,
        objective=None,
        oracle: str | keras_tuner.Oracle = "random",
        max_trials: int | None = None,
        m_range: tuple[float, float] = DEFAULT_M_RANGE,
        m_step: float | None = None,
        learning_rate_range: tuple[float, float] | None = None,
        learning_rate_step: float | None = None,
        seed: int = 0,
        executions_per_trial: int = 1,
        save_models: bool = False,
        directory: str | None = None,
        project_name: str | None = None,
        overwrite: bool = False,
        tuner_id: str | None = None,
        **oracle_kwargs,
    ):
        # Everything is checked before keras-tuner touches the disk or builds a model.
        if tasks is None:
            raise ValueError("`tasks` is required: the task sequence each trial trains on.")
        self.tasks = as_sequence(tasks)
        if max_trials is not None:
            max_trials = check_int(max_trials, "max_trials", 1)
        self.m_range = _check_range(m_range, "m_range")
        self.learning_rate_range = (
            None if learning_rate_range is None
            else _check_range(learning_rate_range, "learning_rate_range", positive=True)
        )
        self.seed = check_int(seed, "seed", 0)
        executions_per_trial = check_int(executions_per_trial, "executions_per_trial", 1)
        objective_, self.objective_weights = make_objective(objective)

        if isinstance(oracle, keras_tuner.Oracle):
            if isinstance(oracle, keras_tuner.oracles.HyperbandOracle):
                raise ValueError(
                    "`oracle`: Hyperband is not supported (a trial is a whole task sequence, "
                    f"not a number of epochs); use one of {ORACLES}."
                )
            if oracle_kwargs:
                raise ValueError(
                    f"Oracle arguments {sorted(oracle_kwargs)} only apply to an oracle given by "
                    "name; set them on your oracle instance."
                )
            oracle_name = type(oracle).__name__
            if objective is None and oracle.objective.name != "default_objective":
                objective_, self.objective_weights = make_objective(oracle.objective)
            oracle.objective = objective_
            if max_trials is not None:
                oracle.max_trials = max_trials
            elif not oracle.max_trials:
                raise ValueError("`max_trials`: the oracle instance has no max_trials; give one.")
            grid = isinstance(oracle, keras_tuner.oracles.GridSearchOracle)
            if type(oracle) is keras_tuner.oracles.GridSearchOracle:
                oracle.__class__ = _GridSearchOracle  # same state; resumable and parallel
            space = oracle.hyperparameters
        else:
            key = str(oracle).lower().replace("-", "_") if isinstance(oracle, str) else None
            if key not in _ORACLE_ALIASES:
                raise ValueError(
                    f"`oracle` must be one of {ORACLES} or a keras_tuner.Oracle instance, "
                    f"got {oracle!r}."
                )
            oracle_name = _ORACLE_ALIASES[key]
            grid = oracle_name == "grid"
            if max_trials is None and not grid:
                max_trials = 10
            space = keras_tuner.HyperParameters()
        if grid and m_step is None:
            m_step = DEFAULT_GRID_M_STEP
        self.m_step = _check_step(m_step, "m_step", self.m_range, log=False)
        if self.learning_rate_range is not None:
            if grid and learning_rate_step is None:
                learning_rate_step = DEFAULT_GRID_LR_STEP
            self.learning_rate_step = _check_step(
                learning_rate_step, "learning_rate_step", self.learning_rate_range, log=True
            )
        elif learning_rate_step is not None:
            raise ValueError("`learning_rate_step` needs `learning_rate_range`.")
        else:
            self.learning_rate_step = None

        space.Float("m", *self.m_range, step=self.m_step)
        if self.learning_rate_range is not None:
            space.Float(
                "learning_rate", *self.learning_rate_range, step=self.learning_rate_step,
                sampling="log",
            )
        if not isinstance(oracle, keras_tuner.Oracle):
            # Keras Tuner takes seed 0 for "no seed": seed the oracle with seed + 1.
            oracle = _make_oracle(
                oracle_name, objective_, max_trials, space, self.seed + 1, oracle_kwargs
            )
        self.oracle_name = oracle_name

        if build_model is None:
            shapes = _infer_shapes(self.tasks)
            build_model = (
                paper_mlp_builder(input_shape=shapes[0], num_classes=shapes[1])
                if shapes else paper_mlp_builder()
            )
        elif not callable(build_model) and not isinstance(build_model, keras_tuner.HyperModel):
            raise ValueError(
                f"`build_model` must be a callable build_model(hp), got {build_model!r}."
            )
        if isinstance(build_model, keras_tuner.HyperModel):
            build_model = build_model.build
        self.save_models = bool(save_models)
        self.executed_trials: list[dict] = []
        self._settings: dict | None = None
        super().__init__(
            oracle=oracle,
            hypermodel=_CheckedHyperModel(build_model),
            directory=directory,
            project_name=project_name,
            overwrite=overwrite,
            tuner_id=tuner_id,
            executions_per_trial=executions_per_trial,
        )

    # Keras Tuner builds the model once to find the hyperparameters it declares.
    def _populate_initial_space(self):
        try:
            super()._populate_initial_space()
        finally:
            tf.keras.backend.clear_session()
            gc.collect()

    # -- search ----------------------------------------------------------------------------

    @property
    def is_worker(self) -> bool:
        """True in a worker process of a distributed search."""
        return self._is_worker()

    def _search_settings(self, epochs_per_task, kwargs) -> dict:
        allowed = set(inspect.signature(train_sequence).parameters) - set(_TUNER_OWNED)
        unknown = sorted(set(kwargs) - allowed - {"shuffle_seed"})
        if unknown:
            raise TypeError(
                f"search() got unknown arguments {unknown}; it takes epochs_per_task, "
                f"shuffle_seed, verbose and train_sequence's {sorted(allowed - {'verbose'})}."
            )
        settings = dict(kwargs)
        if isinstance(epochs_per_task, Sequence) and not isinstance(epochs_per_task, str):
            epochs = [check_int(e, "epochs_per_task", 1) for e in epochs_per_task]
            if len(epochs) != len(self.tasks):
                raise ValueError(
                    f"`epochs_per_task` has {len(epochs)} entries for {len(self.tasks)} tasks."
                )
            settings["epochs_per_task"] = epochs
        else:
            settings["epochs_per_task"] = check_int(epochs_per_task, "epochs_per_task", 1)
        for name, minimum in (("batch_size", 1), ("eval_batch_size", 1), ("shuffle_seed", 0)):
            if name in settings:
                settings[name] = check_int(settings[name], name, minimum)
        settings.setdefault("shuffle_seed", self.seed)
        if settings.get("bn_protocol", "per_task") not in BN_PROTOCOLS:
            raise ValueError(
                f"`bn_protocol` must be one of {BN_PROTOCOLS}, got {settings['bn_protocol']!r}."
            )
        settings["callbacks"] = list(settings.get("callbacks", ()))
        return settings

    def _fingerprint(self, settings) -> dict:
        """What must not change when a search is resumed."""
        public = {k: v for k, v in settings.items() if k not in ("callbacks", "verbose")}
        return json.loads(json.dumps({
            "search": public,
            "objective": _objective_spec(self.oracle.objective, self.objective_weights),
            "m_range": self.m_range, "m_step": self.m_step,
            "learning_rate_range": self.learning_rate_range,
            "learning_rate_step": self.learning_rate_step,
            "seed": self.seed, "executions_per_trial": self.executions_per_trial,
            "tasks": {"name": self.tasks.name, "task_names": self.tasks.names,
                      "scenario": self.tasks.scenario, "info": self.tasks.info},
        }, default=str))

    def _check_resume(self, settings) -> None:
        path = os.path.join(self.project_dir, SETTINGS_FILE)
        fingerprint = self._fingerprint(settings)
        if os.path.exists(path):
            with open(path) as f:
                previous = json.load(f)
            if previous != fingerprint:
                changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                raise ValueError(
                    f"The search in {self.project_dir!r} was started with other settings "
                    f"({', '.join(changed)} differ): its trials would not be comparable. Use "
                    "the same settings to resume, or overwrite=True / a new project_name."
                )
        else:
            with open(path, "w") as f:
                json.dump(fingerprint, f, indent=2)

    def search(self, epochs_per_task: int | Sequence[int] = 1, *, verbose: int = 1, **train_kwargs):
        """Run trials until `max_trials` (counting earlier runs of the project) are done.

        # Arguments
            epochs_per_task: Epochs per task, one int or one per task.
            verbose: 1 prints Keras Tuner's trial table; 0 nothing; 2 also a progress bar.
            **train_kwargs: Passed to `train_sequence` in every trial: `batch_size`,
                `bn_protocol`, `shuffle_seed` (default: the tuner's `seed`),
                `reset_optimizer_per_task`, `eval_batch_size`, `deterministic`,
                `callbacks`.

        In a distributed search the chief serves the oracle until all trials are done (and
        writes the results table); workers run trials.
        """
        settings = self._search_settings(epochs_per_task, train_kwargs)
        settings["verbose"] = verbose
        self._settings = settings
        if not self._is_worker():
            self.oracle.verbose = verbose
            self._check_resume(settings)

        if _dist_utils.is_chief_oracle():
            self.save()
            self.write_results()
            _serve_oracle(self.oracle, on_progress=self.write_results)
            self.write_results()
            return

        self.on_search_begin()
        idle = 0
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == _trial_module.TrialStatus.STOPPED:
                break
            if trial.status == _trial_module.TrialStatus.IDLE:
                # The oracle waits for running trials (grid end, Bayesian); don't spin.
                time.sleep(min(0.05 * 2**idle, 2.0))
                idle += 1
                continue
            idle = 0
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial)
            self.on_trial_end(trial)
        self.on_search_end()

    def on_search_begin(self):
        # Save now, so that a run interrupted in its first trial resumes instead of restarting.
        self.save()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if not self._is_worker():
            self.write_results()

    def on_search_end(self):
        if not self._is_worker():
            self.write_results()

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Train the whole task sequence with the trial's hyperparameters; return its metrics."""
        settings = dict(self._settings or self._search_settings(1, {}))
        settings.update(kwargs)
        verbose = settings.pop("verbose", 1)
        epochs = settings.pop("epochs_per_task")
        shuffle_seed = settings.pop("shuffle_seed")
        callbacks = settings.pop("callbacks", [])
        hp = trial.hyperparameters
        trial_dir = self.get_trial_dir(trial.trial_id)
        start, cpu_start = time.perf_counter(), time.process_time()
        runs = []
        model = None
        for execution in range(self.executions_per_trial):
            del model
            tf.keras.backend.clear_session()
            gc.collect()
            tf.keras.utils.set_random_seed(self.seed + execution)
            model = self.hypermodel.build(hp)
            result = train_sequence(
                model,
                self.tasks,
                epochs_per_task=epochs,
                shuffle_seed=shuffle_seed + execution,
                callbacks=_copy_callbacks(callbacks),
                progress=verbose >= 2,
                **settings,
            )
            result.config["hyperparameters"] = dict(hp.values)
            result.save(os.path.join(trial_dir, f"execution_{execution}"))
            runs.append(result.metrics())
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        metrics = {
            "mean_accuracy": float(np.mean([r["average_accuracy"] for r in runs])),
            **{name: float(np.mean([r[name] for r in runs]))
               for name in METRICS if name != "mean_accuracy"},
        }
        if self.objective_weights is not None:
            metrics[COMBINED_OBJECTIVE] = combined_value(metrics, self.objective_weights)
        metrics["seconds"] = seconds
        metrics["cpu_seconds"] = cpu_seconds
        if self.save_models:
            self.save_model(trial.trial_id, model)
        self.executed_trials.append(
            {"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
             "hyperparameters": dict(hp.values), "metrics": dict(metrics)}
        )
        tf.keras.backend.clear_session()
        return metrics

    # -- models (tf-keras, never through Keras Tuner's Keras-3 code) ---------------------------

    def _weights_path(self, trial_id) -> str:
        return os.path.join(self.get_trial_dir(trial_id), "model_weights", "weights")

    def save_model(self, trial_id, model, step=0):
        """Save the trained tf.keras weights of a trial (TensorFlow checkpoint format)."""
        model.save_weights(self._weights_path(trial_id))

    def load_model(self, trial):
        """Rebuild the trial's model and load its saved weights (needs `save_models=True`)."""
        path = self._weights_path(trial.trial_id)
        if not tf.io.gfile.exists(path + ".index"):
            raise ValueError(
                f"Trial {trial.trial_id} saved no weights: create the tuner with "
                "save_models=True, or rebuild the best model from get_best_hyperparameters()."
            )
        tf.keras.backend.clear_session()
        model = self.hypermodel.build(trial.hyperparameters)
        model.load_weights(path).expect_partial()
        return model

    # -- results ---------------------------------------------------------------------------

    def searched_hyperparameters(self) -> list[str]:
        """Names of the hyperparameters in the search space (`m` first)."""
        names = [hp.name for hp in self.oracle.get_space().space]
        return sorted(names, key=lambda n: (n != "m", n != "learning_rate"))

    def write_results(self) -> dict[str, str]:
        """Write `trials.csv`, `trials.txt` and `objective.png` into the project directory.

        Called after every trial (and by the chief of a distributed search); returns the paths.
        Workers of a distributed search write nothing (the chief holds the trials).
        """
        if self._is_worker():
            return {}
        # The chief's gRPC threads update trials meanwhile: read them under the oracle's lock.
        with _oracle_lock(self.oracle):
            hp_names = self.searched_hyperparameters()
            rows = trial_rows(self.oracle.trials.values(), self.oracle.objective, hp_names)
        return write_trial_results(rows, self.project_dir, self.oracle.objective, hp_names)


def combined_value(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The weighted objective: sum of weight * metric."""
    return float(sum(weight * metrics[name] for name, weight in weights.items()))


@contextlib.contextmanager
def _oracle_lock(oracle):
    """Hold the lock of keras-tuner's `@synchronized` oracle methods (from another thread)."""
    from keras_tuner.src.engine.oracle import LOCKS

    with LOCKS[oracle]:
        yield


def _copy_callbacks(callbacks):
    try:
        return copy.deepcopy(callbacks)
    except Exception as error:
        raise keras_tuner.errors.FatalValueError(
            "search(callbacks=...) must be deep-copyable: each trial gets fresh copies."
        ) from error


def _serve_oracle(oracle, on_progress=None, poll_seconds: float = 0.5) -> None:
    """Keras Tuner's chief server (`oracle_chief.start_server`), polling twice a second
    instead of every 20 s once the search is over, and failing if the port can't be bound."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise RuntimeError(f"The tuning chief could not listen on {address}.")
    server.start()
    finished = 0
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
            if on_progress is not None and len(oracle.end_order) != finished:
                finished = len(oracle.end_order)
                on_progress()
    finally:
        server.stop(grace=2)


# -- results table and plot ----------------------------------------------------------------------


def trial_rows(trials, objective: keras_tuner.Objective, hp_names: Sequence[str]) -> list[dict]:
    """One dict per trial (sorted by id): id, status, hyperparameters, objective, metrics."""
    rows = []
    for trial in sorted(trials, key=lambda t: t.trial_id):
        row = {"trial": trial.trial_id, "status": trial.status}
        for name in hp_names:
            row[name] = trial.hyperparameters.values.get(name)
        metrics = {}
        for name in trial.metrics.metrics:
            value = trial.metrics.get_last_value(name)
            if value is not None:
                metrics[name] = float(value)
        completed = trial.status == _trial_module.TrialStatus.COMPLETED
        row["objective"] = metrics.get(objective.name) if completed else None
        names = [*METRICS, "seconds", "cpu_seconds"]
        if objective.name == COMBINED_OBJECTIVE:
            names.insert(len(METRICS), COMBINED_OBJECTIVE)
        for name in names:
            row[name] = metrics.get(name) if completed else None
        rows.append(row)
    return rows


def _best(rows, objective) -> dict | None:
    done = [r for r in rows if r["objective"] is not None]
    if not done:
        return None
    pick = max if objective.direction == "max" else min
    return pick(done, key=lambda r: r["objective"])


def write_trial_results(rows, directory: str, objective, hp_names) -> dict[str, str]:
    """Write the `trial_rows` as a table (CSV and text) and plot them, into `directory`."""
    os.makedirs(directory, exist_ok=True)
    paths = {
        "csv": os.path.join(directory, "trials.csv"),
        "txt": os.path.join(directory, "trials.txt"),
        "png": os.path.join(directory, "objective.png"),
    }
    columns = list(rows[0]) if rows else ["trial", "status", *hp_names, "objective"]
    with open(paths["csv"] + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    os.replace(paths["csv"] + ".tmp", paths["csv"])
    with open(paths["txt"] + ".tmp", "w") as f:
        f.write(format_trials(rows, objective, hp_names) + "\n")
    os.replace(paths["txt"] + ".tmp", paths["txt"])
    plot_trials(rows, paths["png"], objective, hp_names)
    return paths


def format_trials(rows, objective, hp_names) -> str:
    """Text table of the trials; accuracies in percent, the best trial marked with `*`."""
    best = _best(rows, objective)
    metric_names = [n for n in (*METRICS, COMBINED_OBJECTIVE) if rows and n in rows[0]]
    head = ["trial", "status", *hp_names, f"objective ({objective.name}, {objective.direction})",
            *metric_names, "seconds"]
    lines = []
    for row in rows:
        cells = [("*" if row is best else " ") + str(row["trial"]), str(row["status"])]
        for name in hp_names:
            value = row.get(name)
            cells.append("" if value is None else f"{value:.4g}")
        cells.append("" if row["objective"] is None else f"{row['objective']:.4f}")
        for name in metric_names:
            value = row.get(name)
            scale = 1 if name == COMBINED_OBJECTIVE else 100
            cells.append("" if value is None else f"{scale * value:.2f}")
        cells.append("" if row.get("seconds") is None else f"{row['seconds']:.1f}")
        lines.append(cells)
    widths = [max([len(h)] + [len(c[i]) for c in lines]) for i, h in enumerate(head)]
    text = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    text += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    done = sum(r["objective"] is not None for r in rows)
    note = f"{done} of {len(rows)} trials completed; accuracies in %"
    if best is not None:
        values = ", ".join(f"{n}={best[n]:.4g}" for n in hp_names if best.get(n) is not None)
        note += (
            f"; best (*): trial {best['trial']}, {values}, "
            f"{objective.name} {best['objective']:.4f}"
        )
    return "\n".join(text + [note])


def plot_trials(rows, path: str, objective, hp_names) -> str | None:
    """Objective vs `m` (and vs the learning rate if searched) over the completed trials."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    axes_of = [n for n in ("m", "learning_rate") if n in hp_names]
    done = [r for r in rows if r["objective"] is not None]
    fig, axes = plt.subplots(
        1, len(axes_of), figsize=(5.6 * len(axes_of), 3.8), squeeze=False, layout="constrained"
    )
    best = _best(rows, objective)
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# -- command line ---------------------------------------------------------------------------------


def _objective_arg(text: str):
    """`mean_accuracy` or `mean_accuracy=1,forgetting=-0.5`."""
    if "=" not in text:
        return text
    weights = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-meta tune",
        description=(
            "Keras Tuner search of the metaplasticity m (and optionally the learning rate) on "
            "permuted MNIST: every trial trains the whole task sequence and reports mean final "
            "accuracy, backward transfer, forgetting and last-task accuracy. Rerun the same "
            "command to resume. Distributed: run the same command in one chief and N workers "
            "with KERASTUNER_TUNER_ID=chief|tuner0|tuner1..., KERASTUNER_ORACLE_IP and "
            "KERASTUNER_ORACLE_PORT set."
        ),
    )
    data = parser.add_argument_group("task sequence and model")
    data.add_argument("--tasks", type=int, default=3, help="permuted MNIST tasks (3)")
    data.add_argument("--train-size", type=int, help="use only this many training images")
    data.add_argument("--test-size", type=int, help="use only this many test images")
    data.add_argument("--width", type=int, default=256, help="hidden width (256)")
    data.add_argument("--depth", type=int, default=2, help="hidden layers (2)")
    data.add_argument("--epochs", type=int, default=1, help="epochs per task (1)")
    data.add_argument("--batch-size", type=int, default=100, help="batch size (100)")
    data.add_argument("--lr", type=float, default=0.005,
                      help="learning rate when it is not searched (0.005)")
    data.add_argument("--bn-protocol", default="per_task", choices=BN_PROTOCOLS,
                      help="BatchNorm evaluation protocol (per_task)")
    search = parser.add_argument_group("search")
    search.add_argument("--oracle", default="random", choices=ORACLES,
                        help="search algorithm (random)")
    search.add_argument("--max-trials", type=int,
                        help="number of trials (10; grid: all points)")
    search.add_argument("--objective", type=_objective_arg, default="mean_accuracy",
                        help="metric to optimize: mean_accuracy, backward_transfer, forgetting, "
                             "last_task_accuracy, or weights like mean_accuracy=1,forgetting=-0.5 "
                             "(mean_accuracy)")
    search.add_argument("--m-range", type=float, nargs=2, default=DEFAULT_M_RANGE,
                        metavar=("LOW", "HIGH"), help="range of m (0 3)")
    search.add_argument("--m-step", type=float, help="grid step of m (grid: 0.25)")
    search.add_argument("--lr-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="also search the learning rate, log scale (off)")
    search.add_argument("--lr-step", type=float, help="grid factor of the learning rate (grid: 10)")
    search.add_argument("--executions", type=int, default=1,
                        help="runs per trial with seeds seed, seed+1, ...; metrics averaged (1)")
    search.add_argument("--seed", type=int, default=1,
                        help="seed of permutations, model init, data order and oracle (1)")
    search.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    search.add_argument("--save-models", action="store_true", help="keep each trial's weights")
    out = parser.add_argument_group("output")
    out.add_argument("--directory", default="runs/tune", help="tuner directory (runs/tune)")
    out.add_argument("--project-name", default="pmnist", help="project name (pmnist)")
    out.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    out.add_argument("--quiet", action="store_true", help="no per-trial output")
    return parser


def _load_tasks(args) -> TaskSequence:
    from larq_meta.tasks import permuted_mnist

    return permuted_mnist(
        num_tasks=args.tasks, seed=args.seed, train_size=args.train_size, test_size=args.test_size
    )


def tune_main(argv: list[str] | None = None) -> int:
    """`larq-meta tune`: search m (and the learning rate) on permuted MNIST; returns 0."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for name in ("tasks", "width", "depth", "epochs", "batch_size", "executions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("train_size", "test_size", "max_trials"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error("--lr must be > 0")
    # Check the search arguments before loading any data.
    try:
        _check_range(tuple(args.m_range), "m_range")
        if args.lr_range is not None:
            _check_range(tuple(args.lr_range), "learning_rate_range", positive=True)
        make_objective(args.objective)
    except ValueError as error:
        parser.error(str(error).replace("`m_range`", "--m-range")
                     .replace("`learning_rate_range`", "--lr-range")
                     .replace("`objective`", "--objective"))

    tasks = _load_tasks(args)
    try:
        tuner = MetaplasticTuner(
            build_model=paper_mlp_builder(
                hidden_units=(args.width,) * args.depth,
                num_classes=10,
                input_shape=tasks[0].x_train.shape[1:],
                learning_rate=args.lr,
            ),
            tasks=tasks,
            objective=args.objective,
            oracle=args.oracle,
            max_trials=args.max_trials,
            m_range=tuple(args.m_range),
            m_step=args.m_step,
            learning_rate_range=None if args.lr_range is None else tuple(args.lr_range),
            learning_rate_step=args.lr_step,
            seed=args.seed,
            executions_per_trial=args.executions,
            save_models=args.save_models,
            directory=args.directory,
            project_name=args.project_name,
            overwrite=args.overwrite,
        )
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    tuner.search(
        epochs_per_task=args.epochs,
        batch_size=args.batch_size,
        bn_protocol=args.bn_protocol,
        shuffle_seed=args.seed,
        deterministic=args.deterministic,
        verbose=0 if args.quiet else 1,
    )
    if tuner.is_worker:
        ids = ", ".join(t["trial_id"] for t in tuner.executed_trials) or "none"
        print(f"worker {tuner.tuner_id}: ran trials {ids}")
        return 0
    paths = tuner.write_results()
    with open(paths["txt"]) as f:
        print(f.read())
    best = tuner.get_best_hyperparameters()
    if best:
        values = ", ".join(f"{k}={v:.4g}" for k, v in best[0].values.items())
        print(f"best hyperparameters: {values}")
    print(f"table: {paths['txt']}, {paths['csv']}; plot: {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(tune_main())
