"""Export a binarized network to a Larq Compute Engine (LCE) `.tflite` flatbuffer.

`to_lce` converts a Keras/Larq model with Larq Compute Engine and makes sure that what lands
on the phone is really binary and really the same network. It is a short pipeline over the
modules of this package:

1. **Task state** (`batchnorm.using_batchnorm`): `task=k` with `bn_snapshots` exports the
   network as it is evaluated on task `k`; the live model is left as it was.
2. **Rewrite** (`rewrite`): each binarized `QuantDense` becomes the equivalent
   `Reshape -> 1x1 QuantConv2D -> Reshape` (`dense_to_conv1x1`), which LCE turns into its
   binary convolution `LceBconv2d`; exact in float32.
3. **Conversion** (`convert`): `larq_compute_engine.convert_keras_model`, or LCE's
   frozen-graph path directly; the stock float TFLite conversion as the size baseline.
4. **Storage** (`flatbuffer`): float weights that are `±a_c` per channel (a binary kernel
   behind a real-valued input, BatchNorm folded in) stored as exact int8 + `DEQUANTIZE`.
5. **Parity** (`parity`): the flatbuffer run with LCE's interpreter against Keras; below the
   thresholds a `ParityError` (carrying the refused report) and nothing written.
   `compare_layers` (`diagnose`) then says at which layer Keras and LCE part, and why.
6. **Report** (`report`): operator counts, which layers are binary and which stayed float and
   why, sizes, parity, warnings.

`to_lce` prints nothing: it returns the `ExportReport` (`print(report)` shows a table). The
file is written atomically (mode from the umask), and only when everything succeeded.

!!! example
    ```python
    from larq_meta.export import to_lce

    report = to_lce(model, "mlp_task3.tflite", task=3, bn_snapshots=result.bn_snapshots,
                    parity_data=(x_test[:1000], y_test[:1000]))
    print(report)
    ```
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from larq_meta._utils import check_float, check_int, iter_layers, write_atomic
from larq_meta.batchnorm import batchnorm_layers, using_batchnorm
from larq_meta.export.convert import (
    CONVERSIONS,
    Conversion,
    check_runnable,
    convert_lce,
    float_tflite,
    versions,
)
from larq_meta.export.diagnose import CAUSES, LayerComparison, LayerDiff, compare_layers
from larq_meta.export.errors import ExportError, ParityError, UnsafeModelError
from larq_meta.export.files import (
    code_carrying_layers,
    load_bn_snapshots,
    load_model,
    load_parity_data,
    save_bn_snapshots,
)
from larq_meta.export.flatbuffer import (
    FLOAT_OPS,
    LCE_BINARY_OPS,
    LCE_CUSTOM_OPS,
    compact_binary_float_weights,
    op_counts,
    ops_by_layer,
)
from larq_meta.export.layers import SIGN_QUANTIZERS, is_binarized
from larq_meta.export.parity import (
    DEFAULT_MIN_ARGMAX_AGREEMENT,
    PARITY_TOLERANCE,
    RANDOM_PARITY,
    RELATIVE_LOGIT_TOLERANCE,
    ParityResult,
    keras_predict,
    lce_interpreter,
    logit_tolerance,
    parity_inputs,
    run_lce,
    run_tflite,
    tflite_interpreter,
)
from larq_meta.export.report import ExportReport, LayerReport, layer_report
from larq_meta.export.rewrite import dense_to_conv1x1, plan_dense_rewrite, rebuild_model
from larq_meta.export.rewrite import with_float32_products

__all__ = [
    "ExportError",
    "ParityError",
    "UnsafeModelError",
    "ExportReport",
    "LayerReport",
    "ParityResult",
    "Conversion",
    "to_lce",
    "compare_layers",
    "LayerComparison",
    "LayerDiff",
    "CAUSES",
    "dense_to_conv1x1",
    "convert_lce",
    "float_tflite",
    "op_counts",
    "compact_binary_float_weights",
    "is_binarized",
    "run_lce",
    "run_tflite",
    "lce_interpreter",
    "tflite_interpreter",
    "load_model",
    "code_carrying_layers",
    "load_parity_data",
    "save_bn_snapshots",
    "load_bn_snapshots",
    "export_main",
    "CONVERSIONS",
    "COMPACT_MODES",
    "LCE_BINARY_OPS",
    "LCE_CUSTOM_OPS",
    "PARITY_TOLERANCE",
    "DEFAULT_MIN_ARGMAX_AGREEMENT",
    "RELATIVE_LOGIT_TOLERANCE",
    "RANDOM_PARITY",
    "SIGN_QUANTIZERS",
    "logit_tolerance",
]

logger = logging.getLogger(__name__)

#: Values of `compact_weights`.
COMPACT_MODES = ("int8", None)

PathLike = Union[str, "os.PathLike[str]"]


def _select_snapshot(task, bn_snapshots):
    if task is None and bn_snapshots is None:
        return None
    if bn_snapshots is None:
        raise ExportError(f"task={task!r} needs `bn_snapshots` (the per-task BatchNorm snapshots).")
    if isinstance(bn_snapshots, Mapping):
        snapshots = dict(bn_snapshots)
    elif isinstance(bn_snapshots, Sequence) and not isinstance(bn_snapshots, (str, bytes)):
        snapshots = dict(enumerate(bn_snapshots))
    else:
        raise ExportError(
            "`bn_snapshots` must be a list of per-task BatchNorm snapshots, "
            f"got {type(bn_snapshots).__name__}."
        )
    available = sorted(k for k, v in snapshots.items() if v is not None)
    if task is None:
        raise ExportError(f"`bn_snapshots` given without `task`: pass task=k, one of {available}.")
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
        raise ExportError(
            f"`task` must be an int task index, got {task!r} (available: {available})."
        )
    if snapshots.get(int(task)) is None:
        raise ExportError(
            f"No BatchNorm snapshot for task {task}; snapshots exist for tasks {available}."
        )
    return snapshots[int(task)]


def _check_snapshot_fits(model, task, snapshot) -> None:
    if snapshot is None:
        return
    bn_names = {layer.name for layer in batchnorm_layers(model)}
    if set(snapshot) != bn_names:
        raise ExportError(
            f"The BatchNorm snapshot of task {task} does not fit model '{model.name}': "
            f"layers without a snapshot {sorted(bn_names - set(snapshot))}, snapshot entries "
            f"without a layer {sorted(set(snapshot) - bn_names)}."
        )


def _check_path(path) -> Optional[str]:
    if path is None:
        return None
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ExportError(f"Output path {path!r} is a directory.")
    if not os.path.isdir(directory):
        raise ExportError(f"Output directory {directory!r} does not exist.")
    return path


def _check_arguments(model, conversion, compact_weights, parity, thresholds, parity_samples):
    if not isinstance(model, tf.keras.Model):
        raise ExportError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ExportError(f"Model '{model.name}' has no known input shape; build or call it first.")
    if conversion not in CONVERSIONS:
        raise ExportError(f"`conversion` must be one of {CONVERSIONS}, got {conversion!r}.")
    if compact_weights not in COMPACT_MODES:
        raise ExportError(
            f"`compact_weights` must be one of {COMPACT_MODES}, got {compact_weights!r}."
        )
    min_argmax_agreement, max_abs_diff = thresholds
    if not parity and (min_argmax_agreement is not None or max_abs_diff is not None):
        raise ExportError("Parity thresholds need the parity check (parity=True).")
    if min_argmax_agreement is not None:
        check_float(min_argmax_agreement, "min_argmax_agreement", minimum=0.0, maximum=1.0)
    if max_abs_diff is not None:
        check_float(max_abs_diff, "max_abs_diff", minimum=0.0)
    check_int(parity_samples, "parity_samples")


def _compact(flatbuffer: bytes, mode: Optional[str]) -> tuple[bytes, dict[str, Any]]:
    compaction: dict[str, Any] = {
        "mode": mode,
        "tensors": [],
        "float_bytes": 0,
        "int8_bytes": 0,
        "size_without_compaction": len(flatbuffer),
        "verified_identical": None,
    }
    if mode == "int8":
        flatbuffer, info = compact_binary_float_weights(flatbuffer)
        compaction.update(info)
    return flatbuffer, compaction


def _float_ops(flatbuffer: bytes, model: tf.keras.Model) -> dict[str, str]:
    """Layer name -> the float operators carrying its weights (e.g. "FULLY_CONNECTED")."""
    by_layer = ops_by_layer(flatbuffer, [layer.name for layer in iter_layers(model)])
    return {name: "/".join(sorted(set(ops) & FLOAT_OPS)) for name, ops in by_layer.items()}


def _float_reference_parity(result: ParityResult, float_fb, x, keras_out, notes) -> None:
    try:
        float_out = run_tflite(float_fb, x)
    except Exception as error:  # noqa: BLE001 - informative only
        notes.append(f"float TFLite parity not measured: {error}")
        return
    reference = ParityResult.from_outputs(keras_out, float_out)
    result.float_tflite_argmax_agreement = reference.argmax_agreement
    result.float_tflite_max_abs_diff = reference.max_abs_diff


@dataclasses.dataclass
class _Converted:
    """What the conversion step produced (under the task's BatchNorm state)."""

    flatbuffer: bytes
    converter: str
    float_flatbuffer: Optional[bytes] = None
    #: Keras outputs on the parity inputs, before and after the dense rewrite.
    keras_out: Optional[np.ndarray] = None
    rewritten_out: Optional[np.ndarray] = None


def _prepare(model, rewrite_dense):
    """The float32-product model, the QuantDense layers to rewrite, those left alone, notes."""
    model, float32_products = with_float32_products(model)
    targets, skipped = plan_dense_rewrite(model, rewrite_dense)
    notes = [
        f"QuantDense '{name}' stays a float FULLY_CONNECTED: {why}."
        for name, why in skipped.items()
    ]
    if float32_products:
        notes.append(
            f"BF16QuantDense {float32_products} exported as QuantDense (same weights; the "
            "bfloat16 products are a training-speed option; parity is against float32 products)."
        )
    return model, targets, skipped, notes


def _convert(model, targets, data, conversion, float_reference, converter_kwargs, notes):
    """Rewrite, convert with LCE, check the operators, the float reference, Keras outputs."""
    export_model = rebuild_model(model, {id(t) for t in targets}) if targets else model
    flatbuffer, converter = convert_lce(export_model, conversion=conversion, **converter_kwargs)
    check_runnable(flatbuffer, model)
    run = _Converted(flatbuffer, converter)
    if float_reference:
        try:
            run.float_flatbuffer = float_tflite(model)
        except Exception as error:  # noqa: BLE001 - a reference only
            notes.append(f"float TFLite reference failed: {type(error).__name__}: {error}")
    if data is not None:
        run.keras_out = keras_predict(model, data[0])
        if targets:
            run.rewritten_out = keras_predict(export_model, data[0])
    return run


def _check_parity(flatbuffer, run: _Converted, data, compaction, notes):
    """LCE vs Keras on the parity inputs; the int8 storage kept only if outputs are identical.
    Returns the flatbuffer to write and the `ParityResult`."""
    x, y, source = data
    lce_out = run_lce(flatbuffer, x)
    if compaction["tensors"]:
        identical = bool(np.array_equal(lce_out, run_lce(run.flatbuffer, x)))
        compaction["verified_identical"] = identical
        if not identical:
            notes.append(
                "int8 weights changed outputs on the parity sample: kept float32 weights."
            )
            flatbuffer, lce_out = run.flatbuffer, run_lce(run.flatbuffer, x)
            compaction.update(tensors=[], float_bytes=0, int8_bytes=0)
    result = ParityResult.from_outputs(run.keras_out, lce_out, y, data=source)
    if run.rewritten_out is not None:
        result.rewrite_max_abs_diff = float(np.abs(run.rewritten_out - run.keras_out).max())
        result.rewrite_identical = bool(np.array_equal(run.rewritten_out, run.keras_out))
    if run.float_flatbuffer is not None:
        _float_reference_parity(result, run.float_flatbuffer, x, run.keras_out, notes)
    if source == RANDOM_PARITY:
        notes.append(
            "parity measured on random inputs; pass real parity_data for a stronger check."
        )
    return flatbuffer, result


def _report(model, path, task, flatbuffer, run: _Converted, targets, layers, compaction, notes):
    counts = op_counts(flatbuffer)
    binary_ops = sum(counts.get(op, 0) for op in LCE_BINARY_OPS)
    if binary_ops != len(layers.binarized):
        notes.append(
            f"{len(layers.binarized)} binarized layers but {binary_ops} LCE binary ops: not "
            "every binarized layer runs as a binary operator."
        )
    float_fb = run.float_flatbuffer
    return ExportReport(
        path=path,
        model_name=model.name,
        task=None if task is None else int(task),
        size_bytes=len(flatbuffer),
        float_tflite_size_bytes=None if float_fb is None else len(float_fb),
        op_counts=counts,
        binarized_layers=layers.binarized,
        binary_ops=binary_ops,
        rewritten_layers=[t.name for t in targets],
        float_layers=layers.float_layers,
        compaction=compaction,
        parity=None,
        notes=notes,
        converter=run.converter,
        versions=versions(),
        seconds=0.0,
        warnings=[
            f"layer '{name}': {why}; LCE's outputs may differ from Keras' (check parity on "
            "real data)."
            for name, why in layers.inexact.items()
        ],
        flatbuffer=flatbuffer,
        float_flatbuffer=float_fb,
    )


def _judge(result: ParityResult, keras_out, thresholds, allow_mismatch, model_name, path):
    """Hold the parity result to the thresholds (defaults: `DEFAULT_MIN_ARGMAX_AGREEMENT`,
    `logit_tolerance`); ParityError, or with `allow_mismatch` a warning (returned)."""
    min_argmax_agreement, max_abs_diff = thresholds
    failures = result.judge(
        DEFAULT_MIN_ARGMAX_AGREEMENT if min_argmax_agreement is None else min_argmax_agreement,
        logit_tolerance(keras_out) if max_abs_diff is None else max_abs_diff,
    )
    if not failures:
        return []
    what = f"on {result.samples} {result.data} samples: {'; '.join(failures)}"
    if result.inexact_layers:
        what += f" (layers LCE does not run exactly: {', '.join(result.inexact_layers)})"
    if allow_mismatch:
        return [f"written although LCE disagrees with Keras {what} (allow_mismatch=True)."]
    raise ParityError(
        f"LCE flatbuffer of '{model_name}' disagrees with Keras {what}; nothing written"
        f"{'' if path is None else f' to {path}'}. Pass allow_mismatch=True (--allow-mismatch) "
        "to write it anyway."
    )


def to_lce(
    model: tf.keras.Model,
    path: Optional[PathLike],
    *,
    task: Optional[int] = None,
    bn_snapshots: Optional[Union[Sequence[Optional[Mapping]], Mapping[int, Mapping]]] = None,
    parity_data=None,
    parity: bool = True,
    parity_samples: int = 256,
    min_argmax_agreement: Optional[float] = None,
    max_abs_diff: Optional[float] = None,
    rewrite_dense: Union[bool, Sequence[str]] = True,
    compact_weights: Optional[str] = "int8",
    float_reference: bool = True,
    conversion: str = "saved_model",
    allow_mismatch: bool = False,
    report: Optional[bool] = None,
    **converter_kwargs,
) -> ExportReport:
    """Convert `model` to a Larq Compute Engine flatbuffer at `path` and check it.

    Parity is measured as $\\max_{i,j} |\\mathrm{LCE}(x_i)_j - \\mathrm{Keras}(x_i)_j|$ and the
    fraction of samples whose argmax agrees (see `ParityResult.from_outputs`).

    !!! example
        ```python
        report = to_lce(model, "mlp.tflite", parity_data=(x_test[:1000], y_test[:1000]))
        print(report)
        ```

    # Arguments
        model: A built Keras/Larq model (e.g. `paper_mlp`, `binary_convnet`).
        path: Output `.tflite` file; written atomically (mode from the umask), only if
            everything succeeded. None: convert and check only (`report.flatbuffer`).
        task: Export with task `task`'s BatchNorm state from `bn_snapshots` loaded (the live
            model keeps its own state).
        bn_snapshots: Per-task BatchNorm snapshots: a list whose item `k` is the
            `snapshot_batchnorm` dict saved after task `k` (`SequenceResult.bn_snapshots`), or
            a mapping task -> snapshot. `None` items count as missing.
        parity_data: `(x, y)` or `x` to compare Keras and LCE on. Default: `parity_samples`
            random inputs uniform in [0, 1), which checks the arithmetic but not behaviour on
            real data; real data is better (it also yields accuracies with labels).
        parity: Run the parity check with LCE's interpreter.
        parity_samples: Number of random parity inputs (a positive int; ignored with
            `parity_data`).
        min_argmax_agreement: Raise ParityError (nothing written) below this argmax agreement
            (default `DEFAULT_MIN_ARGMAX_AGREEMENT`, 0.999).
        max_abs_diff: Raise ParityError (nothing written) above this max |logit difference|
            (default `logit_tolerance`: 5 % of the range of Keras' logits, at least 1e-3).
        rewrite_dense: True: rewrite every binarized QuantDense into a 1x1 binary
            QuantConv2D (others are left as they are, with a note); False: none; a list of
            layer names: exactly those, ExportError naming a layer that cannot be rewritten.
        compact_weights: "int8": store float weights that are `±a` per output channel
            (binary kernels of layers with real-valued inputs) as exact int8 + DEQUANTIZE;
            None: leave the converter's float32 weights.
        float_reference: Also convert with the stock TFLite converter for the size
            comparison (and informative parity).
        conversion: "saved_model": `larq_compute_engine.convert_keras_model`; "graphdef":
            LCE's frozen-graph path directly (same operators, faster). See `convert_lce`.
        allow_mismatch: Write the file even if parity fails its thresholds, with a warning in
            the report (default: ParityError, nothing written).
        report: Deprecated: `to_lce` no longer prints; `print()` the returned report.
        **converter_kwargs: Passed to the LCE converter (e.g. `target="xcore"`); keep the
            default float32 input/output for the parity check.

    # Returns
        An `ExportReport`.

    # Raises
        ExportError: unsupported model/layer/task index, failed conversion, bad argument.
        ParityError: parity failed a threshold (nothing written), unless `allow_mismatch`.
    """
    started = time.perf_counter()
    if report is not None:
        warnings.warn(
            "`to_lce(report=...)` is deprecated: to_lce no longer prints; print the returned "
            "report instead.",
            DeprecationWarning,
            stacklevel=2,
        )
    thresholds = (min_argmax_agreement, max_abs_diff)
    _check_arguments(model, conversion, compact_weights, parity, thresholds, parity_samples)
    path = _check_path(path)
    snapshot = _select_snapshot(task, bn_snapshots)
    _check_snapshot_fits(model, task, snapshot)

    model, targets, skipped, notes = _prepare(model, rewrite_dense)
    data = parity_inputs(model, parity_data, parity_samples) if parity else None
    with using_batchnorm(model, snapshot):
        run = _convert(model, targets, data, conversion, float_reference, converter_kwargs, notes)
    flatbuffer, compaction = _compact(run.flatbuffer, compact_weights)
    layers = layer_report(model, {t.name for t in targets}, skipped, _float_ops(flatbuffer, model))
    parity_result = None
    if data is not None:
        flatbuffer, parity_result = _check_parity(flatbuffer, run, data, compaction, notes)
        parity_result.inexact_layers = sorted(layers.inexact)
    else:
        notes.append("parity not checked (parity=False).")

    result = _report(model, path, task, flatbuffer, run, targets, layers, compaction, notes)
    result.parity = parity_result
    if parity_result is not None:
        try:
            result.warnings.extend(
                _judge(parity_result, run.keras_out, thresholds, allow_mismatch, model.name, path)
            )
        except ParityError as error:
            error.report = result  # the refused flatbuffer, for `compare_layers`
            raise
    for warning in result.warnings:
        logger.info("%s", warning)
    if path is not None:
        write_atomic(path, flatbuffer)
    result.seconds = time.perf_counter() - started
    return result


def export_main(argv: Optional[list[str]] = None) -> int:
    """Deprecated: use `larq_meta.cli.main(["export", ...])` (the `larq-meta export` command)."""
    warnings.warn(
        "larq_meta.export.export_main is deprecated: use larq_meta.cli.main(['export', ...]) "
        "or the `larq-meta export` command.",
        DeprecationWarning,
        stacklevel=2,
    )
    from larq_meta.cli import main

    return main(["export", *(argv or [])])
