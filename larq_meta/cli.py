"""The `larq-meta` command: continual-learning runs, searches and exports from the shell.

```
larq-meta demo                      # permuted MNIST, m=0 vs m=1.35, table + plot (~5 min)
larq-meta <command> --help
```
Every run writes its results (JSON, CSV) and plots (PNG) into `--output`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main"]


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _compile(model, m: float, learning_rate: float, epsilon: float = 1e-7, weight_decay: float = 0.0):
    import tensorflow as tf

    from larq_meta.optimizers import MetaplasticAdam

    model.compile(
        optimizer=MetaplasticAdam(
            m=m, learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _final_table(results: dict) -> str:
    """Final accuracy per task (rows: runs), in percent."""
    names = next(iter(results.values())).task_names
    head = "run".ljust(12) + "".join(f"task {k + 1}".rjust(9) for k in range(len(names))) + "     mean"
    lines = [head]
    for label, result in results.items():
        final = result.final_accuracies * 100
        lines.append(
            label.ljust(12) + "".join(f"{a:9.2f}" for a in final) + f"{final.mean():9.2f}"
        )
    return "\n".join(lines)


def demo(args: argparse.Namespace) -> int:
    """Permuted MNIST with and without metaplasticity: the forgetting and its absence."""
    import tensorflow as tf

    import larq_meta
    from larq_meta import plots
    from larq_meta.tasks import permuted_mnist
    from larq_meta.training import train_sequence

    tasks = permuted_mnist(num_tasks=args.tasks, seed=args.seed)
    print(
        f"Permuted MNIST: {args.tasks} tasks, paper MLP 784-{args.width}-{args.width}-10, "
        f"{args.epochs} epochs per task, lr {args.lr}, batch 100, fresh Adam state per task, "
        "BatchNorm protocol per_task (the paper's)."
    )
    results = {}
    for m in (0.0, args.m):
        label = f"m = {m:g}"
        print(f"\n== {label} ==")
        tf.keras.utils.set_random_seed(args.seed)
        model = _compile(larq_meta.models.paper_mlp((args.width, args.width)), m, args.lr)
        start = time.perf_counter()
        results[label] = train_sequence(
            model, tasks, epochs_per_task=args.epochs, shuffle_seed=args.seed
        )
        print(results[label].table())
        print(f"({time.perf_counter() - start:.0f} s)")
        results[label].save(os.path.join(args.output, f"m_{m:g}"))
    print("\nFinal test accuracy per task (%), after learning all tasks:")
    print(_final_table(results))
    path = plots.plot_task_accuracies(
        results,
        os.path.join(args.output, "task_accuracies.png"),
        title=f"Permuted MNIST, {args.width}-{args.width} BNN: non-metaplastic vs metaplastic",
    )
    print(f"\nPlot: {path}\nResults: {args.output}/m_*/results.json")
    return 0


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="permuted MNIST, m=0 vs metaplastic m, table and plot (~5 min on 2 cores)",
        description=demo.__doc__,
    )
    parser.add_argument("--tasks", type=_positive_int, default=3, help="number of tasks (3)")
    parser.add_argument("--width", type=_positive_int, default=512, help="hidden width (512)")
    parser.add_argument("--epochs", type=_positive_int, default=3, help="epochs per task (3)")
    parser.add_argument("--m", type=_non_negative_float, default=1.35, help="metaplastic m (1.35)")
    parser.add_argument("--lr", type=float, default=0.005, help="learning rate (0.005)")
    parser.add_argument("--seed", type=int, default=1, help="seed of permutations/init (1)")
    parser.add_argument("--output", default="runs/demo", help="output folder (runs/demo)")
    parser.set_defaults(func=demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-meta",
        description="Synaptic metaplasticity for binarized neural networks (Laborieux et al. 2021).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `larq-meta` console command."""
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
