"""Keras Tuner oracles for `MetaplasticTuner`: by name, a resumable parallel grid, the chief.

!!! example
    ```python
    oracle = make_oracle("grid", keras_tuner.Objective("average_accuracy", "max"),
                         max_trials=None, hyperparameters=space, seed=2)
    ```
"""

from __future__ import annotations

import functools
import os
import time

import keras_tuner

from larq_meta._compat import keras_tuner_internals

__all__ = ["ORACLES", "ResumableGridSearchOracle", "make_oracle", "oracle_name", "serve_oracle"]

#: Oracle names `MetaplasticTuner` accepts (or pass a `keras_tuner.Oracle` instance).
ORACLES = ("random", "bayesian", "grid")
_ORACLE_ALIASES = {
    "random": "random", "random_search": "random", "randomsearch": "random",
    "bayesian": "bayesian", "bayesian_optimization": "bayesian", "bayes": "bayesian",
    "grid": "grid", "grid_search": "grid", "gridsearch": "grid",
}


def oracle_name(name) -> str:
    """The canonical name (one of `ORACLES`) of an oracle name or alias such as
    `"bayesian_optimization"` or `"grid-search"`; ValueError for anything else."""
    key = str(name).lower().replace("-", "_") if isinstance(name, str) else None
    if key not in _ORACLE_ALIASES:
        raise ValueError(
            f"`oracle` must be one of {ORACLES} or a keras_tuner.Oracle instance, got {name!r}."
        )
    return _ORACLE_ALIASES[key]


class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """Keras Tuner's grid oracle with two fixes.

    - Parallel workers: Keras Tuner queues a trial's successor on the grid only when the trial
      ends (except for the first trial), so a second or third worker waits (IDLE) until then.
      Here every new trial is queued at once: workers take successive grid points.
    - Resume: Keras Tuner does not save the grid position, so a reloaded grid search stops at
      once. Here it is rebuilt from the trials on disk when the oracle is reloaded.

    Takes the arguments of `keras_tuner.oracles.GridSearchOracle`.
    """

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        if (
            response["status"] == keras_tuner_internals().TrialStatus.RUNNING
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
        self._ordered_ids = keras_tuner_internals().LinkedList()
        self._populate_next = []
        for trial in ordered:
            self._ordered_ids.insert(trial.trial_id)
            self._populate_next.append(trial.trial_id)


def make_oracle(
    name: str, objective, max_trials, hyperparameters, seed, **oracle_kwargs
) -> keras_tuner.Oracle:
    """A Keras Tuner oracle by name: random search, Bayesian optimization or the grid
    (`ResumableGridSearchOracle`).

    # Arguments
        name: One of `ORACLES` (or an alias, see `oracle_name`).
        objective, max_trials, hyperparameters, seed, **oracle_kwargs: As in the oracle.

    # Raises
        ValueError: unknown name. ImportError: Bayesian optimization without scipy and
            scikit-learn.
    """
    name = oracle_name(name)
    common = dict(objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
                  seed=seed, **oracle_kwargs)
    if name == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if name == "grid":
        return ResumableGridSearchOracle(**common)
    try:
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The Bayesian oracle of keras-tuner needs scipy and scikit-learn: "
            "pip install scipy scikit-learn (or keras-tuner[bayesian])."
        ) from error
    return keras_tuner.oracles.BayesianOptimizationOracle(**common)


def serve_oracle(oracle, on_progress=None, poll_seconds: float = 0.5) -> None:
    """Serve `oracle` to the workers of a distributed search until every trial is done.

    Keras Tuner's chief server (`oracle_chief.start_server`), polling twice a second instead
    of every 20 s once the search is over, and failing if the port can't be bound. The address
    is `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`.

    # Arguments
        oracle: The chief's oracle.
        on_progress: Called (without arguments) whenever more trials have ended.
        poll_seconds: How often to check whether the search is over.

    # Raises
        RuntimeError: the address cannot be bound.
    """
    from concurrent import futures

    import grpc

    servicer_class, exit_chief, add_servicer = keras_tuner_internals().chief_service()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = servicer_class(oracle)
    add_servicer(servicer, server)
    if not server.add_insecure_port(address):
        raise RuntimeError(
            f"The tuning chief could not listen on {address} (KERASTUNER_ORACLE_IP, "
            "KERASTUNER_ORACLE_PORT): choose a free port."
        )
    server.start()
    finished = 0
    try:
        while not (servicer.stop_triggered and exit_chief(oracle)):
            time.sleep(poll_seconds)
            if on_progress is not None and len(oracle.end_order) != finished:
                finished = len(oracle.end_order)
                on_progress()
    finally:
        server.stop(grace=2)
