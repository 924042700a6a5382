"""What a tuning trial reports and what a search optimizes.

A trial of `MetaplasticTuner` trains a whole task sequence and reports metrics of its final
accuracy matrix `R` (T tasks; `R[i, j]` is the accuracy on task `j` after training task `i`),
as `larq_meta.metrics` defines them:

- `average_accuracy` = mean_j R[T-1, j] (maximized; the default objective);
- `backward_transfer` = mean_{j<T-1} (R[T-1, j] - R[j, j]) (maximized: closer to zero is less
  forgetting);
- `forgetting` = mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j]) (minimized);
- `last_task_accuracy` = R[T-1, T-1] (maximized: plasticity).

An objective is one of these names, a `keras_tuner.Objective` on one of them, or a weighted
sum, maximized and reported as `combined_objective`:

    combined_objective = sum_k weight_k * metric_k

!!! example
    ```python
    objective, weights = make_objective({"average_accuracy": 1.0, "forgetting": -0.5})
    objective.name, weights   # "combined_objective", {"average_accuracy": 1.0, "forgetting": -0.5}
    ```

`mean_accuracy`, the name earlier versions used for `average_accuracy`, is accepted with a
`DeprecationWarning` (it will be removed in the next release).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import keras_tuner

from larq_meta._utils import check_float

__all__ = [
    "COMBINED_OBJECTIVE",
    "DEPRECATED_METRIC_NAMES",
    "METRICS",
    "combined_value",
    "make_objective",
    "objective_spec",
]

#: Metrics a trial reports, with the direction in which each is better.
METRICS = {
    "average_accuracy": "max",
    "backward_transfer": "max",
    "forgetting": "min",
    "last_task_accuracy": "max",
}
#: Name of the metric a weighted objective (a mapping metric -> weight) is reported as.
COMBINED_OBJECTIVE = "combined_objective"
#: Old metric name -> current name (accepted with a DeprecationWarning for one release).
DEPRECATED_METRIC_NAMES = {"mean_accuracy": "average_accuracy"}


def _metric_name(name, argument: str = "objective") -> str:
    if not isinstance(name, str):
        raise ValueError(f"`{argument}`: metric names are strings, got {name!r}.")
    if name in DEPRECATED_METRIC_NAMES:
        new = DEPRECATED_METRIC_NAMES[name]
        warnings.warn(
            f"The tuning metric {name!r} is now called {new!r}; the old name will be removed "
            "in the next release.",
            DeprecationWarning,
            stacklevel=3,
        )
        name = new
    if name not in METRICS:
        raise ValueError(
            f"`{argument}` names no metric a trial reports: {name!r}. "
            f"Choose one of {sorted(METRICS)}, or a weighted combination of them, "
            'e.g. {"average_accuracy": 1.0, "forgetting": -0.5}.'
        )
    return name


def make_objective(objective=None) -> tuple[keras_tuner.Objective, dict[str, float] | None]:
    """The Keras Tuner objective of `objective`, and the weights if it is a weighted sum.

    !!! example
        ```python
        make_objective("forgetting")[0]          # Objective(name="forgetting", direction="min")
        make_objective({"average_accuracy": 1, "forgetting": -0.5})[1]
        ```

    # Arguments
        objective: None (`average_accuracy`), a metric name of `METRICS` (its direction is
            known: `forgetting` is minimized, the others maximized), a
            `keras_tuner.Objective` on one of those names, or a mapping metric -> weight,
            maximized as `COMBINED_OBJECTIVE` = sum of weight * metric (give `forgetting` a
            negative weight to penalize it). `mean_accuracy` is a deprecated alias of
            `average_accuracy`.

    # Returns
        `(keras_tuner.Objective, weights)`; `weights` is None unless `objective` is a mapping.

    # Raises
        ValueError: unknown metric name, empty mapping, non-finite or all-zero weights.
    """
    if objective is None:
        return keras_tuner.Objective("average_accuracy", "max"), None
    if isinstance(objective, str):
        name = _metric_name(objective)
        return keras_tuner.Objective(name, METRICS[name]), None
    if isinstance(objective, Mapping):
        if not objective:
            raise ValueError("`objective` mapping is empty: give at least one metric and weight.")
        weights = {}
        for key, weight in objective.items():
            name = _metric_name(key)
            weight = check_float(weight, f"objective` weight of `{key}")
            weights[name] = weights.get(name, 0.0) + weight
        if not any(weights.values()):
            raise ValueError(f"`objective` weights are all zero: {dict(objective)!r}.")
        return keras_tuner.Objective(COMBINED_OBJECTIVE, "max"), weights
    if type(objective) is keras_tuner.Objective:
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


def objective_spec(objective: keras_tuner.Objective, weights: Mapping[str, float] | None) -> dict:
    """A JSON-able description of an objective (as recorded in a search directory).

    # Returns
        `{"weights": weights}` for a weighted objective, else `{"name": ..., "direction": ...}`.
    """
    if weights is not None:
        return {"weights": dict(weights)}
    return {"name": objective.name, "direction": objective.direction}


def combined_value(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The weighted objective: sum_k weights[k] * metrics[k].

    # Arguments
        metrics: A trial's metrics (at least the weighted ones).
        weights: Metric name -> weight (as `make_objective` returns them).

    # Returns
        The weighted sum, a float.
    """
    return float(sum(weight * metrics[name] for name, weight in weights.items()))
