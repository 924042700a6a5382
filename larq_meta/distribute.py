"""Task sequences on several devices or machines with `tf.distribute`.

A sequence runs under a strategy when its model is **built and compiled inside
`strategy.scope()`**; nothing else changes. `larq_meta.training.train_sequence` reads the
strategy from the model (`model.distribute_strategy`) and then:

- keeps the batch size global: `batch_size=100` is 100 samples per step over all replicas
  (50 per replica with 2), the same samples in the same order as on one device;
- normalizes with the global batch's statistics when the model has synchronized BatchNorm
  (`synchronized_bn=True` on every builder of `larq_meta.models`), so the replicas train the
  single-device model, up to float summation order;
- evaluates every task, computes EWC's Fisher and recalibrates BatchNorm once over the full
  test or training set, with the model's (identical) weights, in every worker; no replica
  sees only its shard;
- writes results and checkpoints on the chief only: the other workers of a
  `MultiWorkerMirroredStrategy` write theirs into a temporary folder that is deleted (they
  must still save, since saving reads variables that are reduced across workers);
- resumes, in every worker, from the chief's checkpoint: after a worker is killed, restart
  all workers with the same command; with several machines the checkpoint folder must be
  on storage all of them see.

On CPU devices, a model with several replicas must be compiled with `jit_compile=False`
(`xla_supported`): XLA:CPU has no collective operations.

!!! example
    ```python
    strategy = larq_meta.distribute.make_strategy("mirrored", cpu_replicas=2)  # first
    with strategy.scope():  # no XLA on CPU replicas: XLA:CPU has no collectives
        model = larq_meta.models.compiled_paper_mlp(
            (1024, 1024), synchronized_bn=True, jit_compile=False
        )
    result = larq_meta.training.train_sequence(model, tasks, batch_size=100)
    if larq_meta.distribute.is_chief(strategy):
        result.save("runs/out")
    ```

See `docs/how-to/distribute.md` for launching workers (`TF_CONFIG`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from larq_meta._utils import check_int

__all__ = [
    "STRATEGIES",
    "is_chief",
    "make_strategy",
    "model_strategy",
    "num_replicas",
    "num_workers",
    "remove_worker_directory",
    "same_on_all_workers",
    "split_cpu",
    "worker_directory",
    "xla_supported",
]

#: The strategy names of `make_strategy` (and of the command line's `--strategy`).
STRATEGIES = ("none", "mirrored", "multi-worker")


def split_cpu(replicas: int) -> list[str]:
    """Split the first CPU into `replicas` logical devices (for `MirroredStrategy` tests and
    benchmarks on a machine without accelerators); returns their names.

    TensorFlow fixes its devices at the first operation: call this before any op runs. A
    second call with the same number is a no-op.

    # Raises
        RuntimeError: TensorFlow already initialized its devices differently.
    """
    replicas = check_int(replicas, "replicas")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == replicas:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {replicas} logical devices: TensorFlow has already "
            "initialized its devices. Call `split_cpu` (or `make_strategy(..., cpu_replicas=)`) "
            f"before any TensorFlow operation ({error})."
        ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str = "none", cpu_replicas: int | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    - `"none"`: the default strategy (one device, no distribution).
    - `"mirrored"`: `MirroredStrategy` over the local GPUs, or, without GPUs, over the CPU
      split into `cpu_replicas` logical devices (`split_cpu`; without `cpu_replicas`, one).
    - `"multi-worker"`: `MultiWorkerMirroredStrategy`; reads the cluster and this process's
      role from the `TF_CONFIG` environment variable, as TensorFlow documents it.

    Create it at the start of the program, before any TensorFlow operation.

    # Raises
        ValueError: an unknown name, `cpu_replicas` with another strategy than "mirrored",
            or "multi-worker" without a valid `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {name!r}.")
    if cpu_replicas is not None:
        check_int(cpu_replicas, "cpu_replicas")
        if name != "mirrored":
            raise ValueError(f"`cpu_replicas` applies to the 'mirrored' strategy, not {name!r}.")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if cpu_replicas is not None:
            devices = split_cpu(cpu_replicas)
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [tf.config.list_logical_devices("CPU")[0].name]
        return tf.distribute.MirroredStrategy(devices)
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError(
            "The 'multi-worker' strategy needs the TF_CONFIG environment variable: "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
            '"index": 0}} (see docs/how-to/distribute.md).'
        )
    try:
        parsed = json.loads(config)
        parsed["cluster"], parsed["task"]["type"], parsed["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({error!r}); it needs "
            '"cluster" and "task": {"type", "index"}.'
        ) from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def xla_supported(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether a training step compiled with XLA (`jit_compile=True`) can run under
    `strategy`: always with one replica; with several, only on GPUs or TPUs, since XLA:CPU
    has no collective operations (TensorFlow b/194942685)."""
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync <= 1:
        return True
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def model_strategy(model: tf.keras.Model) -> tf.distribute.Strategy:
    """The strategy `model` was built under (the default strategy if none)."""
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def num_replicas(strategy: tf.distribute.Strategy | None = None) -> int:
    """Replicas in sync over all workers (1 without a strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


def _task(strategy) -> tuple[str | None, int | None, dict]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    return resolver.task_type, resolver.task_id, spec


def num_workers(strategy: tf.distribute.Strategy | None = None) -> int:
    """Processes of the cluster that train (chief and workers; 1 without a cluster)."""
    _, _, spec = _task(strategy or tf.distribute.get_strategy())
    return max(1, len(spec.get("chief", ())) + len(spec.get("worker", ())))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes results and checkpoints: always without a multi-worker
    strategy; else the `chief` task, or worker 0 of a cluster without a chief."""
    strategy = strategy or tf.distribute.get_strategy()
    task_type, task_id, spec = _task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def worker_directory(directory: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Where this process writes what belongs in `directory`: `directory` itself on the
    chief, a new temporary folder (under `TMPDIR`) on the other workers; delete it with
    `remove_worker_directory(path, directory)` when done (a no-op on the chief)."""
    if is_chief(strategy):
        return directory
    _, task_id, _ = _task(strategy or tf.distribute.get_strategy())
    return tempfile.mkdtemp(prefix=f"larq-meta-worker{task_id}-")


def remove_worker_directory(path: str, directory: str) -> None:
    """Delete `path` if it is a worker's temporary folder (not `directory`)."""
    if os.path.abspath(path) != os.path.abspath(directory):
        shutil.rmtree(path, ignore_errors=True)


def same_on_all_workers(value: int, strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether every worker holds the same integer `value` (an all-reduce of the sum of the
    values and of their squares: equal values have zero variance; every worker must call
    it). True without several workers."""
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers(strategy) <= 1:
        return True
    with strategy.scope():
        local = tf.constant([1, value, value * value], tf.int64)

        def total(x):
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, x)

        reduced = strategy.experimental_local_results(strategy.run(total, args=(local,)))[0]
    # Every replica of a worker adds the worker's value once per replica: count, sum, sum².
    count, first, second = (int(v) for v in reduced.numpy())
    return count * second == first * first
