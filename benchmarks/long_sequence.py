"""Long permuted-MNIST sequences (issue #18): where the paper's rule freezes, and the frontier.

Every configuration trains the paper's BNN (`compiled_paper_mlp((W, W))`, learning rate
0.005) on the same sequence through the same path: `train_sequence`'s task protocol by hand
(optimizer reset per task as in the reference, the task callbacks' `on_task_begin`, one
`model.fit` epoch, `on_task_end`; BatchNorm protocol `per_task`), with a cheaper
evaluation. The sequence is online-style: task k shows `--steps-per-task` batches of
`--batch-size` images drawn fresh from MNIST's 60000 training images (a different slice per
task, wrapping around), permuted by the k-th reference permutation, one epoch. Each new
task is tested right after it is learned, and every task seen so far every `--eval-every`
tasks and at the end, on the same `--test-size` test images (permuted per task), each
with its BatchNorm snapshot.

Configurations (`--configs`, read by `parse_config`): `m0` (Adam), `m<value>` (the paper's
rule), `ewc` (m = 0 plus `larq_meta.consolidation.EWC`, plain EWC: its sum over tasks is
stored in constant size), `relax<r>-b<b>-m<m>`
(`MetaplasticAdam(m=m, relaxation=r, relaxation_bound=b)`).

Per run it records the accuracies and, at the end of every task, the distribution of
the hidden weights `|W_h|` of the binarized kernels and the fraction whose damping factor
`1 - tanh²(m|W_h|)` is below 0.01 (at the run's own m, and at m = 1.35 for every run).

Resumable: every (configuration, seed) run is written to `--work-dir` when it ends and
skipped when it is there; `--summarize` only aggregates what is there. Two processes may
run disjoint `--configs` at the same time.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/long_sequence.py \
        --tasks 100 --steps-per-task 20 --width 128 --seeds 1 2 3 --configs m0 m1.35 ...
    .venv/bin/python benchmarks/long_sequence.py --summarize   # JSON + plots

Results and the commands used: docs/long-sequences.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import logging
import os
import platform
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "long_sequence.json")
DOCS = os.path.join(ROOT, "docs")
FROZEN_THRESHOLD = 0.01
REFERENCE_M = 1.35
#: |W_h| histogram edges (the last bin also counts everything above).
EDGES = np.linspace(0.0, 6.0, 31)

#: The EWC strength and Fisher sample count of the `ewc` configuration.
EWC_LAMBDA = 5000.0
EWC_SAMPLES = 200


def parse_config(name: str) -> dict:
    """`m0`, `m1.35`, `ewc`, `ewc<lambda>`, `relax<r>-b<b>-m<m>` -> the configuration."""
    if name == "ewc" or re.fullmatch(r"ewc[0-9.e+-]+", name):
        return {"m": 0.0, "ewc_lambda": EWC_LAMBDA if name == "ewc" else float(name[3:])}
    match = re.fullmatch(r"m([0-9.]+)", name)
    if match:
        return {"m": float(match.group(1))}
    match = re.fullmatch(r"relax([0-9.e-]+)-b([0-9.]+)-m([0-9.]+)", name)
    if match:
        return {
            "m": float(match.group(3)),
            "relaxation": float(match.group(1)),
            "relaxation_bound": float(match.group(2)),
        }
    raise ValueError(f"unknown configuration {name!r} (m<value>, ewc, relax<r>-b<b>-m<m>)")


def make_tasks(num_tasks: int, steps: int, batch_size: int, test_size: int, seed: int):
    """The online-style permuted-MNIST sequence (see the module docstring)."""
    from larq_meta.datasets import load_mnist
    from larq_meta.tasks import Task, TaskSequence, mnist_permutations

    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train = np.asarray(x_train).reshape(len(x_train), -1)
    x_test = np.asarray(x_test).reshape(len(x_test), -1)[:test_size]
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)[:test_size]
    per_task = steps * batch_size
    order = np.random.default_rng(seed).permutation(len(x_train))
    tasks = []
    for k, perm in enumerate(mnist_permutations(num_tasks, seed)):
        idx = order[np.arange(k * per_task, (k + 1) * per_task) % len(order)]
        tasks.append(
            Task(
                name=f"permuted_mnist_{k + 1}",
                train=(x_train[idx][:, perm], y_train[idx]),
                test=(x_test[:, perm], y_test),
            )
        )
    info = {"seed": seed, "num_tasks": num_tasks, "samples_per_task": per_task,
            "test_size": test_size}
    return TaskSequence(tuple(tasks), scenario="domain", name="permuted_mnist_online", info=info)


def _make_recorder(m: float):
    from larq_meta.callbacks import TaskCallback
    from larq_meta.hidden_weights import hidden_weights

    class HiddenWeightStats(TaskCallback):
        """At each task's end: |W_h| histogram, quantiles and frozen fractions."""

        def __init__(self):
            super().__init__()
            self.records: list[dict] = []

        def on_task_end(self, task_index, task=None, logs=None):
            weights = np.concatenate(
                [np.abs(w).ravel() for w in hidden_weights(self.model).values()]
            )
            counts, _ = np.histogram(np.minimum(weights, EDGES[-1]), EDGES)

            def frozen(m_value):
                if m_value == 0:
                    return 0.0
                damping = 1 - np.tanh(m_value * weights.astype(np.float64)) ** 2
                return float(np.mean(damping < FROZEN_THRESHOLD))

            self.records.append({
                "task": task_index,
                "histogram": (counts / len(weights)).round(6).tolist(),
                "quantiles": {str(q): float(np.quantile(weights, q / 100))
                              for q in (50, 90, 99)},
                "max": float(weights.max()),
                "frozen_own_m": frozen(m),
                "frozen_m1.35": frozen(REFERENCE_M),
            })

        def get_state(self):
            return {"records": self.records}

        def set_state(self, state):
            self.records = list(state["records"])

    return HiddenWeightStats()


