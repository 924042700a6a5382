"""Training steps per second of the 1024-1024 BNN at 1 and 2 replicas / workers.

Each configuration runs in its own process(es), built with `synchronized_bn=True` (except
`single`), global batch 100, real MNIST, `MetaplasticAdam(m=1.35)`:

- `single`: one process, no strategy, plain BatchNorm (the reference);
- `single_jit`: the same with XLA (`jit_compile=True`, the command line's default), for
  scale: XLA:CPU has no collective operations (TensorFlow b/194942685), so every
  configuration with replicas runs without XLA on a CPU;
- `mirrored_1`: `MirroredStrategy` on one CPU device (the cost of the strategy machinery);
- `mirrored_2`: `MirroredStrategy` on the CPU split into 2 logical devices;
- `multi_worker_2`: `MultiWorkerMirroredStrategy`, 2 worker processes on 127.0.0.1.

One warm-up epoch of `--steps` steps, then `--steps` timed steps (evaluation excluded).

On a 2-core machine a speed-up is not the point: the replicas share the same two cores that
one process already uses (TensorFlow's intra-op threads), so more replicas can only add the
cost of splitting the batch and synchronizing (BatchNorm statistics: 3 all-reduces per layer
and step; gradients: one all-reduce per step). What this measures is that overhead; the
correctness is in `tests/test_distribute.py`. With devices that are not shared (GPUs, or
machines) the same code spreads the batch.

    .venv/bin/python benchmarks/distribute_speed.py --steps 100

Writes benchmarks/results/distribute_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time

CONFIGS = ("single", "single_jit", "mirrored_1", "mirrored_2", "multi_worker_2")
TIMEOUT = 900


def _measure(config: str, steps: int) -> dict:
    """Run inside a child process: build the strategy first (before any op), then time."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import larq_meta  # noqa: F401  (legacy Keras first)
    from larq_meta import distribute

    if config.startswith("single"):
        strategy = distribute.make_strategy("none")
    elif config.startswith("mirrored"):
        strategy = distribute.make_strategy("mirrored", cpu_replicas=int(config[-1]))
    else:
        strategy = distribute.make_strategy("multi-worker")
    import tensorflow as tf

    from larq_meta.models import compiled_paper_mlp
    from larq_meta.tasks import make_dataset, permuted_mnist

    task = permuted_mnist(num_tasks=1, seed=1, train_size=100 * steps)[0]
    tf.keras.utils.set_random_seed(1)
    with strategy.scope():
        model = compiled_paper_mlp(
            (1024, 1024), m=1.35, synchronized_bn=not config.startswith("single"),
            jit_compile=config == "single_jit",
        )
    data = make_dataset(task.train, 100, shuffle=True, seed=1, epochs=2)
    if distribute.num_workers(strategy) > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
    times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    history = model.fit(data, epochs=2, steps_per_epoch=steps, callbacks=[Timer()], verbose=0)
    return {
        "replicas": distribute.num_replicas(strategy),
        "workers": distribute.num_workers(strategy),
        "strategy": type(strategy).__name__,
        "warmup_seconds": round(times[0], 3),
        "timed_seconds": round(times[1], 3),
        "steps_per_second": round(steps / times[1], 2),
        "final_loss": round(float(history.history["loss"][-1]), 4),
        "chief": distribute.is_chief(strategy),
    }


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_config(config: str, steps: int) -> dict:
    """Start the process(es) of one configuration, bounded by TIMEOUT; the chief's result."""
    command = [sys.executable, __file__, "--child", config, "--steps", str(steps)]
    environments = [dict(os.environ, CUDA_VISIBLE_DEVICES="")]
    if config == "multi_worker_2":
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        environments = [
            dict(os.environ, CUDA_VISIBLE_DEVICES="",
                 TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            for i in range(2)
        ]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, start_new_session=True)
        for env in environments
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs if out.strip()]
    if len(results) != len(processes):
        raise RuntimeError(f"{config}: a process failed ({[p.returncode for p in processes]}).")
    return next(r for r in results if r["chief"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps (and warm-up steps)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--output", default="benchmarks/results/distribute_speed.json")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.steps)))
        return
    import tensorflow as tf

    result = {
        "benchmark": "distribute_speed",
        "model": "paper_mlp((1024, 1024)), synchronized BatchNorm (plain in 'single'), "
                 "MetaplasticAdam(m=1.35, lr=0.005), global batch 100, real MNIST",
        "jit_compile": "only in single_jit (XLA:CPU has no collectives)",
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
                   f"CPU only, shared with other jobs (load average {os.getloadavg()[0]:.1f} "
                   "at start)",
        "tensorflow": tf.__version__,
        "command": "python benchmarks/distribute_speed.py " + " ".join(sys.argv[1:]),
        "note": "2 cores: replicas share the cores one process uses; this measures the "
                "overhead of splitting the batch and synchronizing, not a speed-up.",
        "configs": {},
    }
    for config in args.configs:
        result["configs"][config] = _run_config(config, args.steps)
        print(config, result["configs"][config], flush=True)
    base = result["configs"].get("single", {}).get("steps_per_second")
    if base:
        result["relative_to_single"] = {
            name: round(r["steps_per_second"] / base, 3) for name, r in result["configs"].items()
        }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(args.output + ".tmp", args.output)
    print(json.dumps(result.get("relative_to_single", {})))


if __name__ == "__main__":
    main()
