"""
Title: Permuted MNIST, step by step
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Continual learning in plain Keras: one `model.fit` per task with `MetaplasticAdam`.
"""

"""
## Introduction

A binarized neural network (BNN) trained on one task after another forgets the earlier
tasks. Laborieux et al. (2021) make the hidden weights behind the binary weights
*metaplastic*: the larger a hidden weight `|W_h|`, the harder it is to push it towards a
sign flip. This example reproduces their Fig. 2 (permuted MNIST) at CPU scale with nothing
but `model.compile` and `model.fit`:

1. load MNIST and build the permuted tasks;
2. build the paper's BNN and compile it with `MetaplasticAdam`, once per task;
3. call `model.fit` once per task, with two callbacks of the package: `TaskEvaluation`
   (tests every task after each epoch) and `BatchNormSnapshots` (keeps each task's
   BatchNorm state);
4. read the accuracy matrix and the metrics, and plot the curves.

It trains twice: `m = 0` (exactly Adam: the early tasks are forgotten) and `m = 1.35`.
`larq_meta.training.train_sequence` wraps this very loop and adds checkpoints and resume
(see `train_sequence_and_resume.py`).

Run time: about 3 minutes on 2 CPU cores (3 tasks, 256-256 hidden units, 5 epochs per
task). `--paper`: the paper's 6 tasks, 4096-4096 units, 40 epochs per task (many hours on
a CPU). `--smoke` (or `LARQ_META_SMOKE=1`): seconds, on a slice of MNIST.
"""

"""
## Setup
"""

import argparse
import json
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from larq_meta import MetaplasticAdam
from larq_meta.callbacks import BatchNormSnapshots, TaskEvaluation

parser = argparse.ArgumentParser(description="Permuted MNIST with model.fit per task.")
parser.add_argument("--paper", action="store_true", help="6 tasks, 4096-4096, 40 epochs/task")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/permuted_mnist", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

num_tasks, hidden_units, epochs, train_size, test_size = 3, (256, 256), 5, None, None
epsilon, weight_decay = 1e-7, 0.0  # Keras' Adam defaults
if args.paper:
    num_tasks, hidden_units, epochs = 6, (4096, 4096), 40
    epsilon, weight_decay = 1e-8, 1e-7  # the reference implementation's (PyTorch) Adam
if smoke:
    num_tasks, hidden_units, epochs, train_size, test_size = 2, (32, 32), 1, 2000, 1000
learning_rate, batch_size = 0.005, 100
os.makedirs(args.output, exist_ok=True)

"""
## The tasks

Each task is MNIST with its 784 pixels shuffled by a fixed random permutation: the same
ten digits, a new input distribution. A `TaskSequence` is a list of `Task`s, each holding
`(x, y)` training and test arrays (`uint8` images, scaled to [0, 1] when batched).
"""

tasks = larq_meta.tasks.permuted_mnist(
    num_tasks=num_tasks, seed=1, train_size=train_size, test_size=test_size
)
for task in tasks:
    print(f"{task.name}: {len(task.x_train)} training and {len(task.x_test)} test images")

"""
## Train one model on the tasks, one after another

The paper's BNN (`paper_mlp`): binarized dense layers without bias, each followed by
BatchNorm, sign activations, logits out. `MetaplasticAdam(learning_rate, m=m)` damps only
the updates of binarized kernels that move a hidden weight towards zero, by
`1 - tanh²(m·|W_h|)`; BatchNorm parameters get plain Adam.

The loop is the whole mechanism. Before each task we compile with a fresh optimizer (the
reference code builds a new Adam per task), call `on_task_begin(k, task)` on the task
callbacks, `fit`, then `on_task_end(k, task)`: that is when `BatchNormSnapshots` saves the
BatchNorm state and `TaskEvaluation` fills row `k` of its accuracy matrix. During `fit`,
`TaskEvaluation` tests every task at each epoch end and writes `acc_task_<j>` into the
epoch's `logs`, so Keras' `History` (and `CSVLogger`, `TensorBoard`) record them.

BatchNorm statistics are not protected by metaplasticity, so the paper evaluates task `k`
with the BatchNorm state saved after task `k` (`bn_protocol="per_task"`); see
`mnist_fashion.py` for the other protocols.
"""


def train(m):
    tf.keras.utils.set_random_seed(1)  # same initial weights and data order for every m
    model = larq_meta.models.paper_mlp(hidden_units)
    snapshots = BatchNormSnapshots()
    evaluation = TaskEvaluation(tasks, bn_protocol="per_task", bn_snapshots=snapshots)
    histories = []
    for k, task in enumerate(tasks):
        model.compile(
            optimizer=MetaplasticAdam(
                learning_rate, m=m, epsilon=epsilon, weight_decay=weight_decay
            ),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=not smoke,  # XLA: about 2x faster, but compiling takes seconds
        )
        evaluation.on_task_begin(k, task)
        snapshots.on_task_begin(k, task)
        history = model.fit(
            larq_meta.tasks.make_dataset(task.train, batch_size, shuffle=True, seed=k),
            epochs=epochs,
            callbacks=[evaluation, snapshots],
            verbose=2,
        )
        evaluation.on_task_end(k, task)
        snapshots.on_task_end(k, task)
        histories.append(history.history)
    return evaluation.accuracy_matrix, histories


runs = {}
for m in (0.0, 1.35):
    print(f"\n== m = {m} ==")
    runs[f"m = {m}"] = train(m)

"""
## The accuracy matrix and the metrics

`R[i, j]` is the test accuracy on task `j` after training task `i`. Forgetting shows in
the columns: how much `R[i, j]` falls below `R[j, j]` as later tasks are learned.
`larq_meta.metrics` computes the usual summaries (average accuracy at the end, backward
transfer, forgetting). Our default run ended at 57 % average accuracy with `m = 0` and 75 %
with `m = 1.35`; with 40 epochs per task (6 tasks, 1024 units) `m = 1.35` keeps every task
(92.9 %, backward transfer -0.1 points; see the Results page): the hidden weights need
epochs to grow.
"""

summary = {}
for label, (matrix, _) in runs.items():
    metrics = larq_meta.metrics.summarize(matrix)
    summary[label] = {"accuracy_matrix": matrix.tolist(), **metrics}
    print(f"\n{label}: accuracy (%), row i = after task i, column j = on task j")
    print(np.array2string(100 * matrix, precision=1, suppress_small=True))
    print(
        f"average accuracy {100 * metrics['average_accuracy']:.1f}%, "
        f"forgetting {100 * metrics['forgetting']:.1f} points"
    )
with open(os.path.join(args.output, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)

"""
## Plot the curves

The `History` of each `fit` holds `acc_task_<j>` per epoch; joined task after task they
give the paper's Fig. 2 curves.
"""

fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.8), sharey=True)
for ax, (label, (_, histories)) in zip(axes, runs.items()):
    for j in range(num_tasks):
        curve = np.concatenate([h[f"acc_task_{j + 1}"] for h in histories])
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, marker=".", label=f"task {j + 1}")
    for boundary in range(1, num_tasks):
        ax.axvline(boundary * epochs + 0.5, color="grey", ls="--", lw=0.8)
    ax.set(title=label, xlabel="epoch (task boundaries dashed)", ylim=(0, 100))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("test accuracy (%)")
axes[-1].legend(loc="center left")
fig.savefig(os.path.join(args.output, "task_accuracies.png"), dpi=120, bbox_inches="tight")
print(f"\nResults and plot in {args.output}/")
