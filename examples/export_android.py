"""
Title: Export to Android with Larq Compute Engine
Author: larq-meta developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Train a BNN on a task sequence, export one task's network with `to_lce`, check parity.
"""

"""
## Introduction

A BNN is worth binarizing when it runs on binary kernels. Larq Compute Engine (LCE)
converts a Keras/Larq model to a `.tflite` flatbuffer whose binarized layers run as LCE's
binary operators (`LceBconv2d`) on ARM phones. `larq_meta.export.to_lce` does the
conversion and checks what lands on the phone:

- binarized `QuantDense` layers are rewritten as equivalent 1x1 binary convolutions, which
  LCE turns into `LceBconv2d`;
- with `task=k` and the per-task BatchNorm snapshots, it exports the network exactly as it
  is evaluated on task `k` (the live model is left as it was);
- the parity check runs the flatbuffer in LCE's interpreter and compares it with Keras on
  real test images (argmax agreement, largest logit difference, both accuracies); a file
  that fails is not written.

This example trains the paper's BNN on two permuted-MNIST tasks, exports the network for
task 1, writes `model.tflite`, the stock float TFLite conversion `model_float.tflite` for
comparison, and `export_report.json`, and explains how to benchmark both on a phone.

Run time: about 1 minute on 2 CPU cores (256-256 hidden units, 2 epochs per task).
`--smoke` (or `LARQ_META_SMOKE=1`): seconds, on a slice of MNIST.
"""

"""
## Setup
"""

import argparse
import json
import os
import time

import larq_meta  # first: it makes `tf.keras` the legacy Keras (tf-keras) that larq needs

import numpy as np
import tensorflow as tf

from larq_meta.export import lce_interpreter, to_lce

parser = argparse.ArgumentParser(description="Train, export to LCE, check parity.")
parser.add_argument("--smoke", action="store_true", help="seconds (also LARQ_META_SMOKE=1)")
parser.add_argument("--output", default="runs/examples/export_android", help="output folder")
args = parser.parse_args()
smoke = args.smoke or os.environ.get("LARQ_META_SMOKE") == "1"

hidden_units, epochs, train_size, test_size = (256, 256), 2, None, None
if smoke:
    hidden_units, epochs, train_size, test_size = (32, 32), 1, 2000, 500
os.makedirs(args.output, exist_ok=True)

"""
## Train
"""

tasks = larq_meta.tasks.permuted_mnist(
    num_tasks=2, seed=1, train_size=train_size, test_size=test_size
)
tf.keras.utils.set_random_seed(1)
model = larq_meta.models.compiled_paper_mlp(hidden_units, m=1.35, jit_compile=not smoke)
result = larq_meta.training.train_sequence(model, tasks, epochs_per_task=epochs, shuffle_seed=1)
print(result.table())

"""
## Export task 1's network, with the parity check on its test images

`result.bn_snapshots[k]` is the BatchNorm state saved after task `k` (the API counts tasks
from 0, so task 1 is `task=0`). The model takes
float images in [0, 1] (the trainer scales the `uint8` arrays when batching), so the parity
data is scaled the same way. The accuracies in the report are task 1's after both tasks
(the accuracy matrix's bottom-left entry, on these images): lower than right after task 1
when the network forgot part of it, and the same in Keras and LCE.
"""

task = tasks[0]
x_parity = (task.x_test[:1000] / 255.0).astype("float32")
y_parity = task.y_test[:1000]
report = to_lce(
    model,
    os.path.join(args.output, "model.tflite"),
    task=0,
    bn_snapshots=result.bn_snapshots,
    parity_data=(x_parity, y_parity),
)
print(report)  # operators, sizes, binary layers, parity
with open(os.path.join(args.output, "model_float.tflite"), "wb") as f:
    f.write(report.float_flatbuffer)  # the stock TFLite conversion, the size/speed baseline
with open(os.path.join(args.output, "export_report.json"), "w") as f:
    json.dump(report.to_dict(), f, indent=2, default=str)

"""
## A latency number on this machine, and why it is not the phone's

LCE's optimized binary kernels are written for ARM (ARM64 phones, Raspberry Pi): on an x86
computer its interpreter runs portable fallback code, so the time below only tells that the
file runs. Measure on the phone.
"""

interpreter = lce_interpreter(report.flatbuffer)
start = time.perf_counter()
interpreter.predict(x_parity[:200])  # batch size 1, one image after the other
milliseconds = 1000 * (time.perf_counter() - start) / 200
print(f"\nx86, LCE interpreter, 1 thread: {milliseconds:.3f} ms per image (not a phone number)")

"""
## On the phone

1. Get LCE's `lce_benchmark_model` for Android ARM64, of the same LCE version as the
   converter (0.16): from the larq/compute-engine GitHub releases, or built with
   `bazel build -c opt --config=android_arm64
   //larq_compute_engine/tflite/benchmark:lce_benchmark_model` (LCE's Android guide).
2. With USB debugging on and `adb devices` listing the phone, push the tool and both files:
   `adb push lce_benchmark_model /data/local/tmp/`, `adb shell chmod +x
   /data/local/tmp/lce_benchmark_model`, `adb push model.tflite model_float.tflite
   /data/local/tmp/`.
3. Benchmark: `adb shell /data/local/tmp/lce_benchmark_model
   --graph=/data/local/tmp/model.tflite --num_threads=1 --num_runs=200
   --enable_op_profiling=true`; then the same with `model_float.tflite` and
   `--use_xnnpack=true`, and with `--num_threads=4`. The "Inference (avg)" line is the
   phone's latency in microseconds; the operator profile should show one `LceBconv2d` per
   binarized layer. In an app, the `.tflite` runs with LCE's Android library (see the
   "Export to Android" how-to).
"""

print(f"\nTask 1 test accuracy on {len(x_parity)} images: Keras "
      f"{100 * report.parity.keras_accuracy:.2f}%, LCE {100 * report.parity.lce_accuracy:.2f}%")
print(f"Files in {args.output}/: model.tflite ({report.size_bytes / 1024:.1f} KiB), "
      f"model_float.tflite, export_report.json")
