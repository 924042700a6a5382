"""The sequence experiments: `demo`, `permuted-mnist`, `mnist-fashion`, `split-mnist`, `stream`.

Each trains one model per value of `--m` and writes results (JSON, CSV) and plots (PNG) into
`--output`. With `--strategy mirrored` (local devices) or `--strategy multi-worker`
(`TF_CONFIG`) the model is built under that `tf.distribute` strategy with synchronized
BatchNorm; only the chief writes into `--output` (docs/how-to/distribute.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

from larq_meta.cli._common import (
    UsageError,
    non_negative_float,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    tensorboard,
)

__all__ = ["register"]


# -- shared experiment machinery ---------------------------------------------------------------

METHODS = ("bnn", "float", "ewc", "random-consolidation")

#: The options that change what a run computes: recorded in results.json and the checkpoint
#: (a resume with other values is refused, listing them).
RUN_SETTINGS = (
    "method", "width", "depth", "num_classes", "epochs", "lr", "epsilon", "weight_decay",
    "batch_size", "compute_dtype", "bn_protocol", "recalibrate_bn", "ewc_lambda",
    "fisher_samples", "train_size", "seed", "tasks", "order", "scenario", "subsets",
    "evaluate_every", "jit",
)


def _method_callbacks(method: str, args) -> list:
    if method not in ("ewc", "random-consolidation"):
        return []
    from larq_meta.consolidation import EWC

    return [
        EWC(
            lambda_=args.ewc_lambda,
            fisher_samples=args.fisher_samples,
            shuffle_fisher=method == "random-consolidation",
            seed=args.seed,
        )
    ]


def _run_settings(args, m: float) -> dict:
    settings = {key: getattr(args, key) for key in RUN_SETTINGS if hasattr(args, key)}
    from larq_meta._utils import as_json

    return as_json({**settings, "m": m})


def _run_directory(args, m: float) -> str:
    return os.path.join(args.output, f"{args.method}_m{m:g}")


def check_output(args) -> None:
    """Refuse, before any work, options that do not fit together, an --output that cannot be
    written, or an --output that holds the results of a run with other settings (unless
    --overwrite). A rerun with the same settings replaces its files; --checkpoint resumes
    (its own check lists differing settings)."""
    from larq_meta.checkpoint import settings_diff

    if args.method == "float" and args.compute_dtype != "float32":
        raise UsageError(
            f"--compute-dtype {args.compute_dtype} applies to the binarized models only; "
            "--method float trains a float32 MLP."
        )
    if args.recalibrate_bn and args.bn_protocol == "batch_stats":
        raise UsageError("--recalibrate-bn needs --bn-protocol per_task or shared: batch_stats "
                         "normalizes test batches with their own statistics.")
    if args.resume_previous and not args.checkpoint:
        raise UsageError("--resume-previous needs --checkpoint.")
    output = output_folder(args.output)
    if args.overwrite:
        return
    for m in args.m:
        path = os.path.join(_run_directory(args, m), "results.json")
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                old = json.load(f).get("settings", {})
        except (OSError, ValueError):
            old = {"<unreadable results.json>": True}
        differences = settings_diff(old, _run_settings(args, m))
        if differences:
            raise UsageError(
                f"--output {output}: {path} holds a run with other settings "
                f"({'; '.join(differences)}); pass --overwrite to replace it, or choose "
                "another --output."
            )


def start_strategy(args):
    """Create the `--strategy` (before any TensorFlow operation: it may split the CPU into
    `--cpu-replicas` logical devices or join a `TF_CONFIG` cluster) and keep it in `args`."""
    strategy_name = getattr(args, "strategy", "none")
    cpu_replicas = getattr(args, "cpu_replicas", None)
    if cpu_replicas is not None and strategy_name != "mirrored":
        raise UsageError("--cpu-replicas needs --strategy mirrored.")
    if strategy_name == "multi-worker" and not os.environ.get("TF_CONFIG"):
        raise UsageError(
            "--strategy multi-worker needs the TF_CONFIG environment variable (the cluster's "
            "workers and this process's role; see docs/how-to/distribute.md)."
        )
    from larq_meta.distribute import make_strategy, xla_supported

    args.strategy_object = make_strategy(strategy_name, cpu_replicas)
    if getattr(args, "jit", False) and not xla_supported(args.strategy_object):
        # XLA:CPU has no collective operations: the step runs without XLA (recorded as jit
        # false in the settings, so say --no-jit to resume such a run in one process).
        print("--strategy on CPU devices: the training step is not compiled with XLA "
              "(XLA:CPU has no collective operations).")
        args.jit = False
    return args.strategy_object


def run_experiment(tasks, args, *, title: str, reset_optimizer_per_task: bool = True) -> dict:
    """Train one model per value of `--m` on `tasks`; write results, tables and plots."""
    import tensorflow as tf

    from larq_meta import plots
    from larq_meta._utils import write_json
    from larq_meta.callbacks import HiddenWeightSnapshots
    from larq_meta.distribute import is_chief, num_replicas
    from larq_meta.models import compiled_paper_mlp
    from larq_meta.training import train_sequence

    strategy = getattr(args, "strategy_object", None) or tf.distribute.get_strategy()
    distributed = getattr(args, "strategy", "none") != "none"
    chief = is_chief(strategy)
    depth = args.depth
    print(
        f"{title}: {len(tasks)} tasks, {args.method} 784-{'-'.join([str(args.width)] * depth)}-"
        f"{args.num_classes}, {args.epochs} epochs per task, lr {args.lr}, batch {args.batch_size}, "
        f"BatchNorm protocol {args.bn_protocol}{' (recalibrated)' if args.recalibrate_bn else ''}, "
        f"optimizer state reset per task: "
        f"{reset_optimizer_per_task}, compute dtype {args.compute_dtype}."
        + (
            f" Strategy {type(strategy).__name__}: {num_replicas(strategy)} replicas, "
            f"synchronized BatchNorm, {'chief' if chief else 'worker (writes nothing)'}."
            if distributed else ""
        )
    )
    results = {}
    for m in args.m:
        label = f"{args.method} m={m:g}"
        print(f"\n== {label} ==")
        tf.keras.utils.set_random_seed(args.seed)
        with strategy.scope():
            model = compiled_paper_mlp(
                (args.width,) * depth,
                m=m,
                learning_rate=args.lr,
                epsilon=args.epsilon,
                weight_decay=args.weight_decay,
                num_classes=args.num_classes,
                compute_dtype=args.compute_dtype,
                full_precision=args.method == "float",
                jit_compile=args.jit,
                synchronized_bn=distributed,
            )
        directory = _run_directory(args, m)
        callbacks = _method_callbacks(args.method, args)
        snapshots = None
        if args.method != "float":
            snapshots = HiddenWeightSnapshots()
            callbacks.append(snapshots)
        if args.tensorboard and chief:
            callbacks.append(tensorboard(os.path.join(args.tensorboard, f"{args.method}_m{m:g}")))
        os.makedirs(directory, exist_ok=True)
        result = train_sequence(
            model,
            tasks,
            epochs_per_task=args.epochs,
            batch_size=args.batch_size,
            bn_protocol=args.bn_protocol,
            recalibrate_bn=args.recalibrate_bn,
            reset_optimizer_per_task=reset_optimizer_per_task,
            shuffle_seed=args.seed,
            checkpoint_dir=os.path.join(directory, "checkpoint") if args.checkpoint else None,
            resume_previous=args.resume_previous,
            settings=_run_settings(args, m),
            epochs_csv=os.path.join(directory, "epochs.csv"),
            deterministic=args.deterministic,
            evaluate_every=args.evaluate_every or 1,
            callbacks=callbacks,
        )
        if chief:
            result.save(directory)
        if args.save_model:  # every worker saves (it reads reduced variables), the chief keeps it
            target = directory if chief else tempfile.mkdtemp(prefix="larq-meta-worker-")
            model.save(os.path.join(target, "model.keras"))
            if not chief:
                shutil.rmtree(target, ignore_errors=True)
        print(result.table())
        results[label] = result
        if chief and snapshots is not None and snapshots.snapshots:
            plots.plot_hidden_weights(
                snapshots.snapshots, os.path.join(directory, "hidden_weights.png")
            )
    print("\nFinal test accuracy per task (%), after learning all tasks:")
    print(final_table(results))
    if not chief:
        return results
    plots.plot_task_accuracies(results, os.path.join(args.output, "task_accuracies.png"), title=title)
    plots.plot_accuracy_matrix(results, os.path.join(args.output, "accuracy_matrix.png"), title=title)
    summary = {
        label: {
            "final_accuracies": r.final_accuracies.tolist(),
            **r.metrics(),
            "seconds": r.seconds,
            "settings": r.settings,
            "config": r.config,
        }
        for label, r in results.items()
    }
    write_json(os.path.join(args.output, "summary.json"), summary)
    print(f"\nResults and plots: {args.output}/")
    return results


def final_table(results: dict) -> str:
    """Final accuracy per task (rows: runs), in percent, with the mean. A stream's subsets,
    all tested on one test set with one BatchNorm state, get one column."""
    import numpy as np

    names = next(iter(results.values())).task_names
    width = max(12, *(len(label) for label in results)) + 1
    if all(np.all(r.final_accuracies == r.final_accuracies[0]) for r in results.values()) and (
        len(names) > 1
        and all(r.config.get("sequence", "").startswith("stream") for r in results.values())
    ):
        lines = ["run".ljust(width) + f"  test accuracy (one test set, {len(names)} subsets)"]
        for label, result in results.items():
            lines.append(label.ljust(width) + f"{100 * result.final_accuracies[0]:9.2f}")
        return "\n".join(lines)
    head = "run".ljust(width) + "".join(f"task {k + 1}".rjust(9) for k in range(len(names)))
    lines = [head + "     mean"]
    for label, result in results.items():
        final = result.final_accuracies * 100
        lines.append(label.ljust(width) + "".join(f"{a:9.2f}" for a in final) + f"{final.mean():9.2f}")
    return "\n".join(lines)


def _experiment_parser(paper_help: str) -> argparse.ArgumentParser:
    """Options shared by every sequence experiment."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("model and training")
    group.add_argument("--method", choices=METHODS, default="bnn",
                       help="bnn (MetaplasticAdam on the paper BNN), float (the rule on a float MLP), "
                            "ewc or random-consolidation (EWC baselines on the BNN) (bnn)")
    group.add_argument("--m", type=non_negative_float, nargs="+", help="one run per value")
    group.add_argument("--width", type=positive_int, help="hidden width")
    group.add_argument("--epochs", type=positive_int, help="epochs per task")
    group.add_argument("--lr", type=positive_float, default=0.005, help="learning rate (0.005)")
    group.add_argument("--epsilon", type=positive_float,
                       help="Adam epsilon (1e-7; --paper: 1e-8, the reference's)")
    group.add_argument("--weight-decay", type=non_negative_float,
                       help="coupled L2 (0; --paper: 1e-7, the reference's)")
    group.add_argument("--batch-size", type=positive_int, default=100, help="batch size (100)")
    group.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                       help="bfloat16: the binary matrix products take bfloat16 operands "
                            "(exact signs, float32 sums); about 1.2x faster with XLA (float32)")
    group.add_argument("--bn-protocol", choices=("per_task", "batch_stats", "shared"),
                       default="per_task", help="BatchNorm evaluation protocol (per_task)")
    group.add_argument("--recalibrate-bn", action="store_true",
                       help="evaluate (and snapshot) BatchNorm with exact statistics of the "
                            "current task's training inputs instead of the moving averages "
                            "(needed at 4096 units trained long; not with batch_stats)")
    group.add_argument("--ewc-lambda", type=non_negative_float, default=5000.0,
                       help="EWC lambda (5000)")
    group.add_argument("--fisher-samples", type=positive_int, default=5000,
                       help="samples for the empirical Fisher (5000)")
    group.add_argument("--train-size", type=positive_int, help="use only this many training images")
    run = parser.add_argument_group("run")
    run.add_argument("--paper", action="store_true", help=paper_help)
    run.add_argument("--seed", type=non_negative_int, default=1, help="seed of data order, init, permutations (1)")
    run.add_argument("--deterministic", action="store_true",
                     help="enable TensorFlow op determinism (identical reruns)")
    run.add_argument("--evaluate-every", type=positive_int,
                     help="test every task every n epochs and at each task's end (1; stream "
                          "--paper: 20, once per subset)")
    run.add_argument("--checkpoint", action="store_true",
                     help="checkpoint every epoch and resume an interrupted run")
    run.add_argument("--resume-previous", action="store_true",
                     help="with --checkpoint: resume from the state one epoch before the latest "
                          "(when the latest checkpoint files are damaged)")
    run.add_argument("--save-model", action="store_true", help="save each trained model (.keras)")
    run.add_argument("--no-jit", dest="jit", action="store_false",
                     help="do not compile the training step with XLA")
    run.add_argument("--strategy", choices=("none", "mirrored", "multi-worker"), default="none",
                     help="tf.distribute strategy: mirrored (the local GPUs, or --cpu-replicas "
                          "logical CPUs) or multi-worker (a cluster described by TF_CONFIG); "
                          "the model gets synchronized BatchNorm and --batch-size stays the "
                          "global batch (none)")
    run.add_argument("--cpu-replicas", type=positive_int,
                     help="with --strategy mirrored: split the CPU into this many logical "
                          "devices (testing on a machine without accelerators)")
    return parser