def run_one(name: str, seed: int, args) -> dict:
    """Train one configuration on one seed's sequence; returns the run's record.

    The task protocol by hand, as `train_sequence` runs it (reset the optimizer, the task
    callbacks' `on_task_begin`, one `model.fit` epoch, `on_task_end`), with a cheaper
    evaluation: the new task right after it is learned, and every task seen so far every
    `--eval-every` tasks and at the end, each with its BatchNorm snapshot (`per_task`)."""
    import tensorflow as tf

    import larq_meta
    from larq_meta import MetaplasticAdam
    from larq_meta.batchnorm import using_batchnorm
    from larq_meta.callbacks import BatchNormSnapshots
    from larq_meta.consolidation import EWC
    from larq_meta.tasks import make_dataset, steps_per_epoch
    from larq_meta.training import reset_optimizer

    config = parse_config(name)
    tf.keras.utils.set_random_seed(seed)
    tasks = make_tasks(args.tasks, args.steps_per_task, args.batch_size, args.test_size, seed)
    model = larq_meta.models.compiled_paper_mlp((args.width, args.width), m=config["m"],
                                                learning_rate=args.learning_rate)
    if config.get("relaxation"):
        model.compile(
            optimizer=MetaplasticAdam(args.learning_rate, m=config["m"],
                                      relaxation=config["relaxation"],
                                      relaxation_bound=config["relaxation_bound"]),
            loss=model.loss, metrics=["accuracy"], jit_compile=True,
        )
    snapshots = BatchNormSnapshots()
    recorder = _make_recorder(config["m"])
    hooked = [snapshots, recorder]
    if config.get("ewc_lambda"):
        hooked.append(EWC(config["ewc_lambda"], EWC_SAMPLES, seed=seed))
    for callback in hooked:
        callback.set_model(model)
    predict = tf.function(lambda x: model(x, training=False))
    tests = [(tf.constant(task.test[0], tf.float32) / 255.0, np.asarray(task.test[1]))
             for task in tasks]

    def accuracy(j):
        with using_batchnorm(model, snapshots.snapshots[j]):
            return float(np.mean(np.argmax(predict(tests[j][0]).numpy(), -1) == tests[j][1]))

    started = time.perf_counter()
    just_learned, evaluations = [], []
    for k, task in enumerate(tasks):
        if k > 0:
            reset_optimizer(model.optimizer)
        for callback in hooked:
            callback.on_task_begin(k, task)
        train = make_dataset(task.train, args.batch_size, shuffle=True, seed=seed + 7919 * k)
        model.fit(train, epochs=1, steps_per_epoch=steps_per_epoch(task.train, args.batch_size),
                  callbacks=[c for c in hooked if c is not snapshots], verbose=0)
        for callback in hooked:
            callback.on_task_end(k, task)
        just_learned.append(accuracy(k))
        if (k + 1) % args.eval_every == 0 or k == len(tasks) - 1:
            evaluations.append({"after_task": k, "accuracies": [accuracy(j)
                                                                for j in range(k + 1)]})
    return {
        "config": name,
        "settings": config,
        "seed": seed,
        "seconds": time.perf_counter() - started,
        "final": evaluations[-1]["accuracies"],
        "just_learned": just_learned,
        "evaluations": evaluations,
        "hidden": recorder.records,
        "optimizer": tf.keras.optimizers.serialize(model.optimizer),
    }


