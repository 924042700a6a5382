"""Does a 12-trial Keras Tuner search find a good m? Compared with the exhaustive grid.

Permuted MNIST (3 tasks, a training subset), the paper's BNN at a small CPU width, a few epochs
per task. First the exhaustive grid m in {0, 0.25, ..., 3} (13 trials), then a 12-trial search
per oracle (Bayesian optimization and random search by default), all with the same seeds, so
every trial is the same deterministic function of (m, learning rate). Reports every trial and
its time, and whether each search's best average final accuracy is within 1 point of the grid's
best and above m = 0. Writes benchmarks/results/tuning.json; the tuners' own tables and plots
go to --directory.

    .venv/bin/python benchmarks/tuning_benchmark.py            # ~6 CPU-minutes of trials

At a few hundred steps per task the hidden weights only grow large enough for m to matter with
a learning rate well above the paper's 0.005 (which is meant for 40 epochs per task), hence
the default 0.05.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_meta  # noqa: E402  (arranges legacy Keras)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from larq_meta.tasks import permuted_mnist  # noqa: E402
from larq_meta.tuning import MetaplasticTuner, paper_mlp_builder, trial_rows  # noqa: E402


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import keras_tuner
    import larq

    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "larq": larq.__version__ if hasattr(larq, "__version__") else "",
        "keras_tuner": keras_tuner.__version__,
        "larq_meta": larq_meta.__version__,
    }


def run_search(name, tasks, args, **tuner_kwargs) -> dict:
    builder = paper_mlp_builder(
        hidden_units=(args.width,) * 2, num_classes=10, input_shape=(784,), learning_rate=args.lr
    )
    tuner = MetaplasticTuner(
        builder, tasks, objective="average_accuracy", seed=args.seed, directory=args.directory,
        project_name=name, overwrite=True, **tuner_kwargs,
    )
    start, cpu = time.perf_counter(), time.process_time()
    tuner.search(epochs_per_task=args.epochs, batch_size=100, shuffle_seed=args.seed, verbose=0)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    order = {trial_id: k for k, trial_id in enumerate(tuner.oracle.start_order)}
    rows = trial_rows(tuner.oracle.trials.values(), tuner.oracle.objective, ["m"])
    rows.sort(key=lambda r: order.get(r["trial"], len(order)))
    trials = [
        {
            "trial": r["trial"],
            "m": r["m"],
            "average_accuracy": r["average_accuracy"],
            "backward_transfer": r["backward_transfer"],
            "forgetting": r["forgetting"],
            "last_task_accuracy": r["last_task_accuracy"],
            "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"],
        }
        for r in rows
        if r["status"] == "COMPLETED"
    ]
    best = max(trials, key=lambda t: t["average_accuracy"])
    print(f"{name}: {len(trials)} trials in {seconds:.0f} s; best m={best['m']:.4f}, "
          f"average accuracy {100 * best['average_accuracy']:.2f}%", flush=True)
    return {
        "oracle": name,
        "trials": trials,
        "best": best,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "table": os.path.join(args.directory, name, "trials.txt"),
        "plot": os.path.join(args.directory, name, "objective.png"),
    }


def markdown(result: dict) -> str:
    grid = result["grid"]
    lines = [
        "| grid m | mean final acc. (%) | BWT (points) | forgetting (points) | last task (%) | s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in grid["trials"]:
        mark = " **(best)**" if t is grid["best"] else ""
        lines.append(
            f"| {t['m']:.2f}{mark} | {100 * t['average_accuracy']:.2f} | "
            f"{100 * t['backward_transfer']:+.2f} | {100 * t['forgetting']:.2f} | "
            f"{100 * t['last_task_accuracy']:.2f} | {t['seconds']:.0f} |"
        )
    for name, search in result["searches"].items():
        lines += [
            "",
            f"| {name} trial | m | mean final acc. (%) | forgetting (points) | s |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for k, t in enumerate(search["trials"], start=1):
            mark = " **(best)**" if t["trial"] == search["best"]["trial"] else ""
            lines.append(
                f"| {k}{mark} | {t['m']:.4f} | {100 * t['average_accuracy']:.2f} | "
                f"{100 * t['forgetting']:.2f} | {t['seconds']:.0f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000, help="training images per task")
    parser.add_argument("--test-size", type=int, default=None, help="test images per task (all)")
    parser.add_argument("--width", type=int, default=256, help="hidden width (2 layers)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per task")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (fixed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grid-step", type=float, default=0.25, help="grid step of m")
    parser.add_argument("--max-trials", type=int, default=12, help="trials of each search")
    parser.add_argument("--oracles", nargs="+", default=["bayesian", "random"],
                        choices=["bayesian", "random"])
    parser.add_argument("--directory", default="runs/tuning_benchmark")
    parser.add_argument("--output", default="benchmarks/results/tuning.json")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    tasks = permuted_mnist(
        num_tasks=args.tasks, seed=args.seed, train_size=args.train_size, test_size=args.test_size
    )
    grid = run_search("grid", tasks, args, oracle="grid", m_range=(0.0, 3.0),
                      m_step=args.grid_step)
    searches = {
        name: run_search(name, tasks, args, oracle=name, m_range=(0.0, 3.0),
                         max_trials=args.max_trials)
        for name in args.oracles
    }
    m0 = next(t for t in grid["trials"] if t["m"] == 0.0)
    checks = {}
    for name, search in searches.items():
        gap = 100 * (grid["best"]["average_accuracy"] - search["best"]["average_accuracy"])
        above = 100 * (search["best"]["average_accuracy"] - m0["average_accuracy"])
        checks[name] = {
            "best_m": search["best"]["m"],
            "best_average_accuracy": search["best"]["average_accuracy"],
            "points_below_grid_best": gap,
            "within_1_point_of_grid_best": gap <= 1.0,
            "points_above_m0": above,
        }
    result = {
        "benchmark": f"tuning: {args.max_trials}-trial searches of m vs the exhaustive grid "
                     f"m in {{0, {args.grid_step:g}, ..., 3}}",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            "tasks": f"permuted MNIST, {args.tasks} tasks, permutation seed {args.seed}",
            "train_size": args.train_size,
            "test_size": args.test_size or 10000,
            "model": f"paper_mlp 784-{args.width}-{args.width}-10",
            "optimizer": f"MetaplasticAdam(learning_rate={args.lr})",
            "epochs_per_task": args.epochs,
            "batch_size": 100,
            "objective": "average_accuracy (mean final accuracy over tasks)",
            "seeds": f"model init and data order seed {args.seed} in every trial",
        },
        "grid": grid,
        "searches": searches,
        "grid_best": {"m": grid["best"]["m"], "average_accuracy": grid["best"]["average_accuracy"]},
        "grid_m0_average_accuracy": m0["average_accuracy"],
        "checks": checks,
    }
    result["markdown"] = markdown(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2, default=float)
    print(result["markdown"])
    print(json.dumps(checks, indent=2))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