#: Optimizer settings every experiment shares: Keras' defaults, or the reference code's.
QUICK_OPTIMIZER = {"epsilon": 1e-7, "weight_decay": 0.0}
PAPER_OPTIMIZER = {"epsilon": 1e-8, "weight_decay": 1e-7}


def _defaults(args, quick: dict, paper: dict) -> argparse.Namespace:
    """Fill options left unset (None) from the quick (CPU-friendly) or the paper's settings."""
    settings = {**PAPER_OPTIMIZER, **paper} if args.paper else {**QUICK_OPTIMIZER, **quick}
    for key, value in settings.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


# -- subcommands -------------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    """Permuted MNIST with and without metaplasticity: the forgetting, and its absence."""
    from larq_meta.tasks import permuted_mnist

    args.method, args.m = "bnn", [0.0, args.m]
    args.num_classes, args.batch_size, args.bn_protocol = 10, 100, "per_task"
    args.epsilon, args.weight_decay = 1e-7, 0.0
    args.checkpoint = args.deterministic = args.save_model = args.resume_previous = False
    args.recalibrate_bn, args.evaluate_every = False, None
    args.compute_dtype = "float32"
    check_output(args)
    tasks = permuted_mnist(num_tasks=args.tasks, seed=args.seed, train_size=args.train_size)
    run_experiment(tasks, args, title=f"Permuted MNIST, {args.width}-{args.width} BNN")
    return 0


