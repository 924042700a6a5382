"""`larq-meta tune`: Keras Tuner search of `m` (and the learning rate) on permuted MNIST.

Every trial trains the whole task sequence; the tuner reports average final accuracy,
backward transfer, forgetting and last-task accuracy (`larq_meta.tuning`). Rerunning the same
command resumes the search; other settings are refused with one line listing them.
"""

from __future__ import annotations

import argparse
import sys

from larq_meta.cli._common import (
    UsageError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

BN_PROTOCOLS = ("per_task", "batch_stats", "shared")  # larq_meta.batchnorm.BN_PROTOCOLS
ORACLES = ("random", "bayesian", "grid")  # larq_meta.tuning.ORACLES
METRIC_NAMES = "average_accuracy, backward_transfer, forgetting, last_task_accuracy"


def _objective(text: str):
    """`average_accuracy` or weights like `average_accuracy=1,forgetting=-0.5`."""
    if "=" not in text:
        return text
    weights = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
    return weights


def register(subparsers, common) -> None:
    """Add the `tune` command."""
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="keras-tuner search of m (and the learning rate)",
        description=(
            "Keras Tuner search of the metaplasticity m (and optionally the learning rate) on "
            "permuted MNIST: every trial trains the whole task sequence and reports average "
            "final accuracy, backward transfer, forgetting and last-task accuracy. Rerun the "
            "same command to resume (other settings are refused). Distributed: run the same "
            "command in one chief and N workers with KERASTUNER_TUNER_ID=chief|tuner0|"
            "tuner1..., KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set."
        ),
    )
    data = parser.add_argument_group("task sequence and model")
    data.add_argument("--tasks", type=positive_int, default=3, help="permuted MNIST tasks (3)")
    data.add_argument("--train-size", type=positive_int,
                      help="use only this many training images")
    data.add_argument("--test-size", type=positive_int, help="use only this many test images")
    data.add_argument("--width", type=positive_int, default=256, help="hidden width (256)")
    data.add_argument("--depth", type=positive_int, default=2, help="hidden layers (2)")
    data.add_argument("--epochs", type=positive_int, default=1, help="epochs per task (1)")
    data.add_argument("--batch-size", type=positive_int, default=100, help="batch size (100)")
    data.add_argument("--lr", type=positive_float, default=0.005,
                      help="learning rate when it is not searched (0.005)")
    data.add_argument("--bn-protocol", default="per_task", choices=BN_PROTOCOLS,
                      help="BatchNorm evaluation protocol (per_task)")
    search = parser.add_argument_group("search")
    search.add_argument("--oracle", default="random", choices=ORACLES,
                        help="search algorithm (random)")
    search.add_argument("--max-trials", type=positive_int,
                        help="number of trials (10; grid: all points)")
    search.add_argument("--objective", type=_objective, default="average_accuracy",
                        help=f"metric to optimize: {METRIC_NAMES}, or weights like "
                             "average_accuracy=1,forgetting=-0.5 (average_accuracy; "
                             "mean_accuracy is a deprecated name of average_accuracy)")
    search.add_argument("--m-range", type=non_negative_float, nargs=2, default=(0.0, 3.0),
                        metavar=("LOW", "HIGH"), help="range of m (0 3)")
    search.add_argument("--m-step", type=positive_float, help="grid step of m (grid: 0.25)")
    search.add_argument("--lr-range", type=positive_float, nargs=2, metavar=("LOW", "HIGH"),
                        help="also search the learning rate, log scale (off)")
    search.add_argument("--lr-step", type=positive_float,
                        help="grid factor of the learning rate (grid: 10)")
    search.add_argument("--executions", type=positive_int, default=1,
                        help="runs per trial with seeds seed, seed+1, ...; metrics averaged (1)")
    search.add_argument("--seed", type=non_negative_int, default=1,
                        help="seed of permutations, model init, data order and oracle (1)")
    search.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    search.add_argument("--save-models", action="store_true", help="keep each trial's weights")
    out = parser.add_argument_group("output")
    out.add_argument("--directory", default="runs/tune", help="tuner directory (runs/tune)")
    out.add_argument("--project-name", default="pmnist", help="project name (pmnist)")
    out.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    out.add_argument("--quiet", action="store_true", help="no per-trial output")
    out.add_argument("--tensorboard", metavar="DIR",
                     help="write TensorBoard logs, one folder per trial (DIR/trial_<id>), epochs "
                          "numbered over the whole sequence; needs larq-meta[tensorboard]")
    parser.set_defaults(func=run)


def _check_search_arguments(args) -> None:
    """Usage errors of the search arguments, before any data is loaded."""
    import warnings

    from larq_meta.tuning import make_objective

    for option, pair in (("--m-range", args.m_range), ("--lr-range", args.lr_range)):
        if pair is not None and not pair[0] < pair[1]:
            raise UsageError(f"{option} {pair[0]:g} {pair[1]:g}: needs LOW < HIGH, e.g. 0 3")
    if args.lr_step is not None and args.lr_range is None:
        raise UsageError("--lr-step needs --lr-range")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        try:
            make_objective(args.objective)
        except ValueError as error:
            raise UsageError(str(error).replace("`objective`", "--objective")) from None
    for warning in caught:  # a deprecated metric name: say so once (Python hides these)
        if issubclass(warning.category, DeprecationWarning):
            print(f"larq-meta tune: warning: {warning.message}", file=sys.stderr)
            break


def load_tasks(args):
    """The permuted MNIST sequence of the arguments (tests replace this function)."""
    from larq_meta.tasks import permuted_mnist

    return permuted_mnist(
        num_tasks=args.tasks, seed=args.seed, train_size=args.train_size, test_size=args.test_size
    )


def run(args) -> int:
    """Run (or resume) the search, print the trials table and the best hyperparameters."""
    _check_search_arguments(args)
    from larq_meta.cli._common import tensorboard
    from larq_meta.tuning import MetaplasticTuner, paper_mlp_builder

    tasks = load_tasks(args)
    tuner = MetaplasticTuner(
        build_model=paper_mlp_builder(
            hidden_units=(args.width,) * args.depth,
            num_classes=10,
            input_shape=tasks[0].x_train.shape[1:],
            learning_rate=args.lr,
        ),
        tasks=tasks,
        objective=args.objective,
        oracle=args.oracle,
        max_trials=args.max_trials,
        m_range=tuple(args.m_range),
        m_step=args.m_step,
        learning_rate_range=None if args.lr_range is None else tuple(args.lr_range),
        learning_rate_step=args.lr_step,
        seed=args.seed,
        executions_per_trial=args.executions,
        save_models=args.save_models,
        directory=args.directory,
        project_name=args.project_name,
        overwrite=args.overwrite,
    )
    tuner.search(
        epochs_per_task=args.epochs,
        batch_size=args.batch_size,
        bn_protocol=args.bn_protocol,
        shuffle_seed=args.seed,
        deterministic=args.deterministic,
        verbose=0 if args.quiet else 1,
        callbacks=[tensorboard(args.tensorboard)] if args.tensorboard else [],
    )
    if tuner.is_worker:
        ids = ", ".join(t["trial_id"] for t in tuner.executed_trials) or "none"
        print(f"worker {tuner.tuner_id}: ran trials {ids}")
        return 0
    paths = tuner.write_results()
    with open(paths["txt"]) as f:
        print(f.read())
    best = tuner.get_best_hyperparameters()
    if best:
        values = ", ".join(f"{k}={v:.4g}" for k, v in best[0].values.items())
        print(f"best hyperparameters: {values}")
    print(f"table: {paths['txt']}, {paths['csv']}; plot: {paths['png']}")
    return 0
