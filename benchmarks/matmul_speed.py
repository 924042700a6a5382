"""Where the bfloat16 option's speed-up is capped: matrix-product throughput on this CPU.

Times the products of one training step of the 1024-1024 permuted-MNIST BNN (batch 100) in
float32 and with bfloat16 operands, both under XLA (`jit_compile=True`, what training uses)
and in plain TensorFlow (oneDNN), and derives the best epoch-time ratio bfloat16 could give:
the first layer's forward product takes real-valued pixels and stays float32 (pixels / 255
are not exact in bfloat16), every other product can use bfloat16.

Timing is CPU time of the process (`time.process_time`) per product, so a busy machine
inflates it less than wall time; configurations are interleaved, medians of 5 rounds.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/matmul_speed.py

writes benchmarks/results/matmul_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import larq_meta  # noqa: F401 - first: tf.keras is tf-keras
import numpy as np
import tensorflow as tf

from larq_meta.models import _dot_f32

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "matmul_speed.json")

# (rows, contraction, cols) of each product of one step, 784-1024-1024-10, batch 100;
# "float32 only": the first layer's forward product (real-valued input).
PRODUCTS = {
    "layer 1 forward x @ W1": ((100, 784, 1024), True),
    "layer 1 dW1 = x^T @ dy": ((784, 100, 1024), False),
    "layer 2 forward": ((100, 1024, 1024), False),
    "layer 2 dW2": ((1024, 100, 1024), False),
    "layer 2 dx": ((100, 1024, 1024), False),
}


def _throughput(fn, flops: float, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        out = fn()
    out.numpy()
    return flops * repeats / (time.process_time() - start) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)

    shape = (100, 1024, 1024)  # the binary layer's forward product
    rng = np.random.default_rng(0)
    a32 = tf.constant(rng.standard_normal(shape[:2]), tf.float32)
    b32 = tf.constant(rng.standard_normal(shape[1:]), tf.float32)
    a16, b16 = tf.cast(a32, tf.bfloat16), tf.cast(b32, tf.bfloat16)
    configs = {
        "xla_float32": tf.function(lambda: tf.matmul(a32, b32), jit_compile=True),
        "xla_bfloat16_f32_accumulate": tf.function(lambda: _dot_f32(a16, b16, 1, 0), jit_compile=True),
        "tf_float32": tf.function(lambda: tf.matmul(a32, b32)),
        "tf_bfloat16_bf16_output": tf.function(lambda: tf.matmul(a16, b16)),
    }
    flops = 2.0 * np.prod(shape)
    for fn in configs.values():
        fn()
    rates = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, fn in configs.items():
            rates[name].append(_throughput(fn, flops, args.repeats))
    gflops = {name: float(np.median(values)) for name, values in rates.items()}

    # Best case for a whole step's products under XLA: float32-only products at the float32
    # rate, the others at the bfloat16 rate.
    total = sum(2.0 * np.prod(s) for s, _ in PRODUCTS.values())
    f32_only = sum(2.0 * np.prod(s) for s, only in PRODUCTS.values() if only)
    speedup = gflops["xla_bfloat16_f32_accumulate"] / gflops["xla_float32"]
    products_ratio = total / (f32_only + (total - f32_only) / speedup)
    document = {
        "command": "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/matmul_speed.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "shape_rows_contraction_cols": shape,
        "gflops_per_cpu_second": gflops,
        "all_rounds": rates,
        "xla_bfloat16_over_float32": speedup,
        "step_products": {k: list(s) for k, (s, _) in PRODUCTS.items()},
        "float32_only_share_of_step_flops": f32_only / total,
        "best_step_products_ratio_bfloat16_over_float32": products_ratio,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(document, f, indent=2)
    for name, value in gflops.items():
        print(f"{name:30s} {value:7.1f} GFLOP/s per CPU-second")
    print(f"XLA bfloat16 / float32: {speedup:.2f}x; float32-only share of a step's products "
          f"{f32_only / total:.0%}; best ratio for a step's products {products_ratio:.2f}x")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
