"""
Title: A task sequence in three lines, and resuming a long run
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: `train_sequence` runs the per-task `model.fit` loop; checkpoints make it resumable.
"""

"""
## Introduction

`permuted_mnist.py` writes the continual-learning loop by hand. `train_sequence` is that
loop (a `model.fit` per task, the task callbacks' `on_task_begin` / `on_task_end`, every
task tested after each epoch, each task's BatchNorm state kept) plus what a long run needs:
epochs numbered over the whole sequence, a CSV of every epoch, and checkpoints after every
epoch from which an interrupted run resumes exactly.

This example trains permuted MNIST with `m = 1.35` once without interruption, then again
with a simulated crash in the middle of the second task, and resumes the crashed run from
its checkpoint in a fresh model: with `deterministic=True` both end with the same numbers.

Run time: about 2 minutes on 2 CPU cores (3 tasks, 256-256 hidden units, 3 epochs per
task, two runs). `--paper`: 6 tasks, 4096-4096, 40 epochs per task (the run you would want
to resume). `--smoke` (or `LARQ_META_SMOKE=1`): seconds, on a slice of MNIST.
"""

"""
## Setup
"""

import argparse
import os
import shutil

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser(description="train_sequence, checkpoints and resume.")
parser.add_argument("--paper", action="store_true", help="6 tasks, 4096-4096, 40 epochs/task")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/train_sequence_and_resume")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

num_tasks, hidden_units, epochs, train_size, test_size = 3, (256, 256), 3, None, None
optimizer_settings = {"m": 1.35, "epsilon": 1e-7, "weight_decay": 0.0}
if args.paper:
    num_tasks, hidden_units, epochs = 6, (4096, 4096), 40
    optimizer_settings.update(epsilon=1e-8, weight_decay=1e-7)  # the reference's Adam
if smoke:
    num_tasks, hidden_units, epochs, train_size, test_size = 2, (32, 32), 2, 2000, 1000
os.makedirs(args.output, exist_ok=True)

tasks = larq_meta.tasks.permuted_mnist(
    num_tasks=num_tasks, seed=1, train_size=train_size, test_size=test_size
)


def build_model():
    """The paper's BNN compiled with `MetaplasticAdam` (see `compiled_paper_mlp`)."""
    tf.keras.utils.set_random_seed(1)
    return larq_meta.models.compiled_paper_mlp(
        hidden_units, **optimizer_settings, jit_compile=not smoke
    )


"""
## The sequence in three lines

`train_sequence` returns a `SequenceResult`: the accuracy matrix, every evaluation, each
epoch's logs, the BatchNorm snapshots, and the settings. `deterministic=True` turns on
TensorFlow's op determinism (slower), so that two runs with the same seeds give the same
numbers; the shuffle seed fixes each epoch's data order.
"""

model = build_model()
result = larq_meta.training.train_sequence(
    model, tasks, epochs_per_task=epochs, shuffle_seed=1, deterministic=True,
    epochs_csv=os.path.join(args.output, "epochs.csv"),
)
print(result.table())
result.save(os.path.join(args.output, "uninterrupted"))  # results.json, CSV files
larq_meta.plots.plot_task_accuracies(result, os.path.join(args.output, "task_accuracies.png"))
larq_meta.plots.plot_accuracy_matrix(result, os.path.join(args.output, "accuracy_matrix.png"))

"""
## A run that crashes

With `checkpoint_dir`, the run is saved after every epoch: the model and its optimizer
(hidden weights, Adam moments, step count), the position in the sequence, and the state of
every task callback (accuracy matrix, BatchNorm snapshots, ...). A Keras callback that
raises stands in for a power cut, in the middle of the second task. The checkpoint folder
is emptied first: a folder that holds a checkpoint of the same run would be resumed.
"""


class Crash(Exception):
    pass


class CrashAt(tf.keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):  # epochs count over the whole sequence
        if epoch == self.epoch:
            raise Crash(f"simulated crash at the start of epoch {epoch + 1}")


checkpoint_dir = os.path.join(args.output, "checkpoint")
shutil.rmtree(checkpoint_dir, ignore_errors=True)
try:
    larq_meta.training.train_sequence(
        build_model(), tasks, epochs_per_task=epochs, shuffle_seed=1, deterministic=True,
        checkpoint_dir=checkpoint_dir, callbacks=[CrashAt(epochs + 1)], progress=False,
    )
except Crash as crash:
    print(f"\n{crash}; the checkpoint holds the epochs before it.")

"""
## Resume

A new process would rebuild the same model and call `train_sequence` with the same
arguments and `checkpoint_dir`: it finds the checkpoint, checks that it belongs to the same
run (other settings are refused, listing them), restores everything and continues at the
epoch where the crash happened. The weights the new model was built with are replaced by
the checkpoint's. From the command line, `larq-meta permuted-mnist --checkpoint` does the
same: run the same command again.
"""

tf.keras.backend.clear_session()
trained = []  # the epochs this process trains (numbered over the sequence)
resumed = larq_meta.training.train_sequence(
    build_model(), tasks, epochs_per_task=epochs, shuffle_seed=1, deterministic=True,
    checkpoint_dir=checkpoint_dir, progress=False,
    callbacks=[tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, _: trained.append(e))],
)
resumed.save(os.path.join(args.output, "resumed"))
same = np.array_equal(resumed.accuracy_matrix, result.accuracy_matrix)
print(f"\nThe resumed run trained epochs {[e + 1 for e in trained]} of {num_tasks * epochs}.")
print(resumed.table())
print(f"\nSame accuracy matrix as the uninterrupted run: {same}")
print(f"Results and plots in {args.output}/")
