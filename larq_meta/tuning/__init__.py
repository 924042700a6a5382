"""Search `m` (and the learning rate) with Keras Tuner, one whole task sequence per trial.

`MetaplasticTuner` is a `keras_tuner.Tuner` whose trial builds a model from the trial's
hyperparameters, trains it on every task of a sequence with
`larq_meta.training.train_sequence`, and reports continual-learning metrics of the final
accuracy matrix (`larq_meta.metrics`): `average_accuracy` (the default objective),
`backward_transfer`, `forgetting` (minimized), `last_task_accuracy`, and `seconds`,
`cpu_seconds` (reported, never objectives).

The objective is one of these names, a `keras_tuner.Objective` on one of them, or a weighted
sum such as `{"average_accuracy": 1.0, "forgetting": -0.5}` (maximized, reported as
`combined_objective`); see `make_objective`. The oracle is Keras Tuner's random search
(default), Bayesian optimization or grid search, by name or as an instance; Hyperband is not
supported (a trial is a whole sequence, not a number of epochs).

Searches resume: rerunning with the same `directory` and `project_name` continues where the
last run stopped, and a trial that was interrupted before its sequence finished is run again.
Every setting that changes what a trial computes is recorded in the search directory, and a
resume with other settings is refused (`larq_meta.tuning.settings`). Several processes can
share one search through Keras Tuner's chief/worker protocol (the `KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` variables). After each trial the tuner writes
`trials.csv`, `trials.txt` and `objective.png` into `directory/project_name/`.

Models are built with `tf.keras` (tf-keras, what larq needs), not Keras 3: the tuner never
hands them to Keras Tuner's Keras-3 model code (it overrides `run_trial`, `save_model`,
`load_model`).

The package's modules: `tuner` (`MetaplasticTuner`), `objectives` (metrics and objectives),
`builders` (`paper_mlp_builder`), `oracles` (oracles by name, the resumable grid, the chief's
server), `settings` (what a search records to refuse mixed resumes), `results` (tables).
Everything public is importable from `larq_meta.tuning` itself.

!!! example
    ```python
    import larq_meta
    from larq_meta.tuning import MetaplasticTuner, paper_mlp_builder

    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, train_size=10000)
    tuner = MetaplasticTuner(
        build_model=paper_mlp_builder(hidden_units=(256, 256), learning_rate=0.05),
        tasks=tasks, objective="average_accuracy", oracle="bayesian", max_trials=12,
        directory="runs/tune", project_name="pmnist")
    tuner.search(epochs_per_task=2)
    best_m = tuner.get_best_hyperparameters()[0]["m"]
    ```
"""

from __future__ import annotations

import warnings

import larq_meta  # noqa: F401  (legacy Keras before keras-tuner imports Keras 3)

try:
    import keras_tuner  # noqa: F401
except ImportError as error:  # pragma: no cover
    raise ImportError(
        "larq_meta.tuning needs keras-tuner: pip install 'larq-meta[tuning]' "
        "(keras-tuner>=1.4.8,<1.5)."
    ) from error

from larq_meta._compat import check_version

check_version("keras-tuner")

from larq_meta.tuning.builders import DEFAULT_M_RANGE, paper_mlp_builder  # noqa: E402
from larq_meta.tuning.objectives import (  # noqa: E402
    COMBINED_OBJECTIVE,
    DEPRECATED_METRIC_NAMES,
    METRICS,
    combined_value,
    make_objective,
    objective_spec,
)
from larq_meta.tuning.oracles import (  # noqa: E402
    ORACLES,
    ResumableGridSearchOracle,
    make_oracle,
    oracle_name,
    serve_oracle,
)
from larq_meta.tuning.results import (  # noqa: E402
    best_row,
    format_trials,
    trial_rows,
    write_trial_results,
)
from larq_meta.tuning.settings import (  # noqa: E402
    SETTINGS_FILE,
    SearchSettingsError,
    check_resume,
    check_state_files,
    describe_model,
    describe_tasks,
)
from larq_meta.tuning.tuner import (  # noqa: E402
    DEFAULT_GRID_LR_STEP,
    DEFAULT_GRID_M_STEP,
    MetaplasticTuner,
)

__all__ = [
    "COMBINED_OBJECTIVE",
    "DEFAULT_GRID_LR_STEP",
    "DEFAULT_GRID_M_STEP",
    "DEFAULT_M_RANGE",
    "DEPRECATED_METRIC_NAMES",
    "METRICS",
    "ORACLES",
    "SETTINGS_FILE",
    "MetaplasticTuner",
    "ResumableGridSearchOracle",
    "SearchSettingsError",
    "best_row",
    "check_resume",
    "check_state_files",
    "combined_value",
    "describe_model",
    "describe_tasks",
    "format_trials",
    "make_objective",
    "make_oracle",
    "objective_spec",
    "oracle_name",
    "paper_mlp_builder",
    "serve_oracle",
    "trial_rows",
    "write_trial_results",
]


def _tune_main(argv=None) -> int:
    """Deprecated: `larq_meta.cli.main(["tune", *argv])` (the command line left the library)."""
    import sys

    from larq_meta.cli import main

    return main(["tune", *(sys.argv[1:] if argv is None else argv)])


def _plot_trials(*args, **kwargs):
    from larq_meta.plots import plot_trials

    return plot_trials(*args, **kwargs)


_DEPRECATED = {
    "tune_main": (_tune_main, "larq_meta.cli.main(['tune', ...])"),
    "plot_trials": (_plot_trials, "larq_meta.plots.plot_trials"),
}


def __getattr__(name: str):
    if name in _DEPRECATED:
        function, replacement = _DEPRECATED[name]
        warnings.warn(
            f"larq_meta.tuning.{name} is deprecated and will be removed in the next release; "
            f"use {replacement}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return function
    raise AttributeError(f"module 'larq_meta.tuning' has no attribute {name!r}")