def permuted(args: argparse.Namespace) -> int:
    """Permuted MNIST (the paper's Fig. 2): a domain-incremental sequence."""
    from larq_meta.tasks import permuted_mnist

    _defaults(
        args,
        quick={"tasks": 3, "width": 256, "epochs": 10, "m": [0.0, 1.35]},
        paper={"tasks": 6, "width": 4096, "epochs": 40, "m": [0.0, 1.35]},
    )
    args.num_classes = 10
    start_strategy(args)
    check_output(args)
    tasks = permuted_mnist(num_tasks=args.tasks, seed=args.seed, train_size=args.train_size)
    run_experiment(tasks, args, title="Permuted MNIST")
    return 0


def mnist_fashion(args: argparse.Namespace) -> int:
    """MNIST then Fashion-MNIST, or the reverse (the paper's Fig. 1a / Supp. Fig. 6)."""
    from larq_meta.tasks import mnist_fashion as sequence

    _defaults(
        args,
        quick={"width": 256, "epochs": 10, "m": [0.0, 1.5]},
        paper={"width": 4096, "epochs": 50, "m": [0.0, 1.5]},
    )
    args.num_classes = 10
    start_strategy(args)
    check_output(args)
    tasks = sequence(order=args.order, train_size=args.train_size)
    run_experiment(tasks, args, title=" -> ".join(tasks.names))
    return 0


