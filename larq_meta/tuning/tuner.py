"""`MetaplasticTuner`: a Keras Tuner search in which one trial is one whole task sequence.

!!! example
    ```python
    tuner = MetaplasticTuner(paper_mlp_builder((256, 256)), tasks, max_trials=12,
                             directory="runs/tune", project_name="pmnist")
    tuner.search(epochs_per_task=2)
    ```
"""

from __future__ import annotations

import contextlib
import copy
import gc
import glob
import inspect
import io
import logging
import os
import time
from collections.abc import Callable, Sequence

import keras_tuner
import numpy as np
import tensorflow as tf

from larq_meta._compat import keras_tuner_internals
from larq_meta._utils import check_float, check_int
from larq_meta.batchnorm import BN_PROTOCOLS
from larq_meta.tasks import Task, TaskSequence, as_sequence
from larq_meta.training import train_sequence
from larq_meta.tuning.builders import DEFAULT_M_RANGE, paper_mlp_builder
from larq_meta.tuning.objectives import (
    COMBINED_OBJECTIVE,
    DEPRECATED_METRIC_NAMES,
    METRICS,
    combined_value,
    make_objective,
    objective_spec,
)
from larq_meta.tuning.oracles import ORACLES, ResumableGridSearchOracle, make_oracle
from larq_meta.tuning.oracles import oracle_name as canonical_oracle_name
from larq_meta.tuning.oracles import serve_oracle
from larq_meta.tuning.results import trial_rows, write_trial_results
from larq_meta.tuning.settings import (
    check_resume,
    check_state_files,
    describe_model,
    describe_tasks,
)

__all__ = ["DEFAULT_GRID_LR_STEP", "DEFAULT_GRID_M_STEP", "MetaplasticTuner"]

_LOG = logging.getLogger(__name__)

#: Grid step of `m` when the grid oracle is used and `m_step` is not given.
DEFAULT_GRID_M_STEP = 0.25
#: Grid step (a factor: log sampling) of the learning rate for the grid oracle.
DEFAULT_GRID_LR_STEP = 10.0
# train_sequence arguments the tuner sets itself; the others pass through `search`.
_TUNER_OWNED = ("model", "tasks", "checkpoint_dir", "resume_previous", "settings", "epochs_csv",
                "progress", "shuffle_seed")
# train_sequence arguments that do not change what a trial computes.
_NOT_RECORDED = ("callbacks", "verbose")


def _check_range(value, argument: str, *, positive: bool = False) -> tuple[float, float]:
    """A `(low, high)` pair of finite numbers with low < high (and low >= 0, or > 0)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(
            f"`{argument}` must be a (low, high) pair of finite numbers, got {value!r}."
        )
    low, high = (check_float(v, argument) for v in value)
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
    step = check_float(step, argument)
    low, high = span
    if log and not 1 < step <= high / low:
        raise ValueError(
            f"`{argument}` is a factor between grid values (log scale): it needs "
            f"1 < step <= {high / low:g}, got {step!r}."
        )
    if not log and not 0 < step <= high - low:
        raise ValueError(f"`{argument}` must be in (0, {high - low:g}], got {step!r}.")
    return step


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


def _train_defaults() -> dict:
    """The defaults of the `train_sequence` arguments a search passes through."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(train_sequence).parameters.items()
        if name not in (*_TUNER_OWNED, *_NOT_RECORDED)
        and parameter.default is not inspect.Parameter.empty
    }


def _trial_callbacks(callbacks, trial_id: str, execution: int) -> list:
    """Fresh copies of `callbacks` for one execution of a trial; a `TensorBoard` callback
    logs into its own folder, `<log_dir>/trial_<id>[/execution_<n>]`, as Keras Tuner does."""
    copies = _copy_callbacks(callbacks)
    for callback in copies:
        if isinstance(callback, tf.keras.callbacks.TensorBoard):
            parts = [callback.log_dir, f"trial_{trial_id}"]
            if execution:
                parts.append(f"execution_{execution}")
            callback.log_dir = os.path.join(*parts)
    return copies


def _copy_callbacks(callbacks):
    try:
        return copy.deepcopy(callbacks)
    except Exception as error:
        raise keras_tuner.errors.FatalValueError(
            "search(callbacks=...) must be deep-copyable: each trial gets fresh copies."
        ) from error


