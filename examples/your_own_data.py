"""
Title: Your own data, per-layer m and an m schedule
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Build a task sequence from arrays and `tf.data` pipelines; set m per layer or per step.
"""

"""
## Introduction

Nothing in larq-meta is specific to MNIST. A task sequence is a list of tasks, each with
training and test data given as `(x, y)` arrays or as `tf.data.Dataset`s of unbatched
`(x, y)` samples; `larq_meta.tasks.from_arrays` builds one. The model is any Keras model
with binarized (larq) layers; here the paper's MLP with the input shape of the data.

Two tasks stand in for your data: digits (MNIST) held as numpy arrays, then clothes
(Fashion-MNIST) coming from a `tf.data` pipeline with its own preprocessing. Then two ways
of setting `m` that the paper's experiments do not need:

- **per layer**: `m={"dense_1": 0.5, "*": 1.35}` keeps the first layer, which sees the
  changing inputs, more plastic than the others (`"*"` covers every other layer);
- **per step**: `m` as a `tf.keras.optimizers.schedules.LearningRateSchedule` of the
  optimizer's step count, here plain Adam (`m = 0`) while the first task is learned, and
  `m = 1.35` from the second task on, to protect what the first task taught.

Run time: about 2 minutes on 2 CPU cores (256-256 hidden units, 2 epochs per task, three
runs). `--smoke` (or `LARQ_META_SMOKE=1`): seconds, on slices of the data sets.
"""

"""
## Setup
"""

import argparse
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import tensorflow as tf

from larq_meta import MetaplasticAdam

parser = argparse.ArgumentParser(description="Task sequences from your own data.")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/your_own_data", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

hidden_units, epochs, batch_size, size = (256, 256), 2, 100, None
if smoke:
    hidden_units, epochs, size = (32, 32), 1, 2000
os.makedirs(args.output, exist_ok=True)

"""
## Data: arrays and a `tf.data` pipeline

Labels are integer class indices. Integer inputs are taken as 8-bit images and scaled to
[0, 1] when batched; float inputs pass unchanged, so a pipeline can do its own scaling.
A pipeline yields *unbatched* samples: the trainer batches and shuffles.
"""

(x_digits, y_digits), (x_digits_test, y_digits_test) = larq_meta.datasets.load_mnist()
(x_clothes, y_clothes), (x_clothes_test, y_clothes_test) = larq_meta.datasets.load_fashion_mnist()


def clothes_pipeline(x, y):
    """Your preprocessing: here, float images in [0, 1] with the contrast inverted."""
    dataset = tf.data.Dataset.from_tensor_slices((x[:size], y[:size].astype("int64")))
    return dataset.map(lambda image, label: (1.0 - tf.cast(image, tf.float32) / 255.0, label))


tasks = larq_meta.tasks.from_arrays(
    [
        (x_digits[:size], y_digits[:size], x_digits_test[:size], y_digits_test[:size]),
        (clothes_pipeline(x_clothes, y_clothes), clothes_pipeline(x_clothes_test, y_clothes_test)),
    ],
    names=["digits", "clothes"],
    scenario="domain",  # same ten outputs, new inputs; "task" or "class" for new labels
)

"""
## Three ways of setting m

`PiecewiseConstantDecay` is Keras' step-function schedule: `m = 0` for the steps of the
first task, then 1.35. The schedule reads the optimizer's step counter, which
`train_sequence` zeroes at each task boundary with the rest of the optimizer state (a fresh
Adam per task, as the paper's code); `reset_optimizer_per_task=False` keeps it counting.
"""

steps_first_task = epochs * larq_meta.tasks.steps_per_epoch(tasks[0].train, batch_size)
m_settings = {
    "m = 1.35": 1.35,
    "per layer": {"dense_1": 0.5, "*": 1.35},
    "schedule": tf.keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps_first_task], [0.0, 1.35]
    ),
}

results = {}
for label, m in m_settings.items():
    print(f"\n== {label} ==")
    tf.keras.utils.set_random_seed(1)
    model = larq_meta.models.paper_mlp(hidden_units, input_shape=(28, 28))
    model.compile(
        optimizer=MetaplasticAdam(0.005, m=m),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=not smoke,
    )
    results[label] = larq_meta.training.train_sequence(
        model, tasks, epochs_per_task=epochs, batch_size=batch_size, shuffle_seed=1,
        reset_optimizer_per_task=label != "schedule",
    )
    results[label].save(os.path.join(args.output, label.replace(" = ", "").replace(" ", "_")))
    print(results[label].table())

"""
## Results
"""

larq_meta.plots.plot_accuracy_matrix(results, os.path.join(args.output, "accuracy_matrix.png"))
print(f"\nResults and plot in {args.output}/")
