"""The trials of a search as rows, a text table, a CSV file and a figure.

!!! example
    ```python
    rows = trial_rows(tuner.oracle.trials.values(), tuner.oracle.objective, ["m"])
    print(format_trials(rows, tuner.oracle.objective, ["m"]))
    ```
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence

from larq_meta._compat import keras_tuner_internals
from larq_meta._utils import write_atomic
from larq_meta.tuning.objectives import COMBINED_OBJECTIVE, METRICS

__all__ = ["best_row", "format_trials", "trial_rows", "write_trial_results"]


def trial_rows(trials: Iterable, objective, hp_names: Sequence[str]) -> list[dict]:
    """One dict per trial, sorted by trial id.

    # Arguments
        trials: `keras_tuner` trials (e.g. `tuner.oracle.trials.values()`).
        objective: The search's `keras_tuner.Objective`.
        hp_names: Hyperparameters to give a column each (e.g. `["m", "learning_rate"]`).

    # Returns
        Dicts with keys `trial`, `status`, the `hp_names`, `objective`, the metrics of
        `METRICS` (and `combined_objective` for a weighted objective), `seconds` and
        `cpu_seconds`; metrics are None for trials that did not complete.
    """
    completed_status = keras_tuner_internals().TrialStatus.COMPLETED
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
        completed = trial.status == completed_status
        row["objective"] = metrics.get(objective.name) if completed else None
        names = [*METRICS, "seconds", "cpu_seconds"]
        if objective.name == COMBINED_OBJECTIVE:
            names.insert(len(METRICS), COMBINED_OBJECTIVE)
        for name in names:
            row[name] = metrics.get(name) if completed else None
        rows.append(row)
    return rows


def best_row(rows: Sequence[dict], objective) -> dict | None:
    """The completed row with the best `objective` value (None if no trial completed)."""
    done = [r for r in rows if r["objective"] is not None]
    if not done:
        return None
    pick = max if objective.direction == "max" else min
    return pick(done, key=lambda r: r["objective"])


def format_trials(rows: Sequence[dict], objective, hp_names: Sequence[str]) -> str:
    """Text table of the `trial_rows`; accuracies in percent, the best trial marked `*`.

    # Returns
        The table and a last line saying how many trials completed and which is best.
    """
    best = best_row(rows, objective)
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


def write_trial_results(
    rows: Sequence[dict], directory: str, objective, hp_names: Sequence[str]
) -> dict[str, str]:
    """Write the `trial_rows` as `trials.csv` and `trials.txt` and plot them as
    `objective.png` (`larq_meta.plots.plot_trials`), each replaced atomically, into
    `directory`.

    # Returns
        The paths, keyed `"csv"`, `"txt"`, `"png"`.
    """
    from larq_meta.plots import plot_trials

    os.makedirs(directory, exist_ok=True)
    paths = {
        "csv": os.path.join(directory, "trials.csv"),
        "txt": os.path.join(directory, "trials.txt"),
        "png": os.path.join(directory, "objective.png"),
    }
    columns = list(rows[0]) if rows else ["trial", "status", *hp_names, "objective"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_atomic(paths["csv"], buffer.getvalue())
    write_atomic(paths["txt"], format_trials(rows, objective, hp_names) + "\n")
    plot_trials(rows, paths["png"], objective, hp_names)
    return paths
