"""
Title: Split MNIST: the task and the class scenario
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Five two-digit tasks, evaluated with and without the task identity.
"""

"""
## Introduction

Split MNIST cuts MNIST into five tasks of two digits each (0/1, 2/3, 4/5, 6/7, 8/9). Labels
keep their digit values, so the network has ten outputs throughout. What changes between
the continual-learning *scenarios* (van de Ven & Tolias) is the test:

- **task-incremental** (`"task"`): the task identity is given, so task `(2, 3)` is tested
  by choosing the larger of outputs 2 and 3;
- **class-incremental** (`"class"`): no identity, the arg-max over all ten outputs, so the
  network must also tell the tasks apart, which no amount of weight protection alone gives.

Training is the same in both scenarios (a 10-way softmax on the current task's digits). So
each network is trained once, and a second `TaskEvaluation`, built on the class-scenario
sequence, tests it the other way at the same moments. One more thing a test may not know in
the class scenario: which BatchNorm snapshot to use (picking task `k`'s snapshot would give
the task identity away), so it tests with the live BatchNorm state (`"shared"`).

Run time: about 1-2 minutes on 2 CPU cores (256-256 hidden units, 2 epochs per task, m = 0
and m = 1.35). `--paper`: the larger setting of `larq-meta split-mnist --paper`, 1024-1024
units and 20 epochs per task (about an hour). `--smoke` (or `LARQ_META_SMOKE=1`): seconds,
on a slice of MNIST.
"""

"""
## Setup
"""

import argparse
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from larq_meta.callbacks import TaskEvaluation

parser = argparse.ArgumentParser(description="Split MNIST, task and class scenario.")
parser.add_argument("--paper", action="store_true", help="1024-1024, 20 epochs per task")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/split_mnist", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

hidden_units, epochs, train_size, test_size = (256, 256), 2, None, None
pairs = larq_meta.tasks.SPLIT_MNIST_PAIRS  # ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
if args.paper:
    hidden_units, epochs = (1024, 1024), 20
if smoke:
    hidden_units, epochs, train_size, test_size = (32, 32), 1, 3000, 1000
    pairs = pairs[:3]
os.makedirs(args.output, exist_ok=True)

"""
## The tasks, twice

The same data, as two sequences: in the task scenario each task carries its `classes`.
"""

sizes = {"pairs": pairs, "train_size": train_size, "test_size": test_size}
task_scenario = larq_meta.tasks.split_mnist("task", **sizes)
class_scenario = larq_meta.tasks.split_mnist("class", **sizes)
for task in task_scenario:
    print(f"{task.name}: classes {task.classes}, {len(task.x_train)} training images")

"""
## Train, and test both ways
"""

matrices = {}
for m in (0.0, 1.35):
    print(f"\n== m = {m} ==")
    tf.keras.utils.set_random_seed(1)
    model = larq_meta.models.compiled_paper_mlp(hidden_units, m=m, jit_compile=not smoke)
    class_evaluation = TaskEvaluation(class_scenario, bn_protocol="shared", log_prefix="class/")
    result = larq_meta.training.train_sequence(
        model, task_scenario, epochs_per_task=epochs, shuffle_seed=1,
        callbacks=[class_evaluation],
    )
    result.save(os.path.join(args.output, f"m{m:g}"))
    matrices[f"m = {m}, task scenario"] = result.accuracy_matrix
    matrices[f"m = {m}, class scenario"] = class_evaluation.accuracy_matrix

"""
## Results

Average accuracy over the tasks after the last one, and forgetting. In the class scenario
the last task's two outputs win almost every test, whatever `m`: protecting weights does not
teach the network to compare digits it never saw together. In the task scenario the
protection shows only once the hidden weights have had time to grow: compare with
`--paper` (20 epochs per task).
"""

print(f"\nAverage accuracy after the {len(pairs)} tasks (%):")
for label, matrix in matrices.items():
    summary = larq_meta.metrics.summarize(matrix)
    print(f"  {label:<26} {100 * summary['average_accuracy']:6.2f}"
          f"   (forgetting {100 * summary['forgetting']:5.2f} points)")

fig, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 3.6))
for ax, (label, matrix) in zip(axes, matrices.items()):
    ax.imshow(100 * matrix, vmin=0, vmax=100, cmap="viridis")
    for (i, j), value in np.ndenumerate(100 * matrix):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="w" if value < 60 else "k")
    ticks = range(len(matrix))
    ax.set(title=label, xlabel="tested on task", ylabel="after task", xticks=ticks,
           yticks=ticks, xticklabels=[t + 1 for t in ticks], yticklabels=[t + 1 for t in ticks])
fig.savefig(os.path.join(args.output, "accuracy_matrices.png"), dpi=120, bbox_inches="tight")
print(f"\nResults and plot in {args.output}/")