def split(args: argparse.Namespace) -> int:
    """Split MNIST: five two-class tasks, task- or class-incremental."""
    from larq_meta.tasks import split_mnist

    _defaults(
        args,
        quick={"width": 256, "epochs": 2, "m": [0.0, 1.35]},
        paper={"width": 1024, "epochs": 20, "m": [0.0, 1.35]},
    )
    args.num_classes = 10
    start_strategy(args)
    check_output(args)
    tasks = split_mnist(scenario=args.scenario, train_size=args.train_size)
    run_experiment(tasks, args, title=f"Split MNIST ({args.scenario} scenario)")
    return 0


def stream(args: argparse.Namespace) -> int:
    """Stream learning: Fashion-MNIST cut into subsets learned one after another (Fig. 4a)."""
    from larq_meta.tasks import stream_fashion_mnist

    _defaults(
        args,
        quick={"width": 256, "epochs": 2, "m": [0.0, 2.5], "subsets": 6},
        paper={"width": 1024, "epochs": 20, "m": [0.0, 2.5], "subsets": 60,
               "evaluate_every": 20},
    )
    args.num_classes = 10
    if args.train_size:
        raise UsageError("--train-size does not apply to streams: use --subsets.")
    start_strategy(args)
    check_output(args)
    tasks = stream_fashion_mnist(num_subsets=args.subsets, seed=args.seed)
    # No task-boundary signal: the optimizer state carries over from subset to subset.
    run_experiment(
        tasks, args, title=f"Stream Fashion-MNIST, {args.subsets} subsets",
        reset_optimizer_per_task=False,
    )
    return 0


