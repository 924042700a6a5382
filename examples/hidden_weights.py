"""
Title: What hidden weights know: flip importance and the quadratic toy problem
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Why |W_h| signals importance (the paper's Fig. 5), on a toy problem and a BNN.
"""

"""
## Introduction

In a BNN a synapse acts only through its binary weight `sign(W_h)`, yet its hidden weight
`W_h` carries more: while the loss keeps confirming a sign, the hidden weight keeps growing
away from zero. So a large `|W_h|` should mark a synapse whose flip would cost a lot, and
that is what metaplasticity protects. The paper checks this twice (Laborieux et al. 2021,
Fig. 5), and so does this example:

1. **The quadratic toy problem** (Fig. 5a,b): hidden weights descend a quadratic loss taken
   at their signs. The cost of flipping each binary weight is known exactly, so its
   correlation with `|W_h|` can be measured (`larq_meta.quadratic`, numpy only).
2. **A trained BNN** (Fig. 5c-e): after `model.fit` on MNIST, flip the signs of weights bin
   by bin of `|W_h|` and measure how much the loss rises (`flip_importance`), and compare
   `|W_h|` with EWC's Fisher importance (`fisher_correlation`).

The toy problem uses the reference notebook's settings (d = 2 and d = 500). Run time: about
2 minutes on 2 CPU cores (two 512-512 BNNs, m = 0 and m = 1.35, 2 epochs on 20000 MNIST
images). `--smoke` (or `LARQ_META_SMOKE=1`): seconds.
"""

"""
## Setup
"""

import argparse
import json
import os

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import tensorflow as tf

from larq_meta.hidden_weights import fisher_correlation, flip_importance, hidden_weights

parser = argparse.ArgumentParser(description="Hidden-weight importance and the quadratic toy.")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/hidden_weights", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

toy_dimension, hidden_units, epochs, train_size, fisher_samples = 500, (512, 512), 2, 20000, 2000
if smoke:
    toy_dimension, hidden_units, epochs, train_size, fisher_samples = 50, (32, 32), 1, 2000, 200
os.makedirs(args.output, exist_ok=True)
summary = {}

"""
## 1. The quadratic toy problem

`quadratic_toy(d)` draws `L(W) = 1/2 (W - W*)ᵀ H (W - W*)`, runs gradient descent on the
hidden weights with the gradient taken at their signs, and returns the trajectory, the
binary loss over the steps and the exact flip cost of every synapse. With d = 2 the figure
shows the trajectory over the loss landscape (Fig. 5a); with d = 500, flip cost against
`|W_h|` (Fig. 5b).
"""

for d in (2, toy_dimension):
    toy = larq_meta.quadratic.quadratic_toy(d=d, seed=1)
    larq_meta.plots.plot_quadratic_toy(toy, os.path.join(args.output, f"quadratic_toy_d{d}.png"))
    summary[f"quadratic_toy_d{d}"] = toy.to_dict()
    print(f"quadratic toy, d = {d}: binary loss {toy.loss[0]:.2f} at the start, "
          f"{toy.loss[-1]:.2f} after {toy.steps} steps")
rho = toy.correlations["flip_cost"]["spearman"]
print(f"d = {toy_dimension}: Spearman correlation of |W_h| with the flip cost: {rho:.2f}")

"""
## 2. A BNN trained with `model.fit`

One task, so no task callbacks: compile, fit. Two networks, Adam (`m = 0`) and metaplastic
(`m = 1.35`), from the same initial weights.
"""

(x_train, y_train), _ = larq_meta.datasets.load_mnist()
x = x_train[:train_size].reshape(-1, 784)  # uint8; `make_dataset` scales batches to [0, 1]
y = y_train[:train_size]
models = {}
for m in (0.0, 1.35):
    tf.keras.utils.set_random_seed(1)
    model = larq_meta.models.compiled_paper_mlp(hidden_units, m=m, jit_compile=not smoke)
    model.fit(larq_meta.tasks.make_dataset((x, y), 100, shuffle=True, seed=1),
              epochs=epochs, verbose=2)
    models[f"m = {m}"] = model

"""
## Flip importance

For each of 10 bins of `|W_h|` of the second layer (equal counts), `flip_importance`
negates the hidden weights of a random fifth of the bin (which flips their binary
weights), measures the loss increase on the training data, restores the weights, and
repeats 3 times. Bins of larger `|W_h|` should cost more; in our default run the loss
increase grew about fourfold from the smallest to the largest bin, for both networks.
"""

tables = {}
for label, model in models.items():
    tables[label] = flip_importance(
        model, (x, y), "dense_2", bins=10, sample=hidden_units[0] * hidden_units[1] // 50, runs=3,
        eval_samples=min(train_size, 10000),
    )
    print(f"\n{label}\n{tables[label]}")
    summary[f"flip_importance {label}"] = tables[label].to_dict()
larq_meta.plots.plot_flip_importance(tables, os.path.join(args.output, "flip_importance.png"))

"""
## Hidden weights and the Fisher

After one short task the two histograms are almost the same: the damping
`1 - tanh²(m·|W_h|)` is about 0.9 or more for `|W_h|` < 0.25, where nearly all weights
are here; it acts once hidden weights have grown over more epochs and tasks. So `|W_h|` is an importance signal
before metaplasticity uses it. `fisher_correlation` compares `|W_h|` with the diagonal
empirical Fisher that EWC would use to rank the same weights (a weak positive rank
correlation in our default run).
"""

larq_meta.plots.plot_hidden_weights(
    [hidden_weights(model) for model in models.values()],
    os.path.join(args.output, "hidden_weights.png"),
    labels=list(models),
)
for label, model in models.items():
    correlations = fisher_correlation(model, (x, y), fisher_samples)
    summary[f"fisher_correlation {label}"] = correlations
    print(f"{label}: Spearman correlation of |W_h| with the Fisher, all layers: "
          f"{correlations['all']['spearman']:.2f}")

with open(os.path.join(args.output, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=float)
print(f"\nFigures and summary.json in {args.output}/")
