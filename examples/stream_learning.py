"""
Title: Stream learning: one data set, seen in pieces
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Learn Fashion-MNIST from disjoint subsets seen one after another (the paper's Fig. 4a).
"""

"""
## Introduction

In stream learning the data never changes distribution: one data set arrives in pieces,
each seen for a while and never again (Laborieux et al. 2021, Fig. 4a). A network that
forgets ends up knowing little more than the last piece; a metaplastic one accumulates
what every piece taught it and approaches a network trained on the whole data set.

Three things differ from the task sequences of the other examples:

- every subset is tested on the **full** test set, so there is one curve to look at;
- there is no task boundary to signal, so the optimizer state (Adam's moments, the step
  count) carries on from subset to subset (`reset_optimizer_per_task=False`) and BatchNorm
  is tested with its live state (`bn_protocol="shared"`);
- the paper uses a stronger `m = 2.5`.

As a reference, the same network is trained on the whole training set for the same number
of passes over the data: the best a stream learner can hope for.

Run time: about 2 minutes on 2 CPU cores (30 subsets of 2000 images, 3 epochs each, 256-256
hidden units). `--paper`: 60 subsets of 1000 images, 20 epochs each, 1024-1024 units.
`--smoke` (or `LARQ_META_SMOKE=1`): seconds, on a slice of Fashion-MNIST.
"""

"""
## Setup
"""

import argparse
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import tensorflow as tf

parser = argparse.ArgumentParser(description="Stream learning on Fashion-MNIST.")
parser.add_argument("--paper", action="store_true", help="60 subsets, 20 epochs, 1024-1024")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/stream_learning", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

num_subsets, epochs, hidden_units, size = 30, 3, (256, 256), None
if args.paper:
    num_subsets, epochs, hidden_units = 60, 20, (1024, 1024)
if smoke:
    num_subsets, epochs, hidden_units, size = 3, 1, (32, 32), 1500
os.makedirs(args.output, exist_ok=True)

"""
## The stream

`stream(data, num_subsets)` shuffles the training set and cuts it into equal, disjoint
subsets; each becomes a task whose test set is the whole test set. It keeps the images'
shape, 28x28: the model's `input_shape` says so (its first layer flattens).
"""

(x_train, y_train), (x_test, y_test) = larq_meta.datasets.load_fashion_mnist()
data = (x_train[:size], y_train[:size]), (x_test[:size], y_test[:size])
tasks = larq_meta.tasks.stream(data, num_subsets=num_subsets, seed=1, name="fashion_stream")
print(f"{len(tasks)} subsets of {tasks.info['subset_size']} images")

"""
## Learn the stream, with and without metaplasticity

`evaluate_every=epochs` tests once per subset, at its end.
"""

results = {}
for m in (0.0, 2.5):
    print(f"\n== m = {m} ==")
    tf.keras.utils.set_random_seed(1)
    model = larq_meta.models.compiled_paper_mlp(
        hidden_units, m=m, input_shape=(28, 28), jit_compile=not smoke
    )
    result = larq_meta.training.train_sequence(
        model, tasks, epochs_per_task=epochs, bn_protocol="shared",
        reset_optimizer_per_task=False, evaluate_every=epochs, shuffle_seed=1,
    )
    results[f"m = {m}"] = result
    result.save(os.path.join(args.output, f"m{m:g}"))

"""
## The reference: the whole data set at once

One `model.fit` on all subsets together, for as many passes over the data as the stream
made (`epochs`), with plain Adam.
"""

tf.keras.utils.set_random_seed(1)
model = larq_meta.models.compiled_paper_mlp(
    hidden_units, m=0.0, input_shape=(28, 28), jit_compile=not smoke
)
x_all, y_all = data[0]
model.fit(
    larq_meta.tasks.make_dataset((x_all, y_all), 100, shuffle=True, seed=1),
    epochs=epochs, verbose=2,
)
_, whole = model.evaluate(larq_meta.tasks.make_dataset(data[1], 1000), verbose=0)

"""
## Results

Accuracy on the full test set after the last subset. The metaplastic stream learner ends
closer to the whole-data-set reference than Adam's (at the paper's scale, `--paper`:
86.7 % with m = 2.5, 84.8 % with m = 0, 86.2 % for the whole data set; Results page).
"""

print("\nTest accuracy after the whole stream (%):")
for label, result in results.items():
    print(f"  {'stream, ' + label:<22} {100 * result.final_accuracies[0]:6.2f}")
print(f"  {'whole data set, Adam':<22} {100 * whole:6.2f}")
larq_meta.plots.plot_task_accuracies(
    results, os.path.join(args.output, "stream_accuracy.png"),
    title=f"Fashion-MNIST in {num_subsets} subsets (whole data set at once: {100 * whole:.1f}%)",
)
print(f"Results and plot in {args.output}/")