def _add_output_options(parser) -> None:
    parser.set_defaults(depth=2)  # the paper's two hidden layers (the tuner searches depth)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results in --output left by a run with other settings")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="write TensorBoard logs (one folder per run, epochs numbered over "
                             "the whole sequence) into DIR; needs larq-meta[tensorboard]")


def _add_experiment(subparsers, common, name, func, paper_help, extra=None):
    parser = subparsers.add_parser(
        name, help=func.__doc__.splitlines()[0], description=func.__doc__,
        parents=[common, _experiment_parser(paper_help)],
    )
    if extra:
        extra(parser)
    parser.add_argument("--output", default=f"runs/{name}", help=f"output folder (runs/{name})")
    _add_output_options(parser)
    parser.set_defaults(func=func)
    return parser


def register(subparsers, common) -> None:
    """Add the sequence experiments to the `larq-meta` parser."""

    p = subparsers.add_parser(
        "demo", help="permuted MNIST, m=0 vs m=1.35, table and plot (~5 min on 2 cores)",
        description=demo.__doc__, parents=[common],
    )
    p.add_argument("--tasks", type=positive_int, default=3, help="number of tasks (3)")
    p.add_argument("--width", type=positive_int, default=256, help="hidden width (256)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs per task (10)")
    p.add_argument("--m", type=non_negative_float, default=1.35, help="metaplastic m (1.35)")
    p.add_argument("--lr", type=positive_float, default=0.005, help="learning rate (0.005)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of permutations, init, order (1)")
    p.add_argument("--train-size", type=positive_int, help="use only this many training images")
    p.add_argument("--no-jit", dest="jit", action="store_false",
                   help="do not compile the training step with XLA")
    p.add_argument("--output", default="runs/demo", help="output folder (runs/demo)")
    _add_output_options(p)
    p.set_defaults(func=demo)

    _add_experiment(
        subparsers, common, "permuted-mnist", permuted,
        "paper scale: 6 tasks, 784-4096-4096-10, 40 epochs per task, weight decay 1e-7",
        extra=lambda q: q.add_argument("--tasks", type=positive_int, help="number of tasks"),
    )
    _add_experiment(
        subparsers, common, "mnist-fashion", mnist_fashion,
        "paper scale: 4096-4096, 50 epochs per task, m 1.5, weight decay 1e-7",
        extra=lambda q: q.add_argument(
            "--order", choices=("mnist_first", "fashion_first"), default="mnist_first",
            help="which data set first (mnist_first)"),
    )
    _add_experiment(
        subparsers, common, "split-mnist", split, "1024-1024, 20 epochs per task",
        extra=lambda q: q.add_argument(
            "--scenario", choices=("task", "class"), default="task",
            help="task-incremental (task identity known at test) or class-incremental (task)"),
    )
    _add_experiment(
        subparsers, common, "stream", stream,
        "paper scale: 60 subsets, 1024-1024, 20 epochs per subset, m 2.5, tested once per subset "
        "(7-8 min per value of m on 2 CPU cores)",
        extra=lambda q: (
            q.add_argument("--subsets", type=positive_int, help="number of subsets"),
            # every subset is tested on the same full test set with the network as it is now
            q.set_defaults(bn_protocol="shared"),
        ),
    )
