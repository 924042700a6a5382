"""Time per training step of paper_mlp((1024, 1024)), batch 100: MetaplasticAdam vs Keras Adam.

Both optimizers train identical models in one process, interleaved (A B A B ...), so machine
noise hits both alike; the ratio of medians is the result. Writes
benchmarks/results/optimizer_overhead.json.

    .venv/bin/python benchmarks/optimizer_overhead.py [--repeats 7] [--steps 100] [--jit]
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_meta  # noqa: E402  (arranges legacy Keras)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from larq_meta import MetaplasticAdam  # noqa: E402


def build(optimizer, jit_compile):
    tf.keras.utils.set_random_seed(0)
    model = larq_meta.models.paper_mlp((1024, 1024))
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100, help="training steps per timing")
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--output", default=None, help="JSON path (default by --jit)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((100 * args.steps, 784), dtype=np.float32)
    y = rng.integers(0, 10, 100 * args.steps)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(100).cache().repeat()
    suffix = "_xla" if args.jit else ""
    args.output = args.output or f"benchmarks/results/optimizer_overhead{suffix}.json"
    runs = {
        "adam": build(tf.keras.optimizers.Adam(learning_rate=0.005), args.jit),
        "metaplastic_adam": build(MetaplasticAdam(m=1.35, learning_rate=0.005), args.jit),
    }
    steps = {}
    for name, model in runs.items():
        steps[name] = (model.make_train_function(), iter(dataset))
        for _ in range(20):  # warm up: tracing, allocation
            steps[name][0](steps[name][1])
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (train_step, iterator) in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                logs = train_step(iterator)
            float(logs["loss"])  # wait for the last step
            times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "benchmark": "optimizer_overhead",
        "model": "paper_mlp((1024, 1024)), batch 100, float32",
        "jit_compile": args.jit,
        "load_average": os.getloadavg(),
        "seconds_per_step_median": median,
        "seconds_per_step_all": times,
        "ratio_metaplastic_over_adam": median["metaplastic_adam"] / median["adam"],
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "tensorflow": tf.__version__,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"Adam {1000 * median['adam']:.2f} ms/step, MetaplasticAdam "
        f"{1000 * median['metaplastic_adam']:.2f} ms/step, ratio "
        f"{result['ratio_metaplastic_over_adam']:.3f} -> {args.output}"
    )


if __name__ == "__main__":
    main()