def summarize_run(run: dict) -> dict:
    final, new = np.asarray(run["final"]), np.asarray(run["just_learned"])
    return {
        "all": float(final.mean()),
        "first10": float(final[:10].mean()),
        "last10": float(final[-10:].mean()),
        "new_task_mean": float(new.mean()),
        "new_task_last10": float(new[-10:].mean()),
    }


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard error over seeds of every summary number, per configuration."""
    by_config: dict[str, list[dict]] = {}
    for run in runs:
        by_config.setdefault(run["config"], []).append(run)
    table = {}
    for name, group in by_config.items():
        group.sort(key=lambda r: r["seed"])
        summaries = [summarize_run(r) for r in group]
        entry = {"settings": group[0]["settings"], "seeds": [r["seed"] for r in group],
                 "seconds_per_run": float(np.mean([r["seconds"] for r in group]))}
        for key in summaries[0]:
            values = np.array([s[key] for s in summaries])
            se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
            entry[key] = {"mean": float(values.mean()), "se": se,
                          "per_seed": values.round(4).tolist()}
        entry["frozen_own_m_end"] = float(np.mean([r["hidden"][-1]["frozen_own_m"]
                                                   for r in group]))
        table[name] = entry
    return table


def plots(runs: list[dict], table: dict, prefix: str) -> list[str]:
    from larq_meta._utils import pyplot, save_figure

    plt = pyplot()
    names = sorted(table, key=lambda n: (table[n]["settings"].get("ewc_lambda", 0) > 0,
                                          "relaxation" in table[n]["settings"],
                                          table[n]["settings"]["m"]))
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    paths = []

    def per_task(key_fn):
        out = {}
        for name in names:
            group = [r for r in runs if r["config"] == name]
            out[name] = np.mean([key_fn(r) for r in group], axis=0)
        return out

    # 1. |W_h| quantiles over the sequence (median solid, 99th percentile dashed).
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for q, style in (("50", "-"), ("99", "--")):
        curves = per_task(lambda r: [h["quantiles"][q] for h in r["hidden"]])
        for name, curve in curves.items():
            ax.plot(np.arange(1, len(curve) + 1), curve, style, color=colors[name],
                    label=name if q == "50" else None)
    ax.set(xlabel="task", ylabel="|W_h| (median —, 99th pct --)",
           title="Hidden-weight magnitude over the sequence")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save_figure(fig, f"{prefix}_hidden.png"))

    # 1b. |W_h| histograms at a few tasks, for the paper rule's configurations.
    paper = [n for n in names if "relaxation" not in table[n]["settings"]
             and not table[n]["settings"].get("ewc_lambda")]
    fig, axes = plt.subplots(1, len(paper), figsize=(3.0 * len(paper), 2.8), sharey=True,
                             squeeze=False)
    num_tasks = len(runs[0]["hidden"])
    marks = sorted({0, num_tasks // 10, num_tasks // 2, num_tasks - 1})
    centers = (EDGES[:-1] + EDGES[1:]) / 2
    for ax, name in zip(axes[0], paper):
        hist = per_task(lambda r: [h["histogram"] for h in r["hidden"]])[name]
        for k in marks:
            ax.plot(centers, hist[k], label=f"after task {k + 1}")
        ax.set(title=name, xlabel="|W_h|", yscale="log")
    axes[0][0].set_ylabel("fraction of weights")
    axes[0][-1].legend(fontsize=7)
    paths.append(save_figure(fig, f"{prefix}_hidden_histograms.png"))

    # 2. Frozen fraction (damping < 0.01 at the run's m; m = 1.35 for m = 0 and EWC).
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    curves = per_task(lambda r: [h["frozen_own_m"] if r["settings"]["m"] else h["frozen_m1.35"]
                                 for h in r["hidden"]])
    for name, curve in curves.items():
        own = table[name]["settings"]["m"] > 0
        ax.plot(np.arange(1, len(curve) + 1), curve, "-" if own else ":", color=colors[name],
                label=name if own else f"{name} (at m=1.35)")
    ax.set(xlabel="task", ylabel=f"fraction with 1-tanh²(m|W_h|) < {FROZEN_THRESHOLD}",
           title="Frozen binarized weights")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save_figure(fig, f"{prefix}_frozen.png"))

    # 3. New-task accuracy right after learning it (moving average over 5 tasks).
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, curve in per_task(lambda r: r["just_learned"]).items():
        smooth = np.convolve(curve, np.ones(5) / 5, mode="valid")
        ax.plot(np.arange(3, len(smooth) + 3), smooth, color=colors[name], label=name)
    ax.set(xlabel="task", ylabel="accuracy right after learning it",
           title="Plasticity: new-task accuracy (5-task moving mean)")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save_figure(fig, f"{prefix}_new_task.png"))

    # 4. The frontier.
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for name in names:
        e = table[name]
        ax.errorbar(e["all"]["mean"], e["last10"]["mean"], xerr=e["all"]["se"] or 0,
                    yerr=e["last10"]["se"] or 0, fmt="o", color=colors[name], label=name)
    ax.set(xlabel="mean accuracy over all tasks (end)", ylabel="mean over the last 10 tasks",
           title="Frontier (mean ± s.e. over seeds)")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, f"{prefix}_frontier.png"))
    return paths


def _columns(records: list[dict]) -> dict:
    """Per-task hidden-weight records as columns: median, p90, p99, max, frozen fractions."""
    return {
        "median": [h["quantiles"]["50"] for h in records],
        "p90": [h["quantiles"]["90"] for h in records],
        "p99": [h["quantiles"]["99"] for h in records],
        "max": [h["max"] for h in records],
        "frozen_own_m": [h["frozen_own_m"] for h in records],
        "frozen_m1.35": [h["frozen_m1.35"] for h in records],
    }


def _rounded(value, digits=4):
    """Floats rounded (the results JSON stays small)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--steps-per-task", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=10,
                        help="test every seen task every k tasks (and at the end)")
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--configs", nargs="+", default=[])
    parser.add_argument("--threads", type=int, default=1, help="TF threads per pool")
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "build", "long_sequence"))
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--plots", default=os.path.join(DOCS, "long_sequence"),
                        help="prefix of the PNG files")
    parser.add_argument("--summarize", action="store_true", help="only aggregate + plot")
    parser.add_argument("--plot-configs", nargs="+", default=None,
                        help="configurations to plot (default: all; the JSON has all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in args.configs:
        parse_config(name)
    scale = (f"T{args.tasks}_s{args.steps_per_task}_b{args.batch_size}_w{args.width}"
             f"_t{args.test_size}_e{args.eval_every}")
    work = os.path.join(args.work_dir, scale)
    os.makedirs(work, exist_ok=True)

    import larq_meta  # noqa: F401  (arranges legacy Keras first)
    from larq_meta._utils import write_atomic

    if not args.summarize:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        for seed in args.seeds:  # seed-major: complete seeds first
            for name in args.configs:
                path = os.path.join(work, f"{name}_seed{seed}.json")
                if os.path.exists(path):
                    logging.info("skip %s seed %d (done)", name, seed)
                    continue
                logging.info("start %s seed %d (load %.1f)", name, seed, os.getloadavg()[0])
                run = run_one(name, seed, args)
                write_atomic(path, json.dumps(run))
                s = summarize_run(run)
                logging.info("done %s seed %d in %.0f s: all %.3f first10 %.3f last10 %.3f "
                             "new-task %.3f frozen %.3f", name, seed, run["seconds"], s["all"],
                             s["first10"], s["last10"], s["new_task_mean"],
                             run["hidden"][-1]["frozen_own_m"])
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*.json")))]
    if not runs:
        return 0
    table = aggregate(runs)
    shown = args.plot_configs or list(table)
    paths = plots([r for r in runs if r["config"] in shown],
                  {k: v for k, v in table.items() if k in shown}, args.plots)
    out = {
        "benchmark": "long_sequence (issue #18)",
        "command": "benchmarks/long_sequence.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (
                ("tasks", args.tasks), ("steps_per_task", args.steps_per_task),
                ("batch_size", args.batch_size), ("width", args.width),
                ("test_size", args.test_size), ("eval_every", args.eval_every))),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "protocol": {
            "tasks": args.tasks, "steps_per_task": args.steps_per_task,
            "batch_size": args.batch_size, "epochs_per_task": 1,
            "hidden_units": [args.width, args.width], "learning_rate": args.learning_rate,
            "test_size": args.test_size, "evaluate": f"new task after it is learned; all seen tasks every {args.eval_every} "
                        "tasks and at the end (per-task BatchNorm snapshots)",
            "bn_protocol": "per_task", "reset_optimizer_per_task": True,
            "ewc": {"lambda": EWC_LAMBDA, "fisher_samples": EWC_SAMPLES,
                    "kind": "plain EWC (sum over all tasks, constant-size form)"},
            "frozen_threshold": FROZEN_THRESHOLD, "histogram_edges": EDGES.tolist(),
        },
        "configurations": table,
        # Per run, the hidden-weight statistics as columns (one value per task).
        "runs": [{k: r[k] for k in ("config", "seed", "seconds", "final", "just_learned")}
                 | {"hidden": _columns(r["hidden"])} for r in runs],
        "plots": [os.path.relpath(p, ROOT) for p in paths],
    }
    write_atomic(args.output, json.dumps(_rounded(out)))
    for name, e in sorted(table.items(), key=lambda kv: -kv[1]["all"]["mean"]):
        logging.info("%-22s all %.3f±%.3f first10 %.3f last10 %.3f±%.3f new %.3f (n=%d)", name,
                     e["all"]["mean"], e["all"]["se"] or 0, e["first10"]["mean"],
                     e["last10"]["mean"], e["last10"]["se"] or 0, e["new_task_mean"]["mean"],
                     len(e["seeds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
