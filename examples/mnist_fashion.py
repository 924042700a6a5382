"""
Title: MNIST, then Fashion-MNIST
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Two very different tasks in a row (the paper's Fig. 1a), and what BatchNorm does.
"""

"""
## Introduction

The paper's first experiment (Laborieux et al. 2021, Fig. 1a) trains a BNN on MNIST and
then on Fashion-MNIST, two data sets that share nothing but their image size. Digit `k`
and clothing class `k` share output unit `k`. With `m = 0` (Adam) learning Fashion-MNIST
erases MNIST; with `m = 1.5` the network keeps both (fully with the paper's training
length, partly in the few minutes of the default run).

The example also shows why every result of the package names its **BatchNorm protocol**.
Metaplasticity protects the binarized weights, not BatchNorm's real-valued state (scale,
shift, moving mean and variance), which adapts to Fashion-MNIST. The paper therefore tests
each task with the BatchNorm state saved at the end of that task (`"per_task"`). A second
`TaskEvaluation` with `bn_protocol="shared"` tests with the live state at the same moments,
so the two protocols can be compared on the same training run.

Run time: about 3 minutes on 2 CPU cores (256-256 hidden units, 10 epochs per task, two
runs). `--paper`: 4096-4096 units, 50 epochs per task, exact BatchNorm statistics (hours on
a CPU). `--smoke` (or `LARQ_META_SMOKE=1`): seconds, on slices of the data sets.
"""

"""
## Setup
"""

import argparse
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import tensorflow as tf

from larq_meta.callbacks import TaskEvaluation

parser = argparse.ArgumentParser(description="MNIST then Fashion-MNIST, m = 0 vs m = 1.5.")
parser.add_argument("--paper", action="store_true", help="4096-4096, 50 epochs per task")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/mnist_fashion", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

hidden_units, epochs, train_size, test_size = (256, 256), 10, None, None
epsilon, weight_decay, recalibrate_bn = 1e-7, 0.0, False
if args.paper:
    hidden_units, epochs = (4096, 4096), 50
    epsilon, weight_decay = 1e-8, 1e-7  # the reference implementation's Adam
    # Keras' moving BatchNorm averages drift from the exact statistics of a 4096-unit BNN
    # trained this long: replace them by exact ones before each evaluation.
    recalibrate_bn = True
if smoke:
    hidden_units, epochs, train_size, test_size = (32, 32), 1, 2000, 1000
os.makedirs(args.output, exist_ok=True)

"""
## The two tasks

`mnist_fashion(order="mnist_first")` gives a two-task `TaskSequence` (the paper's
Supplementary Fig. 6 uses `"fashion_first"` too).
"""

tasks = larq_meta.tasks.mnist_fashion(
    order="mnist_first", train_size=train_size, test_size=test_size
)
print("tasks:", tasks.names)

"""
## Train with two BatchNorm protocols watching

`train_sequence` evaluates with the protocol it is given (`"per_task"`, the paper's);
an extra `TaskEvaluation` passed as a callback adds the `"shared"` view, its logs prefixed
with `shared/`. The third protocol, `"batch_stats"` (the reference code's), normalizes each
test batch with its own statistics.
"""

results, shared = {}, {}
for m in (0.0, 1.5):
    print(f"\n== m = {m} ==")
    tf.keras.utils.set_random_seed(1)
    model = larq_meta.models.compiled_paper_mlp(
        hidden_units, m=m, epsilon=epsilon, weight_decay=weight_decay, jit_compile=not smoke
    )
    shared_evaluation = TaskEvaluation(tasks, bn_protocol="shared", log_prefix="shared/")
    label = f"m = {m}"
    results[label] = larq_meta.training.train_sequence(
        model, tasks, epochs_per_task=epochs, bn_protocol="per_task",
        recalibrate_bn=recalibrate_bn, shuffle_seed=1, callbacks=[shared_evaluation],
    )
    shared[label] = shared_evaluation.accuracy_matrix
    results[label].save(os.path.join(args.output, f"m{m:g}"))
    print(results[label].table())

"""
## Results

After both tasks (last row of the accuracy matrix): Adam's network has lost MNIST (about
13 %), the metaplastic one keeps part of it. How much depends on how long the hidden
weights had to grow: about 40 % after 10 epochs per task, 96.7 % after the paper's 50 (at
1024 units; see the Results page). Under `"shared"`, MNIST is tested with the BatchNorm
state tuned to Fashion-MNIST, which costs the metaplastic network part of what it kept:
the binary weights remember MNIST, the BatchNorm statistics do not.
"""

print("\nFinal test accuracy (%)        MNIST   Fashion-MNIST")
for label, result in results.items():
    for protocol, final in (("per_task", result.final_accuracies), ("shared", shared[label][-1])):
        print(f"{label:<8} BN {protocol:<12} {100 * final[0]:8.2f} {100 * final[1]:15.2f}")

larq_meta.plots.plot_task_accuracies(
    results, os.path.join(args.output, "task_accuracies.png"), title=" -> ".join(tasks.names)
)
larq_meta.plots.plot_accuracy_matrix(results, os.path.join(args.output, "accuracy_matrix.png"))
print(f"\nResults and plots in {args.output}/")
