"""`larq-meta analyze` (hidden-weight magnitude vs importance in a trained BNN, Fig. 5c-e) and
`larq-meta toy` (the quadratic binary toy problem, Fig. 5a,b).

Both write their results as JSON and their figures as PNG into `--output` (files replaced
atomically) and print a short summary.
"""

from __future__ import annotations

import os

from larq_meta.cli._common import (
    non_negative_float,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
)

__all__ = ["register"]


def register(subparsers, common) -> None:
    """Add the `analyze` and `toy` commands."""
    toy = subparsers.add_parser(
        "toy", parents=[common],
        help="the quadratic binary toy problem (Fig. 5a,b)",
        description="The quadratic binary task of Laborieux et al. (2021), Fig. 5a,b: hidden "
        "weights descend a quadratic loss evaluated at their signs; the cost of flipping a "
        "weight grows with |W_h|.",
    )
    toy.add_argument("--d", type=positive_int, nargs="+", default=[2, 500],
                     help="dimensions, one run each (2 500)")
    toy.add_argument("--eta", type=positive_float, help="learning rate (0.35 for d=2, else 0.01)")
    toy.add_argument("--steps", type=non_negative_int, help="steps (500 for d=2, else 1000)")
    toy.add_argument("--m", type=non_negative_float, default=0.0, help="metaplastic damping m (0)")
    toy.add_argument("--seed", type=non_negative_int, default=1, help="seed of the problem (1)")
    toy.add_argument("--bins", type=positive_int, default=15, help="bins of |W_h| (15)")
    toy.add_argument("--output", default="runs/toy", help="output folder (runs/toy)")
    toy.set_defaults(func=run_toy)

    analyze = subparsers.add_parser(
        "analyze", parents=[common],
        help="hidden-weight analysis: importance vs |W_h|, Fisher correlation",
        description="Train the paper's BNN on MNIST, then measure how hidden-weight magnitude "
        "relates to importance: loss increase of sign flips per |W_h| bin (Fig. 5c-e), "
        "correlation of |W_h| with the EWC Fisher, and hidden-weight histograms.",
    )
    analyze.add_argument("--m", type=non_negative_float, nargs="+", default=[1.35],
                         help="metaplastic m, one model each (1.35)")
    analyze.add_argument("--width", type=positive_int, default=512, help="hidden width (512)")
    analyze.add_argument("--epochs", type=positive_int, default=2, help="training epochs (2)")
    analyze.add_argument("--train-size", type=positive_int, default=20000,
                         help="training images used (20000)")
    analyze.add_argument("--lr", type=positive_float, default=0.005, help="learning rate (0.005)")
    analyze.add_argument("--bins", type=positive_int, default=10, help="bins of |W_h| (10)")
    analyze.add_argument("--sample", type=positive_int, default=200,
                         help="weights flipped per bin and run (200)")
    analyze.add_argument("--runs", type=positive_int, default=3, help="random draws per bin (3)")
    analyze.add_argument("--binning", choices=("quantile", "uniform"), default="quantile",
                         help="equal-count or equal-width bins (quantile)")
    analyze.add_argument("--eval-size", type=positive_int, default=10000,
                         help="training images the loss increase is measured on (10000)")
    analyze.add_argument("--fisher-samples", type=positive_int, default=2000,
                         help="samples for the Fisher (2000)")
    analyze.add_argument("--seed", type=non_negative_int, default=1, help="seed (1)")
    analyze.add_argument("--no-jit", dest="jit", action="store_false",
                         help="train without XLA compilation (slower; default: XLA on)")
    analyze.add_argument("--output", default="runs/analyze",
                         help="output folder (runs/analyze)")
    analyze.set_defaults(func=run_analyze)


def run_toy(args) -> int:
    from larq_meta._utils import write_json
    from larq_meta.plots import plot_quadratic_toy
    from larq_meta.quadratic import quadratic_toy

    output = output_folder(args.output)
    summary = {}
    for d in dict.fromkeys(args.d):  # each dimension once
        result = quadratic_toy(d=d, eta=args.eta, steps=args.steps, m=args.m, seed=args.seed,
                               bins=args.bins)
        png = plot_quadratic_toy(result, os.path.join(output, f"toy_d{d}.png"))
        summary[f"d={d}"] = result.to_dict(trajectory=d <= 2)
        corr = result.correlations
        print(
            f"d={d}: eta {result.eta:g}, {result.steps} steps, m {result.m:g}: binary loss "
            f"{result.loss[0]:.3f} -> {result.loss[-1]:.3f}; corr(|W_h|, flip cost) Spearman "
            f"{corr['flip_cost']['spearman']:.3f}, Pearson {corr['flip_cost']['pearson']:.3f}; "
            f"corr(|W_h|, diag H) Spearman {corr['hessian_diagonal']['spearman']:.3f}  [{png}]"
        )
    write_json(os.path.join(output, "toy.json"), summary)
    print(f"Results: {output}/")
    return 0


def run_analyze(args) -> int:
    from larq_meta import plots
    from larq_meta._utils import write_json
    from larq_meta.hidden_weights import (
        binarized_variables,
        fisher_correlation,
        flip_importance,
        hidden_weights,
        train_mnist_bnn,
    )

    output = output_folder(args.output)
    summary, snapshots = {}, []
    values = list(dict.fromkeys(args.m))  # each m once
    for m in values:
        label = f"m={m:g}"
        print(f"== {label}: training 784-{args.width}-{args.width}-10 for {args.epochs} epoch(s) "
              f"on {args.train_size} MNIST images ==", flush=True)
        model, (x, y) = train_mnist_bnn(m, width=args.width, epochs=args.epochs,
                                        train_size=args.train_size, learning_rate=args.lr,
                                        seed=args.seed, jit_compile=args.jit)
        evaluation = (x[: args.eval_size], y[: args.eval_size])
        tables = {}
        for layer in binarized_variables(model):
            tables[layer] = flip_importance(
                model, evaluation, layer, bins=args.bins, sample=args.sample, runs=args.runs,
                binning=args.binning, seed=args.seed,
            )
            print(tables[layer])
        fisher = fisher_correlation(model, (x, y), args.fisher_samples, seed=args.seed)
        for layer, value in fisher.items():
            print(f"corr(|W_h|, Fisher) {layer}: Spearman {value['spearman']:.3f}, "
                  f"Pearson {value['pearson']:.3f} ({value['n']} weights)")
        plots.plot_flip_importance(tables, os.path.join(output, f"flip_importance_m{m:g}.png"),
                                   title=f"loss increase of sign flips, {label}")
        snapshots.append(hidden_weights(model))
        summary[label] = {
            "flip_importance": {k: t.to_dict() for k, t in tables.items()},
            "fisher_correlation": fisher,
        }
    plots.plot_hidden_weights(snapshots, os.path.join(output, "hidden_weights.png"),
                              labels=[f"m={m:g}" for m in values])
    write_json(os.path.join(output, "analysis.json"), summary)
    print(f"Results and plots: {output}/")
    return 0