class MetaplasticTuner(keras_tuner.Tuner):
    """Keras Tuner search over whole continual-learning runs: one trial = one task sequence.

    Each trial clears the tf.keras session, seeds everything with `tf.keras.utils.
    set_random_seed(seed)`, builds the model with `build_model(hp)` and trains it on `tasks`
    with `larq_meta.training.train_sequence` (fixed shuffle seed), then reports the metrics
    of `METRICS` (see `larq_meta.tuning.objectives`), `seconds` and `cpu_seconds`, and the
    weighted objective if any. So a trial gives the same numbers as a direct `train_sequence`
    run with the same hyperparameters and seeds, and trials differ only by their
    hyperparameters.

    The search space is `m` (`hp.Float("m", *m_range)`, linear, with `m_step` a grid), the
    learning rate if `learning_rate_range` is given (`hp.Float("learning_rate", *range,
    sampling="log")`), and whatever else `build_model(hp)` declares.

    !!! example
        ```python
        tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, train_size=10000)
        tuner = MetaplasticTuner(paper_mlp_builder((256, 256), learning_rate=0.05), tasks,
                                 oracle="bayesian", max_trials=12, directory="runs/tune")
        tuner.search(epochs_per_task=2)
        best_m = tuner.get_best_hyperparameters()[0]["m"]
        ```

    # Arguments
        build_model: `build_model(hp) -> compiled tf.keras.Model`; it reads `m` with
            `hp.Float("m", 0.0, 3.0)` (or `hp["m"]`), the learning rate with
            `hp["learning_rate"]` when searched. None: `paper_mlp_builder()` with the input
            shape and number of classes of `tasks` (arrays) and 1024-1024 hidden units.
        tasks: The `TaskSequence` (or list of `Task`s) each trial trains on.
        objective: What to optimize (see `make_objective`): a metric name
            (`"average_accuracy"`, the default; `"backward_transfer"`, `"forgetting"`
            (minimized), `"last_task_accuracy"`), a `keras_tuner.Objective` on one of them,
            or a mapping metric -> weight whose weighted sum is maximized.
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
        overwrite: Start the project afresh. False (default): continue an earlier search
            (refused if it was started with other settings, see
            `larq_meta.tuning.settings`).
        tuner_id: ID of this tuner; default `KERASTUNER_TUNER_ID` or `"tuner0"`.
        **oracle_kwargs: Passed to the named oracle (e.g. `num_initial_points`, `alpha`,
            `beta` for Bayesian optimization, `max_retries_per_trial`).

    # Raises
        ValueError: before anything is written or trained, for an empty or inverted range, a
            metric that does not exist, zero trials, an unknown oracle, ...; when resuming, for
            a truncated or corrupt state file (named in the message).
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
        seed: int = 1,
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
            name = type(oracle).__name__
            if objective is None and oracle.objective.name != "default_objective":
                objective_, self.objective_weights = make_objective(oracle.objective)
            oracle.objective = objective_
            if max_trials is not None:
                oracle.max_trials = max_trials
            elif not oracle.max_trials:
                raise ValueError("`max_trials`: the oracle instance has no max_trials; give one.")
            grid = isinstance(oracle, keras_tuner.oracles.GridSearchOracle)
            if type(oracle) is keras_tuner.oracles.GridSearchOracle:
                oracle.__class__ = ResumableGridSearchOracle  # same state; resumable, parallel
            space = oracle.hyperparameters
        else:
            name = canonical_oracle_name(oracle)
            grid = name == "grid"
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
            oracle = make_oracle(name, objective_, max_trials, space, self.seed + 1,
                                 **oracle_kwargs)
        self.oracle_name = name

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
        # Keras Tuner prints "Reloading Tuner from ..." when it resumes: log it instead.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            super().__init__(
                oracle=oracle,
                hypermodel=_CheckedHyperModel(build_model),
                directory=directory,
                project_name=project_name,
                overwrite=overwrite,
                tuner_id=tuner_id,
                executions_per_trial=executions_per_trial,
            )
        for line in printed.getvalue().splitlines():
            _LOG.info("%s", line)

    # Keras Tuner builds the model once to find the hyperparameters it declares.
    def _populate_initial_space(self):
        try:
            super()._populate_initial_space()
        finally:
            tf.keras.backend.clear_session()
            gc.collect()

    def reload(self):
        """Reload the search from its project directory (Keras Tuner's state files).

        # Raises
            ValueError: a state file (`oracle.json`, `<tuner id>.json`, a `trial.json`) is
                truncated or corrupt; the message names it and what to do.
        """
        paths = [self._get_tuner_fname()]
        if not self._is_worker():
            paths += [os.path.join(self.project_dir, "oracle.json"),
                      *sorted(glob.glob(os.path.join(self.project_dir, "trial_*", "trial.json")))]
        check_state_files(self.project_dir, paths)
        try:
            super().reload()
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"The saved state of the search in {self.project_dir} cannot be read "
                f"({type(error).__name__}: {error}); it was not written by this version of "
                "keras-tuner / larq-meta, or is damaged. Start afresh with overwrite=True "
                "(--overwrite) or use another project_name (--project-name)."
            ) from None
        # Trials of earlier versions report `mean_accuracy`: give it its current name.
        for trial in getattr(self.oracle, "trials", {}).values():
            metrics = trial.metrics.metrics
            for old, new in DEPRECATED_METRIC_NAMES.items():
                if old in metrics and new not in metrics:
                    metrics[new] = metrics.pop(old)

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

    def recorded_settings(self, search_settings: dict | None = None) -> dict:
        """Every setting that changes what this search computes (what a resume must match).

        Builds the model once for the default hyperparameters to describe it.

        # Arguments
            search_settings: The `search` arguments (default: those of the last `search`).

        # Returns
            Setting name -> JSON-able value (see `larq_meta.tuning.settings`).
        """
        search_settings = search_settings or self._settings or self._search_settings(1, {})
        space = self.oracle.get_space()
        searched = tuple(hp.name for hp in space.space)
        tf.keras.backend.clear_session()
        model = self.hypermodel.build(space)
        described = describe_model(model, searched)
        del model
        tf.keras.backend.clear_session()
        gc.collect()
        return {
            **describe_tasks(self.tasks),
            **described,
            "objective": objective_spec(self.oracle.objective, self.objective_weights),
            "oracle": self.oracle_name,
            "m_range": self.m_range, "m_step": self.m_step,
            "learning_rate_range": self.learning_rate_range,
            "learning_rate_step": self.learning_rate_step,
            "seed": self.seed, "executions_per_trial": self.executions_per_trial,
            **_train_defaults(),  # so that an argument given as its default is no change
            **{k: v for k, v in search_settings.items() if k not in _NOT_RECORDED},
        }

    def search(self, epochs_per_task: int | Sequence[int] = 1, *, verbose: int = 1, **train_kwargs):
        """Run trials until `max_trials` (counting earlier runs of the project) are done.

        # Arguments
            epochs_per_task: Epochs per task, one int or one per task.
            verbose: 1 prints Keras Tuner's trial table; 0 nothing; 2 also a progress bar.
            **train_kwargs: Passed to `train_sequence` in every trial: `batch_size`,
                `bn_protocol`, `shuffle_seed` (default: the tuner's `seed`),
                `reset_optimizer_per_task`, `eval_batch_size`, `deterministic`,
                `callbacks`.

        # Raises
            ValueError: bad arguments, or a resumed search that was started with other
                settings (`larq_meta.tuning.settings.SearchSettingsError`, listing each
                differing setting with its recorded and new value).

        In a distributed search the chief serves the oracle until all trials are done (and
        writes the results table); workers run trials.
        """
        internals = keras_tuner_internals()
        settings = self._search_settings(epochs_per_task, train_kwargs)
        settings["verbose"] = verbose
        self._settings = settings
        if not self._is_worker():
            self.oracle.verbose = verbose
            check_resume(self.project_dir, self.recorded_settings(settings), _train_defaults())

        if internals.is_chief_oracle():
            self.save()
            self.write_results()
            serve_oracle(self.oracle, on_progress=self.write_results)
            self.write_results()
            return

        self.on_search_begin()
        idle = 0
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == internals.TrialStatus.STOPPED:
                break
            if trial.status == internals.TrialStatus.IDLE:
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
                callbacks=_trial_callbacks(callbacks, trial.trial_id, execution),
                progress=verbose >= 2,
                settings={"hyperparameters": dict(hp.values)},
                **settings,
            )
            result.save(os.path.join(trial_dir, f"execution_{execution}"))
            runs.append(result.metrics())
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        metrics = {name: float(np.mean([r[name] for r in runs])) for name in METRICS}
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
        with keras_tuner_internals().oracle_lock(self.oracle):
            hp_names = self.searched_hyperparameters()
            rows = trial_rows(self.oracle.trials.values(), self.oracle.objective, hp_names)
        return write_trial_results(rows, self.project_dir, self.oracle.objective, hp_names)
