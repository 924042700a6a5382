"""Reproduction runs of Laborieux et al. (2021) on permuted MNIST, all three BatchNorm protocols.

Training does not depend on the BatchNorm protocol (BatchNorm always normalizes training
batches with their own statistics); only evaluation does. So each run trains once and
evaluates every epoch under all three protocols side by side (`TaskEvaluation` callbacks
with a `log_prefix`): `per_task` (the paper's), `batch_stats` (the reference code today),
`shared`.

    # side by side with the reference code, CPU scale (3 tasks x 5 epochs, 1024-1024):
    .venv/bin/python benchmarks/reproduce.py --m 0 0.5 1.0 1.35 2.0 --methods bnn ewc random
    # paper scale (6 tasks x 40 epochs, all tasks tested every 5 epochs, resumable):
    .venv/bin/python benchmarks/reproduce.py --tasks 6 --epochs 40 --m 1.35 0 1.0 \
        --evaluate-every 5 --checkpoint-dir /tmp/paper_scale --name paper_scale
    # the bfloat16 option on the side-by-side settings:
    .venv/bin/python benchmarks/reproduce.py --m 1.35 0 --compute-dtype bfloat16 \
        --name side_by_side_bfloat16

Writes one JSON per run and a summary to benchmarks/results/<name>.json.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_meta  # noqa: E402  (legacy Keras first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from larq_meta.callbacks import TaskEvaluation  # noqa: E402
from larq_meta.consolidation import EWC  # noqa: E402
from larq_meta.tasks import permuted_mnist  # noqa: E402
from larq_meta.training import train_sequence  # noqa: E402

# The reference PyTorch implementation, run on this machine (issue 3): 3 tasks x 5 epochs,
# 1024-1024, lr 0.005, eps 1e-8, weight decay 1e-7, batch 100, fresh Adam per task, seed 1,
# its current BatchNorm protocol (batch_stats).
REFERENCE = {
    "bnn m=1.35": [43.7, 87.2, 97.3],
    "bnn m=0": [17.2, 64.9, 97.4],
}
OTHER_PROTOCOLS = ("batch_stats", "shared")


def run(method: str, m: float, tasks, args) -> dict:
    tf.keras.utils.set_random_seed(args.seed)
    model = larq_meta.models.compiled_paper_mlp(
        (args.width, args.width), m=m, learning_rate=args.lr, epsilon=args.epsilon,
        weight_decay=args.weight_decay, compute_dtype=args.compute_dtype,
    )
    evaluations = {
        p: TaskEvaluation(
            tasks, bn_protocol=p, eval_batch_size=1000, log_prefix=f"{p}/",
            evaluate_every=args.evaluate_every,
        )
        for p in OTHER_PROTOCOLS
    }
    callbacks = list(evaluations.values())
    if method in ("ewc", "random"):
        callbacks.append(
            EWC(lambda_=args.ewc_lambda, fisher_samples=args.fisher_samples,
                shuffle_fisher=method == "random", seed=args.seed)
        )
    start = time.perf_counter()
    result = train_sequence(
        model, tasks, epochs_per_task=args.epochs, batch_size=100, bn_protocol="per_task",
        reset_optimizer_per_task=True, shuffle_seed=args.seed, callbacks=callbacks,
        evaluate_every=args.evaluate_every,
        checkpoint_dir=args.checkpoint_dir and os.path.join(args.checkpoint_dir, f"{method}_m{m:g}"),
    )
    seconds = time.perf_counter() - start
    matrices = {"per_task": result.accuracy_matrix}
    matrices.update({p: e.accuracy_matrix for p, e in evaluations.items()})
    train_seconds = [s for h in result.fit_history for s in h["train_seconds"]]
    label = f"{method} m={m:g}" if method == "bnn" else {"ewc": "EWC", "random": "random consolidation"}[method]
    return {
        "label": label,
        "method": method,
        "m": m,
        "final_accuracies": {p: (100 * R[-1]).round(2).tolist() for p, R in matrices.items()},
        "mean_final_accuracy": {p: round(float(100 * R[-1].mean()), 2) for p, R in matrices.items()},
        "metrics": {p: larq_meta.metrics.summarize(R) for p, R in matrices.items()},
        "accuracy_matrices": {p: R.tolist() for p, R in matrices.items()},
        "train_seconds_per_epoch_median": float(np.median(train_seconds)),
        "wall_seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--m", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.35, 2.0])
    parser.add_argument("--methods", nargs="+", default=["bnn"], choices=("bnn", "ewc", "random"),
                        help="bnn: one run per --m; ewc / random (consolidation): one run with m=0")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--epsilon", type=float, default=1e-8)
    parser.add_argument("--weight-decay", type=float, default=1e-7)
    parser.add_argument("--ewc-lambda", type=float, default=5000.0)
    parser.add_argument("--fisher-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compute-dtype", choices=larq_meta.models.COMPUTE_DTYPES,
                        default="float32",
                        help="paper_mlp's compute_dtype (bfloat16: binary products in bfloat16)")
    parser.add_argument("--evaluate-every", type=int, default=1,
                        help="test all tasks every n epochs (and at each task's end)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="save each run after every epoch; rerun the same command to resume")
    parser.add_argument("--name", default="side_by_side")
    parser.add_argument("--plot-only", action="store_true",
                        help="only draw docs/<name>_accuracy_matrix.png from the results JSON")
    args = parser.parse_args()
    output = os.path.join("benchmarks", "results", f"{args.name}.json")
    if args.plot_only:
        with open(output) as f:
            plot(json.load(f), args.name)
        return

    tasks = permuted_mnist(num_tasks=args.tasks, seed=args.seed)
    summary = {
        "benchmark": args.name,
        "command": "python benchmarks/reproduce.py " + " ".join(os.sys.argv[1:]),
        "settings": vars(args),
        "reference_pytorch_batch_stats": REFERENCE,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": os.getloadavg(),
        "runs": [],
    }
    plan = [("bnn", m) for m in args.m] if "bnn" in args.methods else []
    plan += [(method, 0.0) for method in args.methods if method != "bnn"]
    for method, m in plan:
        print(f"== {method} m={m:g} ==", flush=True)
        summary["runs"].append(run(method, m, tasks, args))
        print(json.dumps({k: summary["runs"][-1][k] for k in ("label", "final_accuracies")}), flush=True)
        summary["load_average_at_end"] = os.getloadavg()
        with open(output, "w") as f:  # rewritten after every run: partial results survive
            json.dump(summary, f, indent=2)
    plot(summary, args.name)
    print(f"-> {output}")


def plot(summary: dict, name: str) -> None:
    """Accuracy-matrix heatmaps of every run, BatchNorm protocol `per_task`."""
    from types import SimpleNamespace

    results = {
        run["label"]: SimpleNamespace(accuracy_matrix=np.array(run["accuracy_matrices"]["per_task"]))
        for run in summary["runs"]
    }
    settings = summary["settings"]
    title = (f"Permuted MNIST, {settings['tasks']} tasks x {settings['epochs']} epochs, "
             f"{settings['width']}-{settings['width']} BNN, BatchNorm per_task")
    path = larq_meta.plots.plot_accuracy_matrix(
        results, os.path.join("docs", f"{name}_accuracy_matrix.png"), title=title
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
