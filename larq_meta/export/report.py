"""`ExportReport`: what `to_lce` wrote, and the per-layer account of binary and float layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import tensorflow as tf

from larq_meta._utils import iter_layers
from larq_meta.export.layers import (
    has_binary_weights,
    inexact_reason,
    is_binarized,
    is_lce_binary_candidate,
    is_quantized_layer,
    is_sign,
    quantizer_name,
    weight_quantizers,
)
from larq_meta.export.parity import PARITY_TOLERANCE, ParityResult

__all__ = ["ExportReport", "LayerReport", "layer_report"]


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 ** 2:.2f} MiB"


@dataclasses.dataclass
class ExportReport:
    """What `to_lce` wrote. `str(report)` is a table; `to_dict()` is JSON-ready."""

    path: Optional[str]
    model_name: str
    task: Optional[int]
    size_bytes: int
    float_tflite_size_bytes: Optional[int]
    op_counts: dict[str, int]
    #: Layers of any larq type whose input and weight quantizers have precision 1.
    binarized_layers: list[str]
    binary_ops: int
    rewritten_layers: list[str]
    #: Layers computing in float on the device -> why.
    float_layers: dict[str, str]
    #: int8 storage of `±a` float weights: tensors, bytes, whether outputs were identical.
    compaction: dict[str, Any]
    parity: Optional[ParityResult]
    notes: list[str]
    converter: str
    versions: dict[str, str]
    seconds: float
    #: Things the user should act on, e.g. a layer LCE does not run exactly.
    warnings: list[str] = dataclasses.field(default_factory=list)
    flatbuffer: bytes = dataclasses.field(repr=False, default=b"")
    float_flatbuffer: Optional[bytes] = dataclasses.field(repr=False, default=None)

    @property
    def size_ratio(self) -> Optional[float]:
        """How many times smaller than the float TFLite file."""
        if not self.float_tflite_size_bytes:
            return None
        return self.float_tflite_size_bytes / self.size_bytes

    @property
    def all_binarized_layers_binary(self) -> bool:
        """True if there are as many LCE binary operators as binarized layers."""
        return self.binary_ops == len(self.binarized_layers)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (without the flatbuffer bytes)."""
        skip = ("flatbuffer", "float_flatbuffer", "parity")
        fields = [f.name for f in dataclasses.fields(self) if f.name not in skip]
        out = {name: getattr(self, name) for name in fields}
        out["parity"] = None if self.parity is None else dataclasses.asdict(self.parity)
        out["size_ratio"] = self.size_ratio
        out["all_binarized_layers_binary"] = self.all_binarized_layers_binary
        return out

    def __str__(self) -> str:
        rows: list[tuple[str, str]] = []
        task = "" if self.task is None else f" with task {self.task}'s BatchNorm state"
        rows.append(("model", f"{self.model_name}{task}"))
        rows.append(("written to", self.path or "(not written)"))
        size = _kib(self.size_bytes)
        if self.float_tflite_size_bytes:
            size += (
                f"  (float TFLite {_kib(self.float_tflite_size_bytes)}: "
                f"{self.size_ratio:.1f}x smaller)"
            )
        rows.append(("file size", size))
        rows.append(("operators", ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items()))))
        binary = (
            f"{self.binary_ops} LCE binary ops for {len(self.binarized_layers)} binarized layers"
        )
        if not self.all_binarized_layers_binary:
            binary += "  <-- MISMATCH"
        rows.append(("binary layers", binary))
        if self.rewritten_layers:
            rewritten = ", ".join(self.rewritten_layers)
            rows.append(("rewritten", f"{rewritten} (QuantDense -> 1x1 QuantConv2D)"))
        for name, reason in self.float_layers.items():
            rows.append((f"float: {name}", reason))
        rows.extend(self._compaction_rows())
        rows.extend(self._parity_rows())
        for warning in self.warnings:
            rows.append(("WARNING", warning))
        for note in self.notes:
            rows.append(("note", note))
        rows.append(("converter", f"{self.converter} ({self.seconds:.1f} s)"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _compaction_rows(self) -> list[tuple[str, str]]:
        c = self.compaction
        if not c.get("tensors"):
            return []
        same = {True: "outputs identical", False: "OUTPUTS CHANGED", None: "exact by construction"}
        return [
            (
                "int8 weights",
                f"{len(c['tensors'])} tensor(s), {_kib(c['float_bytes'])} -> "
                f"{_kib(c['int8_bytes'])}, {same[c.get('verified_identical')]}",
            )
        ]

    def _parity_rows(self) -> list[tuple[str, str]]:
        p = self.parity
        if p is None:
            return [("parity", "not checked")]
        line = (
            f"{p.samples} {p.data} samples: argmax agreement {100 * p.argmax_agreement:.2f}%, "
            f"max |diff| {p.max_abs_diff:.3g} ({p.samples_over_tolerance} sample(s) "
            f"> {PARITY_TOLERANCE:g})"
        )
        if p.keras_accuracy is not None:
            line += (
                f", accuracy Keras {100 * p.keras_accuracy:.2f}% / LCE {100 * p.lce_accuracy:.2f}%"
            )
        if p.inexact_layers:
            line += f"; FLAGGED: layers LCE does not run exactly: {', '.join(p.inexact_layers)}"
        rows = [("parity", line)]
        if p.passed is not None:
            verdict = "passed" if p.passed else "FAILED: " + "; ".join(p.failures())
            rows.append(
                (
                    "parity check",
                    f"argmax agreement >= {100 * p.min_argmax_agreement:g}%, max |diff| <= "
                    f"{p.max_abs_diff_allowed:.3g} (logit range {p.logit_range:.3g}): {verdict}",
                )
            )
        if p.rewrite_max_abs_diff is not None:
            rows.append(
                ("rewrite check", f"Keras before/after max |diff| {p.rewrite_max_abs_diff:.3g}")
            )
        if p.float_tflite_argmax_agreement is not None:
            rows.append(
                (
                    "float TFLite",
                    f"argmax agreement {100 * p.float_tflite_argmax_agreement:.2f}%, "
                    f"max |diff| {p.float_tflite_max_abs_diff:.3g}",
                )
            )
        return rows


@dataclasses.dataclass
class LayerReport:
    """The per-layer part of an `ExportReport`."""

    #: Layers whose input and weight quantizers all have precision 1 (any larq layer type).
    binarized: list[str]
    #: Layers computing in float on the device -> why.
    float_layers: dict[str, str]
    #: Layers LCE does not compute exactly as Keras -> why.
    inexact: dict[str, str]


def _quantizers_text(layer) -> str:
    names = [quantizer_name(layer.input_quantizer)]
    names += [quantizer_name(q) for _, q in weight_quantizers(layer)]
    return "/".join(names)


def layer_report(
    model: tf.keras.Model,
    rewritten: set[str],
    skipped: Mapping[str, str],
    float_ops: Mapping[str, str],
) -> LayerReport:
    """Classify every layer with weights of `model` (the original, not the rewritten copy).

    # Arguments
        model: The exported Keras model.
        rewritten: Names of the QuantDense layers rewritten into 1x1 convolutions.
        skipped: Binarized QuantDense layers left alone -> reason.
        float_ops: Layer -> the float operators carrying its weights in the flatbuffer.

    # Returns
        A `LayerReport`.
    """
    binarized, floats, inexact = [], {}, {}
    for layer in iter_layers(model):
        reason = inexact_reason(layer)
        if reason is not None:
            inexact[layer.name] = reason
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        if not any("kernel" in w.name for w in getattr(layer, "weights", [])):
            continue
        op = float_ops.get(layer.name)
        where = f" ({op})" if op else ""
        kind = type(layer).__name__
        if is_binarized(layer):
            binarized.append(layer.name)
            if not is_lce_binary_candidate(layer):
                floats[layer.name] = (
                    f"binarized {kind} (quantizers {_quantizers_text(layer)}): LCE has no binary "
                    f"operator for it, it computes in float on ±1 values{where}"
                )
            elif isinstance(layer, tf.keras.layers.Dense) and layer.name not in rewritten:
                why = skipped.get(layer.name, "not rewritten")
                floats[layer.name] = f"binarized QuantDense kept as float{where}: {why}"
            continue
        if is_quantized_layer(layer) and layer.input_quantizer is None:
            floats[layer.name] = (
                f"real-valued input (no input quantizer): LCE keeps it float{where}"
            )
            if is_sign(getattr(layer, "kernel_quantizer", None)):
                floats[layer.name] += "; its kernel is binary (int8 storage applies)"
            elif has_binary_weights(layer):
                floats[layer.name] += "; its weights are binary"
        elif is_quantized_layer(layer):
            floats[layer.name] = (
                f"quantizers {_quantizers_text(layer)} are not all precision 1: float{where}"
            )
        else:
            floats[layer.name] = f"full-precision {kind}{where}"
    return LayerReport(binarized, floats, inexact)
