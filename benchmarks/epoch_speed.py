"""Seconds per training epoch of the 1024-1024 permuted-MNIST BNN, per compute configuration.

`paper_mlp((1024, 1024))` + `MetaplasticAdam(m=1.35, learning_rate=0.005)`, `model.fit` on the
package's `make_dataset` pipeline (stateless per-epoch shuffle + gather, uint8 -> float32),
60000 images, batch 100, 600 steps; evaluation excluded. An epoch is timed from Keras'
`on_epoch_begin` to `on_epoch_end`.

All configurations live in one process and are timed interleaved (A B C A B C ...), so machine
noise hits them alike; medians and ratios of medians are the result. The load average is
recorded around every round. With `--accuracy`, also trains float32 and bfloat16 models on a
short permuted-MNIST sequence (same seeds) and records final accuracies.

Writes benchmarks/results/epoch_speed.json.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/epoch_speed.py [--rounds 3] [--accuracy]
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
from larq_meta.tasks import make_dataset, permuted_mnist  # noqa: E402

#: name -> (paper_mlp compute_dtype, model.compile jit_compile, Keras dtype policy of the
#: model, model.compile steps_per_execution, optimizer)
CONFIGS = {
    "float32": ("float32", False, None, 1, "metaplastic"),
    "float32_jit": ("float32", True, None, 1, "metaplastic"),
    "float32_jit_spe50": ("float32", True, None, 50, "metaplastic"),
    "bfloat16_jit": ("bfloat16", True, None, 1, "metaplastic"),
    "bfloat16_jit_spe50": ("bfloat16", True, None, 50, "metaplastic"),
    # For the record: Keras' mixed_bfloat16 policy on the whole model (what does not pay).
    "keras_mixed_bfloat16_jit": ("float32", True, "mixed_bfloat16", 1, "metaplastic"),
    "keras_mixed_bfloat16": ("float32", False, "mixed_bfloat16", 1, "metaplastic"),
    # Bounds, not training: SGD with learning rate 0 keeps the forward and backward pass but
    # replaces the Adam/metaplastic update (several passes over weights and moments) by one
    # cheap pass, so these epochs show what a step costs without the optimizer's work.
    "float32_jit_sgd0": ("float32", True, None, 1, "sgd0"),
    "bfloat16_jit_sgd0": ("bfloat16", True, None, 1, "sgd0"),
}
CONFIG_FIELDS = (
    "compute_dtype", "jit_compile", "keras_policy", "steps_per_execution", "optimizer"
)
DEFAULT_CONFIGS = ("float32", "float32_jit", "bfloat16_jit", "float32_jit_spe50", "bfloat16_jit_spe50")
BATCH = 100


def build(config: str, seed: int = 0) -> tf.keras.Model:
    compute_dtype, jit, policy, steps_per_execution, optimizer = CONFIGS[config]
    tf.keras.utils.set_random_seed(seed)
    previous = tf.keras.mixed_precision.global_policy()
    if policy:
        tf.keras.mixed_precision.set_global_policy(policy)
    try:
        model = larq_meta.models.paper_mlp((1024, 1024), compute_dtype=compute_dtype)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    model.compile(
        optimizer=(
            MetaplasticAdam(m=1.35, learning_rate=0.005)
            if optimizer == "metaplastic"
            else tf.keras.optimizers.SGD(learning_rate=0.0)
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
        steps_per_execution=steps_per_execution,
    )
    return model


class EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def speed(configs, rounds: int, steps: int):
    task = permuted_mnist(num_tasks=1, seed=1)[0]
    dataset = make_dataset(task.train, BATCH, shuffle=True, seed=0, epochs=10_000)
    models = {}
    for name in configs:
        models[name] = build(name)
        start = time.perf_counter()
        models[name].fit(dataset, epochs=1, steps_per_epoch=50, verbose=0)  # trace + compile
        print(f"{name}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
    seconds = {name: [] for name in configs}
    loads = []
    for r in range(rounds):
        load_before = os.getloadavg()
        for name, model in models.items():
            timer = EpochTimer()
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
            seconds[name].append(timer.seconds * 600 / steps)
        loads.append({"before": load_before, "after": os.getloadavg()})
        print(
            f"round {r + 1}/{rounds} load {load_before[0]:.2f}->{os.getloadavg()[0]:.2f}: "
            + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
            flush=True,
        )
    median = {name: statistics.median(s) for name, s in seconds.items()}
    reference = "float32" if "float32" in median else next(iter(median))
    return {
        "seconds_per_epoch_median": median,
        "seconds_per_epoch_all": seconds,
        "speedup_over_float32": (
            {n: median[reference] / m for n, m in median.items()} if reference == "float32" else None
        ),
        "speedup_over_float32_jit": (
            {n: median["float32_jit"] / m for n, m in median.items()}
            if "float32_jit" in median else None
        ),
        "load_average_1_5_15": loads,
        "rounds": rounds,
        "steps_timed_per_epoch": steps,
    }


def accuracy(num_tasks: int, epochs: int, width: int):
    from larq_meta.training import train_sequence

    tasks = permuted_mnist(num_tasks=num_tasks, seed=1)
    results = {}
    for compute_dtype in ("float32", "bfloat16"):
        tf.keras.utils.set_random_seed(0)
        model = larq_meta.models.paper_mlp((width, width), compute_dtype=compute_dtype)
        model.compile(
            optimizer=MetaplasticAdam(m=1.35, learning_rate=0.005),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=True,
        )
        start = time.perf_counter()
        result = train_sequence(model, tasks, epochs_per_task=epochs, verbose=0, progress=False)
        results[compute_dtype] = {
            "final_accuracies": [float(a) for a in result.final_accuracies],
            "accuracy_matrix": result.accuracy_matrix.tolist(),
            "metrics": result.metrics(),
            "wall_seconds_incl_evaluation": time.perf_counter() - start,
        }
        print(compute_dtype, np.round(100 * result.final_accuracies, 2), flush=True)
    f32 = np.array(results["float32"]["final_accuracies"])
    b16 = np.array(results["bfloat16"]["final_accuracies"])
    results["max_abs_difference_points"] = float(100 * np.abs(f32 - b16).max())
    results["setup"] = (
        f"permuted MNIST, {num_tasks} tasks x {epochs} epoch(s), paper_mlp(({width}, {width})), "
        "MetaplasticAdam(m=1.35, lr=0.005), batch 100, jit_compile=True, same seeds"
    )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--steps", type=int, default=600, help="steps timed per epoch (600 = full)")
    parser.add_argument("--accuracy", action="store_true", help="also run the accuracy check")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--epochs-per-task", type=int, default=1)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--output", default="benchmarks/results/epoch_speed.json")
    args = parser.parse_args()

    result = {
        "benchmark": "epoch_speed",
        "model": "paper_mlp((1024, 1024)), MetaplasticAdam(m=1.35, lr=0.005) (SGD with lr 0 "
        "for the *_sgd0 bounds), batch 100, 600 steps/epoch, make_dataset pipeline, "
        "evaluation excluded",
        "configs": {n: dict(zip(CONFIG_FIELDS, CONFIGS[n])) for n in args.configs},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"{_cpu_name()}",
        "tensorflow": tf.__version__,
        "command": "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/epoch_speed.py "
        + " ".join(_argv()),
    }
    result.update(speed(args.configs, args.rounds, args.steps))
    if args.accuracy:
        result["accuracy"] = accuracy(args.tasks, args.epochs_per_task, args.width)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("seconds_per_epoch_median", "speedup_over_float32_jit")},
                     indent=2))


def _argv():
    import sys

    return sys.argv[1:]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
