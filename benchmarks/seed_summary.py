"""Side-by-side runs over seeds: larq-meta vs the reference PyTorch code, one table.

Reads the side-by-side results already written (nothing is trained here):
larq-meta's `benchmarks/results/side_by_side.json` (seed 1) and `side_by_side_seed<S>.json`
(from `benchmarks/reproduce.py --m 1.35 0 --seed S --name side_by_side_seedS`), and the
reference's runs in `benchmarks/results/reference_seeds.json`. Prints a markdown table of the
final accuracies (`batch_stats` protocol, the reference's) per seed, then mean and standard
deviation over seeds, and the difference of the means with its standard error. Writes
benchmarks/results/seed_summary.json.

    .venv/bin/python benchmarks/seed_summary.py [--m 0 1.35]
"""

import argparse
import glob
import json
import os
import re

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def ours(m: float) -> dict[int, list[float]]:
    """Seed -> final accuracies (%) of larq-meta's BNN with this m."""
    found = {}
    for path in glob.glob(os.path.join(RESULTS, "side_by_side*.json")):
        match = re.fullmatch(r"side_by_side(?:_seed(\d+))?\.json", os.path.basename(path))
        if not match:  # bfloat16 runs, reruns
            continue
        seed = int(match.group(1) or 1)
        with open(path) as f:
            for run in json.load(f)["runs"]:
                if run["method"] == "bnn" and np.isclose(run["m"], m):
                    found[seed] = run["final_accuracies"]["batch_stats"]
    return found


def reference(m: float) -> dict[int, list[float]]:
    """Seed -> final accuracies (%) of the reference code with this m."""
    with open(os.path.join(RESULTS, "reference_seeds.json")) as f:
        runs = json.load(f)["runs"]
    return {run["seed"]: run["final_accuracies"] for run in runs if np.isclose(run["m"], m)}


def stats(by_seed: dict[int, list[float]]) -> dict:
    values = np.array(list(by_seed.values()))
    return {
        "seeds": sorted(by_seed),
        "mean": values.mean(axis=0).round(2).tolist(),
        "std": values.std(axis=0, ddof=1).round(2).tolist() if len(values) > 1 else None,
        "n": len(values),
    }


def _cell(values, digits: int = 1, sign: str = "") -> str:
    return " / ".join(f"{v:{sign}.{digits}f}" for v in values) if values is not None else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=float, nargs="+", default=[0.0, 1.35])
    parser.add_argument("--output", default=os.path.join(RESULTS, "seed_summary.json"))
    args = parser.parse_args()

    summary = {"protocol": "batch_stats", "units": "percent, tasks 1 / 2 / 3", "by_m": {}}
    columns, seeds = [], set()
    for m in args.m:
        runs = {"reference": reference(m), "larq-meta": ours(m)}
        entry = {name: {"by_seed": by_seed, **stats(by_seed)} for name, by_seed in runs.items()}
        ref, own = (np.array(list(runs[name].values())) for name in ("reference", "larq-meta"))
        if len(ref) > 1 and len(own) > 1:
            # Difference of the means and its standard error (unequal variances).
            entry["difference_of_means"] = (own.mean(0) - ref.mean(0)).round(2).tolist()
            entry["standard_error_of_difference"] = np.sqrt(
                own.var(0, ddof=1) / len(own) + ref.var(0, ddof=1) / len(ref)
            ).round(2).tolist()
        summary["by_m"][str(m)] = entry
        for name, by_seed in runs.items():
            columns.append((f"{name}, m = {m:g}", by_seed, entry[name]))
            seeds.update(by_seed)

    lines = [
        "| seed | " + " | ".join(c[0] for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for seed in sorted(seeds):
        lines.append(f"| {seed} | " + " | ".join(_cell(c[1].get(seed)) for c in columns) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_cell(c[2]['mean'])}**" for c in columns) + " |")
    lines.append("| s.d. | " + " | ".join(_cell(c[2]["std"]) for c in columns) + " |")
    lines.append("| n | " + " | ".join(str(c[2]["n"]) for c in columns) + " |")
    print("\n".join(lines))
    for m, entry in summary["by_m"].items():
        if "difference_of_means" in entry:
            print(
                f"m = {float(m):g}: larq-meta - reference = "
                f"{_cell(entry['difference_of_means'], 2, sign='+')} points "
                f"(standard error {_cell(entry['standard_error_of_difference'], 2)})"
            )
    summary["table_markdown"] = "\n".join(lines)
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
