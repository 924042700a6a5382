"""Side-by-side runs over seeds: larq-meta float32 vs the reference PyTorch code or vs bfloat16.

Reads the side-by-side results already written (nothing is trained here):
larq-meta's `benchmarks/results/side_by_side.json` (seed 1) and `side_by_side_seed<S>.json`
(from `benchmarks/reproduce.py --m 1.35 0 --seed S --name side_by_side_seedS`), its bfloat16
runs `side_by_side_bfloat16[_seed<S>].json` (`... --compute-dtype bfloat16 --name
side_by_side_bfloat16_seedS`), and the reference's runs in
`benchmarks/results/reference_seeds.json`. Prints a markdown table of the final accuracies
(`batch_stats` protocol, the reference's) per seed, then mean and standard deviation over
seeds, and the difference of the means with its standard error: unpaired for the reference
(another framework, other random draws), paired by seed for bfloat16 (same seeds, same
initialisation and data order as the float32 run). Writes
benchmarks/results/seed_summary[_bfloat16].json.

    .venv/bin/python benchmarks/seed_summary.py [--against reference|bfloat16] [--m 0 1.35]
"""

import argparse
import glob
import json
import os
import re

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def ours(m: float, compute_dtype: str = "float32") -> dict[int, list[float]]:
    """Seed -> final accuracies (%) of larq-meta's BNN with this m and compute dtype."""
    found = {}
    for path in glob.glob(os.path.join(RESULTS, "side_by_side*.json")):
        name = os.path.basename(path)
        match = re.fullmatch(r"side_by_side(_bfloat16)?(?:_seed(\d+))?\.json", name)
        if not match or (match.group(1) is not None) != (compute_dtype == "bfloat16"):
            continue  # the other compute dtype, reruns
        seed = int(match.group(2) or 1)
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


def difference(baseline: dict, candidate: dict, paired: bool) -> dict:
    """Candidate minus baseline: difference of the means and its standard error."""
    if paired:  # same seeds on both sides: the per-seed differences
        seeds = sorted(set(baseline) & set(candidate))
        if len(seeds) < 2:
            return {}
        d = np.array([np.subtract(candidate[s], baseline[s]) for s in seeds])
        mean, error = d.mean(axis=0), d.std(axis=0, ddof=1) / np.sqrt(len(d))
    else:  # independent samples, unequal variances
        a, b = (np.array(list(x.values())) for x in (baseline, candidate))
        mean = b.mean(axis=0) - a.mean(axis=0)
        error = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return {
        "difference_of_means": mean.round(2).tolist(),
        "standard_error_of_difference": error.round(2).tolist(),
        "paired": paired,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", choices=("reference", "bfloat16"), default="reference",
                        help="what larq-meta float32 is compared with")
    parser.add_argument("--m", type=float, nargs="+", default=[0.0, 1.35])
    parser.add_argument("--output", default=None,
                        help="JSON path (default: results/seed_summary[_bfloat16].json)")
    args = parser.parse_args()
    suffix = "" if args.against == "reference" else "_bfloat16"
    args.output = args.output or os.path.join(RESULTS, f"seed_summary{suffix}.json")

    summary = {"protocol": "batch_stats", "units": "percent, tasks 1 / 2 / 3", "by_m": {}}
    columns, seeds = [], set()
    if args.against == "reference":
        names, sources = ("reference", "larq-meta"), (reference, ours)
    else:
        names = ("larq-meta float32", "larq-meta bfloat16")
        sources = (ours, lambda m: ours(m, "bfloat16"))
    summary["difference"] = f"{names[1]} - {names[0]}"
    for m in args.m:
        runs = {name: source(m) for name, source in zip(names, sources)}
        entry = {name: {"by_seed": by_seed, **stats(by_seed)} for name, by_seed in runs.items()}
        baseline, candidate = runs.values()
        if len(baseline) > 1 and len(candidate) > 1:
            entry.update(difference(baseline, candidate, paired=args.against == "bfloat16"))
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
                f"m = {float(m):g}: {summary['difference']} = "
                f"{_cell(entry['difference_of_means'], 2, sign='+')} points "
                f"(standard error {_cell(entry['standard_error_of_difference'], 2)})"
            )
    summary["table_markdown"] = "\n".join(lines)
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
