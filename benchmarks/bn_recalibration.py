"""A finished, checkpointed `larq-meta mnist-fashion` run under every BatchNorm protocol,
and with exact (recalibrated) BatchNorm statistics.

Reads the checkpoint that `--checkpoint` left in `<run>/<method>_m<m>/checkpoint` (model
weights after the last task and the per-task BatchNorm snapshots) and tests both tasks:

- `per_task`, `batch_stats`, `shared`: the three protocols (`larq_meta.batchnorm`);
- `per_task_recalibrated`: task k's gamma and beta, with moving statistics replaced by the
  exact inference-mode statistics of task k's training inputs under the final weights
  (`recalibrate_batchnorm`). For the last task this is what `--recalibrate-bn` gives; for
  earlier tasks it needs their training inputs (no labels) once more.

    .venv/bin/python benchmarks/bn_recalibration.py /tmp/mf4096/bnn_m1.5/checkpoint --width 4096
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_meta  # noqa: E402,F401  (legacy Keras first)
import tensorflow as tf  # noqa: E402

from larq_meta.batchnorm import (  # noqa: E402
    BN_PROTOCOLS,
    recalibrate_batchnorm,
    restore_batchnorm,
    snapshot_batchnorm,
)
from larq_meta.callbacks import TaskEvaluation  # noqa: E402
from larq_meta.models import paper_mlp  # noqa: E402
from larq_meta.tasks import mnist_fashion  # noqa: E402
from larq_meta.checkpoint import read_sequence_state  # noqa: E402


def accuracies(model, tasks, protocol: str, snapshots=()) -> list[float]:
    evaluation = TaskEvaluation(tasks, bn_protocol=protocol, eval_batch_size=1000)
    evaluation.set_model(model)
    evaluation.bn_snapshots.snapshots = list(snapshots)
    return [round(100 * a, 2) for a in evaluation.evaluate()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--width", type=int, required=True, help="hidden width of the run")
    parser.add_argument("--order", choices=("mnist_first", "fashion_first"), default="mnist_first")
    parser.add_argument("--output", help="append the result to this JSON file")
    args = parser.parse_args()

    state = read_sequence_state(args.checkpoint_dir)
    if state is None:
        raise SystemExit(f"No train_sequence checkpoint in {args.checkpoint_dir!r}.")
    model = paper_mlp((args.width, args.width))
    path = os.path.join(args.checkpoint_dir, state["checkpoint"])
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    tasks = mnist_fashion(order=args.order)
    # the trainer's task callbacks, in order: TaskEvaluation, BatchNormSnapshots, yours, history
    snapshots = state["callbacks"][1]["snapshots"]
    result = {
        "checkpoint": path,
        "task": state["task"],
        "epochs_done": state["epochs_done"],
        "width": args.width,
        "task_names": tasks.names,
        "settings": state["settings"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    for protocol in BN_PROTOCOLS:
        result[protocol] = accuracies(model, tasks, protocol, snapshots)
    live = snapshot_batchnorm(model)
    recalibrated = []
    for k, task in enumerate(tasks):
        restore_batchnorm(model, snapshots[k] if k < len(snapshots) else live)
        recalibrate_batchnorm(model, task.train)
        recalibrated.extend(accuracies(model, [task], "shared"))  # this task only
    restore_batchnorm(model, live)
    result["per_task_recalibrated"] = recalibrated
    print(json.dumps({k: result[k] for k in (*BN_PROTOCOLS, "per_task_recalibrated")}))
    if args.output:
        runs = []
        if os.path.exists(args.output):
            with open(args.output) as f:
                runs = json.load(f)["runs"]
        runs = [r for r in runs if r["checkpoint"] != path] + [result]
        with open(args.output, "w") as f:
            json.dump({"benchmark": "bn_recalibration", "command":
                       "python benchmarks/bn_recalibration.py <checkpoint dir> --width <w> "
                       "--output " + args.output, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
