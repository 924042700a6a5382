"""x86 batch-1 latency of TFLite flatbuffers: LCE's interpreter vs `tf.lite.Interpreter`.

Benchmark code (used by `export_benchmark.py`), built on the public interpreters of
`larq_meta.export`. LCE's optimized binary kernels target ARM: on x86 these numbers are only
indicative; measure on a phone for real ones (docs/export.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import larq_meta  # noqa: F401 - first: tf.keras is tf-keras

import numpy as np

from larq_meta.export import lce_interpreter, tflite_interpreter

__all__ = ["measure_latency", "compare_latency"]


def measure_latency(
    flatbuffer: bytes,
    *,
    runtime: str = "lce",
    num_threads: int = 1,
    runs: int = 200,
    warmup: int = 20,
    use_indirect_bgemm: bool = False,
    xnnpack: bool = True,
) -> dict[str, float]:
    """Batch-1 latency of one flatbuffer on this machine (median/p10/p90 in ms).

    `runtime="lce"`: LCE's interpreter (`use_indirect_bgemm` selects its indirect BGEMM
    binary convolution kernel); `"tflite"`: `tf.lite.Interpreter` (XNNPack delegate unless
    `xnnpack=False`). Timed around set-input + invoke + get-output from Python.
    """
    rng = np.random.default_rng(0)
    if runtime == "lce":
        interpreter = lce_interpreter(
            flatbuffer, num_threads=num_threads, use_indirect_bgemm=use_indirect_bgemm
        )
        x = [rng.random(interpreter.input_shapes[0], dtype=np.float32)]
        raw = interpreter.interpreter

        def step():
            raw.predict(x)

    elif runtime == "tflite":
        interpreter = tflite_interpreter(flatbuffer, num_threads=num_threads, xnnpack=xnnpack)
        detail = interpreter.get_input_details()[0]
        shape = [1] + list(detail["shape"][1:])
        interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        x = rng.random(shape, dtype=np.float32)
        out_index = interpreter.get_output_details()[0]["index"]

        def step():
            interpreter.set_tensor(detail["index"], x)
            interpreter.invoke()
            interpreter.get_tensor(out_index)

    else:
        raise ValueError(f"`runtime` must be 'lce' or 'tflite', got {runtime!r}.")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(times)
    return {
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
    }


def compare_latency(
    lce_flatbuffer: bytes,
    float_flatbuffer: bytes,
    *,
    threads: Sequence[int] = (1, 2),
    runs: int = 200,
    warmup: int = 20,
    rounds: int = 3,
) -> dict[str, Any]:
    """x86 batch-1 latency: LCE (default and indirect BGEMM kernels) vs float TFLite (with
    and without XNNPack), per thread count, measured interleaved in `rounds` rounds (the best
    round's median is kept), plus ratios float/LCE (> 1: LCE faster)."""
    variants = {
        "lce": dict(runtime="lce"),
        "lce_indirect_bgemm": dict(runtime="lce", use_indirect_bgemm=True),
        "tflite_float_xnnpack": dict(runtime="tflite", flatbuffer=float_flatbuffer),
        "tflite_float": dict(runtime="tflite", flatbuffer=float_flatbuffer, xnnpack=False),
    }
    result: dict[str, Any] = {
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
        "loadavg_before": list(os.getloadavg()),
    }
    for n in threads:
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, spec in variants.items():
                spec = dict(spec)
                flatbuffer = spec.pop("flatbuffer", lce_flatbuffer)
                timing = measure_latency(
                    flatbuffer, num_threads=n, runs=runs, warmup=warmup, **spec
                )
                best[name] = min(best.get(name, np.inf), timing["median_ms"])
        entry: dict[str, float] = {f"{k}_ms": v for k, v in best.items()}
        entry["ratio_float_xnnpack_over_lce"] = best["tflite_float_xnnpack"] / best["lce"]
        entry["ratio_float_over_lce"] = best["tflite_float"] / best["lce"]
        entry["ratio_float_xnnpack_over_lce_indirect_bgemm"] = (
            best["tflite_float_xnnpack"] / best["lce_indirect_bgemm"]
        )
        result[f"threads_{n}"] = entry
    result["loadavg_after"] = list(os.getloadavg())
    return result
