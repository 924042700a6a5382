"""Export a binarized network to a Larq Compute Engine (LCE) `.tflite` flatbuffer.

`to_lce` converts a Keras/Larq model with `larq_compute_engine.convert_keras_model` and
makes sure that what lands on the phone is really binary and really the same network:

1. **Task state.** `task=k` with `bn_snapshots` (index `k` = the BatchNorm state saved after
   task `k`, as the sequence trainer returns them) exports the network as it is evaluated on
   task `k`. The live model is left as it was.
2. **Dense layers made binary.** LCE only makes binary operators (`LceBconv2d`) out of
   `QuantConv2D`; a binarized `QuantDense` would become a float `FULLY_CONNECTED` fed by
   `LceDequantize`. Each binarized `QuantDense` (sign input and sign kernel quantizer) is
   therefore rewritten into the equivalent `Reshape((1, 1, C)) -> 1x1 QuantConv2D ->
   Reshape((units,))` with the same latent kernel (`dense_to_conv1x1`). Sign inputs times
   sign kernels are integer dot products, so the rewrite is exact in float32.
3. **Float layers stored compactly.** A layer with a real-valued input (the first layer of
   the paper's MLP) stays float. Its kernel is `±1` after quantization; the converter folds
   the following BatchNorm scale into it, so every output channel holds `±a_c`. Such weights
   are stored as int8 `±1` with a per-channel scale `a_c` and a `DEQUANTIZE` op: the
   dequantized float weights are bit-for-bit the ones the converter wrote, so not a single
   output changes (checked on the parity sample), for a quarter of the bytes.
4. **Parity.** The flatbuffer is run with LCE's interpreter
   (`larq_compute_engine.testing.Interpreter`; the stock `tf.lite.Interpreter` cannot run
   LCE operators) and compared with Keras in inference mode.
5. **Report.** Operator counts read from the flatbuffer, which layers stayed float and why,
   the file size next to the plain float TFLite conversion of the same network, and parity.

The output file is written to a temporary file next to `path` and moved into place only when
everything succeeded: after an error there is nothing (new) at `path`.

!!! example
    ```python
    from larq_meta.export import to_lce

    report = to_lce(model, "mlp_task3.tflite", task=3, bn_snapshots=result.bn_snapshots,
                    parity_data=(x_test[:1000], y_test[:1000]))
    print(report)
    ```
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import larq as lq
import numpy as np
import tensorflow as tf

from larq_meta.batchnorm import batchnorm_layers, using_batchnorm
from larq_meta.models import BF16QuantDense, unclipped_kernels_by_design

__all__ = [
    "ExportError",
    "ParityError",
    "ExportReport",
    "ParityResult",
    "to_lce",
    "dense_to_conv1x1",
    "float_tflite",
    "op_counts",
    "compact_binary_float_weights",
    "measure_latency",
    "compare_latency",
    "save_bn_snapshots",
    "load_bn_snapshots",
    "load_model",
    "export_main",
]

#: Custom operators the LCE runtime (interpreter, Android benchmark tool) provides.
LCE_CUSTOM_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
#: LCE's binary operators: what a binarized layer must become.
LCE_BINARY_OPS = ("LceBconv2d",)
#: Forward pass `sign(x)` with sign(0) = +1; LCE recognises these (they differ in gradient only).
SIGN_QUANTIZERS = (lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign)
#: Values of `compact_weights`.
COMPACT_MODES = ("int8", None)
#: Values of `conversion`.
CONVERSIONS = ("saved_model", "graphdef")
#: The random parity inputs used when no `parity_data` is given: uniform in [0, 1).
RANDOM_PARITY = "random uniform [0, 1)"

_TFLITE_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16  # the schema's `force_align: 16` on buffer data
_FLOAT_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"}

PathLike = Union[str, "os.PathLike[str]"]


class ExportError(ValueError):
    """The model cannot be exported as asked (the message names the layer or task index)."""


class ParityError(ExportError):
    """The exported flatbuffer disagrees with Keras beyond the requested thresholds."""


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


#: The logit difference `ParityResult.samples_over_tolerance` counts against.
PARITY_TOLERANCE = 1e-3


@dataclasses.dataclass
class ParityResult:
    """LCE flatbuffer vs Keras (inference mode) on `samples` inputs."""

    samples: int
    #: "given" or RANDOM_PARITY
    data: str
    argmax_agreement: float
    max_abs_diff: float
    #: Samples whose largest |logit difference| exceeds `PARITY_TOLERANCE` (in a large binary
    #: network one activation that float rounding puts on the other side of its sign
    #: threshold shifts a sample's logits; this counts how often that happens).
    samples_over_tolerance: int = 0
    #: Only with labels.
    keras_accuracy: Optional[float] = None
    lce_accuracy: Optional[float] = None
    #: Keras before vs after the QuantDense rewrite (0.0 / True expected).
    rewrite_max_abs_diff: Optional[float] = None
    rewrite_identical: Optional[bool] = None
    #: The plain float TFLite file vs Keras (informative: see docs/export.md).
    float_tflite_argmax_agreement: Optional[float] = None
    float_tflite_max_abs_diff: Optional[float] = None


@dataclasses.dataclass
class ExportReport:
    """What `to_lce` wrote. `str(report)` is a table; `to_dict()` is JSON-ready."""

    path: Optional[str]
    model_name: str
    task: Optional[int]
    size_bytes: int
    float_tflite_size_bytes: Optional[int]
    op_counts: dict[str, int]
    #: Layers that binarize both input and kernel (each should become an LCE binary op).
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
        return self.binary_ops == len(self.binarized_layers)

    def to_dict(self) -> dict[str, Any]:
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
        c = self.compaction
        if c.get("tensors"):
            same = {
                True: "outputs identical",
                False: "OUTPUTS CHANGED",
                None: "exact by construction",
            }
            rows.append(
                (
                    "int8 weights",
                    f"{len(c['tensors'])} tensor(s), {_kib(c['float_bytes'])} -> "
                    f"{_kib(c['int8_bytes'])}, {same[c.get('verified_identical')]}",
                )
            )
        p = self.parity
        if p is not None:
            line = (
                f"{p.samples} {p.data} samples: argmax agreement {100 * p.argmax_agreement:.2f}%, "
                f"max |diff| {p.max_abs_diff:.3g} ({p.samples_over_tolerance} sample(s) "
                f"> {PARITY_TOLERANCE:g})"
            )
            if p.keras_accuracy is not None:
                line += (
                    f", accuracy Keras {100 * p.keras_accuracy:.2f}% / "
                    f"LCE {100 * p.lce_accuracy:.2f}%"
                )
            rows.append(("parity", line))
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
        else:
            rows.append(("parity", "not checked"))
        for note in self.notes:
            rows.append(("note", note))
        rows.append(("converter", f"{self.converter} ({self.seconds:.1f} s)"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 ** 2:.2f} MiB"


# --------------------------------------------------------------------------------------------
# Layer analysis and the QuantDense -> 1x1 QuantConv2D rewrite
# --------------------------------------------------------------------------------------------


def _all_layers(model: tf.keras.Model) -> Iterator[tf.keras.layers.Layer]:
    """Every layer of `model`, nested models expanded, in order."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def _is_sign(quantizer) -> bool:
    return isinstance(quantizer, SIGN_QUANTIZERS)


def _quantizer_name(quantizer) -> str:
    return "None" if quantizer is None else type(quantizer).__name__


def _is_binarized(layer) -> bool:
    """A larq layer that binarizes both its input and its kernel with a sign."""
    return (
        isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDense))
        and _is_sign(getattr(layer, "input_quantizer", None))
        and _is_sign(getattr(layer, "kernel_quantizer", None))
    )


def _dense_rewrite_blocker(layer: lq.layers.QuantDense) -> Optional[str]:
    """Why `layer` cannot become a binary 1x1 convolution (None: it can)."""
    if layer.input_quantizer is None:
        return "its input is real-valued (no input quantizer), so LCE cannot binarize it"
    if not _is_sign(layer.input_quantizer):
        return f"its input quantizer {_quantizer_name(layer.input_quantizer)} is not a sign"
    if not _is_sign(layer.kernel_quantizer):
        return f"its kernel quantizer {_quantizer_name(layer.kernel_quantizer)} is not a sign"
    if not layer.built:
        return "it is not built (no input shape)"
    shapes = []
    for node in layer._inbound_nodes:  # noqa: SLF001 - the shapes the layer was called on
        shapes.extend(tf.nest.flatten(getattr(node, "input_shapes", None)))
    ranks = {len(s) for s in shapes if s is not None and hasattr(s, "__len__")}
    if ranks and ranks != {2}:
        return f"its input has rank {sorted(ranks)}; only (batch, features) inputs are rewritten"
    return None


def _plan_rewrite(model: tf.keras.Model, rewrite_dense) -> tuple[list, dict[str, str]]:
    """The QuantDense layers to rewrite, and the binarized ones left alone with the reason."""
    dense = [layer for layer in _all_layers(model) if isinstance(layer, lq.layers.QuantDense)]
    if rewrite_dense is False or rewrite_dense is None:
        reason = "QuantDense rewrite disabled (rewrite_dense=False)"
        return [], {layer.name: reason for layer in dense if _is_binarized(layer)}
    if rewrite_dense is True:
        targets, skipped = [], {}
        for layer in dense:
            reason = _dense_rewrite_blocker(layer)
            if reason is None:
                targets.append(layer)
            elif layer.input_quantizer is not None:  # a real-valued input is no surprise
                skipped[layer.name] = f"not rewritten: {reason}"
        return targets, skipped
    if isinstance(rewrite_dense, str) or not isinstance(rewrite_dense, Iterable):
        raise ExportError(
            "`rewrite_dense` must be True, False or a list of layer names, "
            f"got {rewrite_dense!r}."
        )
    names = list(rewrite_dense)
    by_name = {layer.name: layer for layer in dense}
    targets = []
    for name in names:
        if name not in by_name:
            exists = any(layer.name == name for layer in _all_layers(model))
            what = "is not a QuantDense" if exists else "does not exist"
            raise ExportError(
                f"Cannot rewrite layer '{name}': it {what} in model '{model.name}' "
                f"(QuantDense layers: {sorted(by_name)})."
            )
        reason = _dense_rewrite_blocker(by_name[name])
        if reason is not None:
            raise ExportError(
                f"Cannot rewrite layer '{name}' as a binary 1x1 convolution: {reason}."
            )
        targets.append(by_name[name])
    skipped = {
        layer.name: "not in rewrite_dense"
        for layer in dense
        if _is_binarized(layer) and layer.name not in names
    }
    return targets, skipped


def _dense_as_conv(dense: lq.layers.QuantDense) -> list[tf.keras.layers.Layer]:
    """`[Reshape((1,1,C)), QuantConv2D(units, 1), Reshape((units,))]` computing as `dense`.

    The convolution takes the dense layer's name (so reports and op names still say
    `dense_2`); the reshapes are `<name>_to_map` and `<name>_from_map`.
    """
    config = dense.get_config()
    channels, units = (int(d) for d in dense.kernel.shape)
    dtype = config.get("dtype")
    with unclipped_kernels_by_design():
        conv = lq.layers.QuantConv2D(
            units,
            kernel_size=1,
            padding="valid",
            use_bias=config["use_bias"],
            activation=config["activation"],
            input_quantizer=config["input_quantizer"],
            kernel_quantizer=config["kernel_quantizer"],
            kernel_constraint=config.get("kernel_constraint"),
            dtype=dtype,
            name=dense.name,
        )
    to_map = tf.keras.layers.Reshape((1, 1, channels), name=f"{dense.name}_to_map", dtype=dtype)
    from_map = tf.keras.layers.Reshape((units,), name=f"{dense.name}_from_map", dtype=dtype)
    return [to_map, conv, from_map]


def _contains(model: tf.keras.Model, targets: set[int]) -> bool:
    return any(id(layer) in targets for layer in _all_layers(model))


def _clone_layer(layer: tf.keras.layers.Layer, model_name: str) -> tf.keras.layers.Layer:
    """A fresh copy of `layer`; a `BF16QuantDense` becomes a plain `QuantDense` (same config
    and weights): its bfloat16 products (`XlaDotV2`) exist only under XLA, not in TFLite."""
    cls = lq.layers.QuantDense if isinstance(layer, BF16QuantDense) else layer.__class__
    try:
        with unclipped_kernels_by_design():
            if isinstance(layer, tf.keras.Model):
                return tf.keras.models.clone_model(layer)
            return cls.from_config(layer.get_config())
    except Exception as error:  # noqa: BLE001 - re-raised naming the layer
        raise ExportError(
            f"Cannot copy layer '{layer.name}' of model '{model_name}' for the QuantDense "
            f"rewrite ({type(error).__name__}: {error}); pass rewrite_dense=False."
        ) from error


def _skips_first_node(layer) -> bool:
    """tf-keras does not serialize the node a nested model with an input layer was built with,
    so the config's node indices of such a layer start at 1."""
    try:
        from tf_keras.src.engine.functional import _should_skip_first_node
    except ImportError:  # pragma: no cover - other tf-keras layouts
        tracked = getattr(layer, "_self_tracked_trackables", None)
        return bool(
            isinstance(layer, tf.keras.Model)
            and tracked
            and isinstance(tracked[0], tf.keras.layers.InputLayer)
        )
    return bool(_should_skip_first_node(layer))


def _has_list(value) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, Mapping):
        return any(_has_list(v) for v in value.values())
    return False


def _node_references(node) -> list:
    """The `[layer, node index, tensor index, (kwargs)]` entries of one config node."""
    return node if node and isinstance(node[0], (list, tuple)) else [node]


def _rebuild(model: tf.keras.Model, targets: set[int]) -> tf.keras.Model:
    """Replay `model`'s functional graph with fresh layers, binarized QuantDense layers in
    `targets` (ids) replaced by `_dense_as_conv`; weights copied. Nested models are rebuilt
    recursively; the original model is untouched."""
    graph = model
    if isinstance(model, tf.keras.Sequential):
        if not getattr(model, "inputs", None):
            raise ExportError(
                f"Sequential model '{model.name}' has no input shape; build it first."
            )
        graph = tf.keras.Model(model.inputs, model.outputs, name=model.name)  # a graph view
    try:
        config = graph.get_config()
        entries = config["layers"]
        inputs_config, outputs_config = config["input_layers"], config["output_layers"]
    except (NotImplementedError, KeyError, TypeError) as error:
        raise ExportError(
            f"Cannot rewrite the QuantDense layers of model '{model.name}': its layer graph "
            f"cannot be read ({type(error).__name__}: {error}). The rewrite needs a Sequential "
            "or functional model (subclassed models have no layer graph); pass "
            "rewrite_dense=False to export it with float FULLY_CONNECTED layers."
        ) from error

    tensors: dict[tuple[str, int, int], Any] = {}

    def resolve(reference):
        return tensors.get((reference[0], reference[1], reference[2]))

    calls: dict[str, Any] = {}  # layer name -> callable on the new graph
    copies: list[tuple[tf.keras.layers.Layer, tf.keras.layers.Layer]] = []
    for entry in entries:
        name = entry["config"]["name"]
        layer = graph.get_layer(name)
        if isinstance(layer, tf.keras.layers.InputLayer):
            shape = layer.input_shape
            shape = shape[0] if isinstance(shape, list) else shape
            tensors[(name, 0, 0)] = tf.keras.Input(batch_shape=shape, dtype=layer.dtype, name=name)
        elif id(layer) in targets:
            block = _dense_as_conv(layer)
            calls[name] = lambda x, _block=block: _block[2](_block[1](_block[0](x)))
            copies.append((layer, block[1]))
        elif isinstance(layer, tf.keras.Model) and (
            _contains(layer, targets) or _bf16_layers(layer)
        ):
            calls[name] = _rebuild(layer, targets)  # weights already copied
        else:
            new = _clone_layer(layer, model.name)
            calls[name] = new
            copies.append((layer, new))

    pending = [
        (entry["config"]["name"], k, node)
        for entry in entries
        for k, node in enumerate(entry.get("inbound_nodes", []))
    ]
    while pending:
        remaining = []
        for name, k, node in pending:
            references = _node_references(node)
            inputs = [resolve(r) for r in references]
            if any(t is None for t in inputs):
                remaining.append((name, k, node))
                continue
            kwargs = references[0][3] if len(references[0]) > 3 else {}
            if _has_list(kwargs):
                raise ExportError(
                    f"Layer '{name}' of model '{model.name}' is called with tensor arguments, "
                    "which the QuantDense rewrite does not support; pass rewrite_dense=False."
                )
            outputs = calls[name](inputs[0] if len(inputs) == 1 else inputs, **kwargs)
            index = k + int(_skips_first_node(graph.get_layer(name)))
            for i, tensor in enumerate(tf.nest.flatten(outputs)):
                tensors[(name, index, i)] = tensor
        if len(remaining) == len(pending):
            stuck = [p[0] for p in remaining]
            raise ExportError(
                f"Cannot replay the layer graph of model '{model.name}' (layers {stuck})."
            )
        pending = remaining

    def endpoints(references):
        flat = [resolve(r) for r in _node_references(references)]
        return flat[0] if len(flat) == 1 else flat

    new_model = tf.keras.Model(endpoints(inputs_config), endpoints(outputs_config), name=model.name)
    for old, new in copies:
        weights = old.get_weights()
        if isinstance(old, lq.layers.QuantDense) and isinstance(new, lq.layers.QuantConv2D):
            weights = [weights[0].reshape((1, 1) + weights[0].shape)] + weights[1:]
        new.set_weights(weights)
    return new_model


def dense_to_conv1x1(
    model: tf.keras.Model, layers: Union[bool, Sequence[str]] = True
) -> tf.keras.Model:
    """A copy of `model` whose binarized QuantDense layers are 1x1 binary QuantConv2D blocks.

    Each rewritten `QuantDense` named `n` becomes three layers:
    `Reshape((1, 1, C), name=n_to_map) -> QuantConv2D(units, 1, name=n) ->
    Reshape((units,), name=n_from_map)`, with the latent kernel reshaped to `(1, 1, C, units)`
    and the same quantizers, bias and activation. All other layers are copied with their
    weights; BatchNorm stays after the reshape (LCE fuses it into `LceBconv2d` there as well
    as on the 4D map: same operators, see docs/export.md). The graph is replayed from the
    model's functional config, so shared layers and nested models are handled; subclassed
    models raise ExportError.

    # Arguments
        model: A built Sequential or functional model.
        layers: True: every QuantDense with a sign input and a sign kernel quantizer; a list
            of names: exactly those (ExportError naming the layer if one cannot be rewritten).

    # Returns
        A new model with the same predictions in inference mode; `model` is untouched.
    """
    targets, _ = _plan_rewrite(model, layers)
    if not targets:
        raise ExportError(f"Model '{model.name}' has no QuantDense layer to rewrite.")
    return _rebuild(model, {id(layer) for layer in targets})


def _layer_report(
    model: tf.keras.Model,
    rewritten: set[str],
    skipped: Mapping[str, str],
    float_ops: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """(names of binarized layers, {float layer: reason}) for the original model."""
    binarized, floats = [], {}
    quant = (lq.layers.QuantConv2D, lq.layers.QuantDense)
    for layer in _all_layers(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        if not any("kernel" in w.name for w in getattr(layer, "weights", [])):
            continue
        op = float_ops.get(layer.name)
        where = f" ({op})" if op else ""
        if _is_binarized(layer):
            binarized.append(layer.name)
            if isinstance(layer, lq.layers.QuantDense) and layer.name not in rewritten:
                why = skipped.get(layer.name, "not rewritten")
                floats[layer.name] = f"binarized QuantDense kept as float{where}: {why}"
            continue
        quantizer = getattr(layer, "input_quantizer", None)
        kernel_quantizer = getattr(layer, "kernel_quantizer", None)
        if isinstance(layer, quant) and quantizer is None:
            floats[layer.name] = (
                f"real-valued input (no input quantizer): LCE keeps it float{where}"
            )
            if _is_sign(kernel_quantizer):
                floats[layer.name] += "; its kernel is binary (int8 storage applies)"
        elif isinstance(layer, quant):
            floats[layer.name] = (
                f"quantizers {_quantizer_name(quantizer)}/{_quantizer_name(kernel_quantizer)} "
                f"are not both sign: float{where}"
            )
        else:
            floats[layer.name] = f"full-precision {type(layer).__name__}{where}"
    return binarized, floats


# --------------------------------------------------------------------------------------------
# Flatbuffer utilities
# --------------------------------------------------------------------------------------------


def _schema():
    from larq_compute_engine.mlir.python import tflite_schema

    return tflite_schema


def _builtin_names() -> dict[int, str]:
    operators = vars(_schema().BuiltinOperator).items()
    return {v: k for k, v in operators if not k.startswith("_") and isinstance(v, int)}


def _op_name(code, names: Mapping[int, str]) -> str:
    custom = code.CustomCode()
    if custom:
        return custom.decode(errors="replace")
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    return names.get(builtin, f"BUILTIN_{builtin}")


def _operators(flatbuffer: bytes, inputs: bool = False) -> list[tuple[str, list[str]]]:
    """(op name, output [and input] tensor names) for every operator of every subgraph."""
    model = _schema().Model.GetRootAsModel(flatbuffer, 0)
    names = _builtin_names()
    codes = [_op_name(model.OperatorCodes(i), names) for i in range(model.OperatorCodesLength())]
    ops = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            indices = [op.Outputs(j) for j in range(op.OutputsLength())]
            if inputs:
                indices += [op.Inputs(j) for j in range(op.InputsLength())]
            tensors = [
                subgraph.Tensors(t).Name().decode(errors="replace") for t in indices if t >= 0
            ]
            ops.append((codes[op.OpcodeIndex()], tensors))
    return ops


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    """How many of each operator (builtin name, e.g. FULLY_CONNECTED, or custom code, e.g.
    LceBconv2d) a TFLite flatbuffer holds, read with LCE's copy of the TFLite schema."""
    return dict(Counter(name for name, _ in _operators(flatbuffer)))


def _ops_by_layer(flatbuffer: bytes, layer_names: Iterable[str]) -> dict[str, list[str]]:
    """Best effort: the operators whose tensor names mention a layer (`.../name/...`)."""
    wanted = set(layer_names)
    found: dict[str, list[str]] = {}
    for op, tensors in _operators(flatbuffer, inputs=True):
        parts = {p for name in tensors for piece in name.split(";") for p in piece.split("/")}
        for name in wanted & parts:
            found.setdefault(name, []).append(op)
    return found


def _pack_aligned_buffer(buffer, builder):
    """`BufferT.Pack` with the data 16-byte aligned, as the schema's `force_align` asks (the
    generated Python code aligns uint8 vectors to 1 byte only)."""
    schema = _schema()
    data = None
    if buffer.data is not None:
        payload = np.asarray(buffer.data, dtype=np.uint8).tobytes()
        builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
        builder.head = builder.head - len(payload)
        builder.Bytes[builder.head : builder.head + len(payload)] = payload
        builder.vectorNumElems = len(payload)
        data = builder.EndVector()
    schema.BufferStart(builder)
    if data is not None:
        schema.BufferAddData(builder, data)
    schema.BufferAddOffset(builder, buffer.offset)
    schema.BufferAddSize(builder, buffer.size)
    return schema.BufferEnd(builder)


def _pack(model_t) -> bytes:
    import flatbuffers

    for buffer in model_t.buffers:
        buffer.Pack = lambda builder, _buffer=buffer: _pack_aligned_buffer(_buffer, builder)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=_TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def compact_binary_float_weights(flatbuffer: bytes) -> tuple[bytes, dict[str, Any]]:
    """Store float weights that are `±a_c` per output channel as int8 `±1` + DEQUANTIZE.

    The weights of a float `FULLY_CONNECTED` / `CONV_2D` whose kernel was binarized (a layer
    with a real-valued input) hold, after the converter folded BatchNorm's scale into them,
    `±a_c` for every output channel `c`. They are replaced by an int8 tensor of `±1` with the
    per-channel scale `a_c` (zero point 0), dequantized to float32 by a `DEQUANTIZE` op
    (version 5, per-channel int8): `scale * q` reproduces every float32 weight bit for bit,
    so the layer computes exactly as before with 4x fewer weight bytes. Tensors whose values
    are not of that form are left alone.

    # Returns
        (new flatbuffer, info) with info `{"tensors": [names], "float_bytes", "int8_bytes"}`;
        the input flatbuffer unchanged if nothing qualifies.
    """
    schema = _schema()
    names = _builtin_names()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    info: dict[str, Any] = {"tensors": [], "float_bytes": 0, "int8_bytes": 0}
    targets = {schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.CONV_2D}
    dequantize_index = None
    for subgraph in model.subgraphs:
        buffer_users = Counter(t.buffer for t in subgraph.tensors)
        tensor_users = Counter(
            int(i) for op in subgraph.operators if op.inputs is not None for i in op.inputs
        )
        operators = []
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            weights_index = op.inputs[1] if op.inputs is not None and len(op.inputs) > 1 else -1
            if builtin in targets and not code.customCode and weights_index >= 0:
                new = _int8_weight(model, subgraph, weights_index, buffer_users, tensor_users)
                if new is not None:
                    if dequantize_index is None:
                        dequantize = schema.BuiltinOperator.DEQUANTIZE
                        dequantize_index = _operator_code(model, dequantize, version=5)
                    dequantize = schema.OperatorT()
                    dequantize.opcodeIndex = dequantize_index
                    dequantize.inputs = [new]
                    dequantize.outputs = [weights_index]
                    operators.append(dequantize)
                    tensor = subgraph.tensors[weights_index]
                    name = tensor.name.decode(errors="replace") if tensor.name else "?"
                    info["tensors"].append(f"{name} ({names.get(builtin)})")
                    info["int8_bytes"] += int(np.prod(tensor.shape))
                    info["float_bytes"] += 4 * int(np.prod(tensor.shape))
            operators.append(op)
        subgraph.operators = operators
    if not info["tensors"]:
        return flatbuffer, info
    return _pack(model), info


def _operator_code(model, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
            code.version = max(code.version, version)
            return i
    code = _schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _int8_weight(model, subgraph, index: int, buffer_users, tensor_users) -> Optional[int]:
    """Add the int8 version of float tensor `index` if exact; return its index (or None)."""
    schema = _schema()
    tensor = subgraph.tensors[index]
    if tensor.type != schema.TensorType.FLOAT32 or tensor.buffer <= 0 or tensor.shape is None:
        return None
    if len(tensor.shape) < 2 or buffer_users[tensor.buffer] != 1 or tensor_users[index] != 1:
        return None
    quantization = tensor.quantization
    if quantization is not None and quantization.scale is not None and len(quantization.scale):
        return None
    buffer = model.buffers[tensor.buffer]
    size = int(np.prod(tensor.shape))
    if buffer.data is None or len(buffer.data) != 4 * size:
        return None
    raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    rows = np.frombuffer(raw, dtype="<f4").reshape(int(tensor.shape[0]), -1)
    scale = np.abs(rows).max(axis=1)
    if not np.all(np.isfinite(scale)):
        return None
    scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    q = np.rint(rows / scale[:, None]).astype(np.float32)
    # What DEQUANTIZE computes, float32(scale) * float32(q), must be every weight, bit for bit.
    if not (np.all(np.abs(q) <= 1) and np.array_equal(q * scale[:, None], rows)):
        return None
    data = schema.BufferT()
    data.data = np.frombuffer(q.astype(np.int8).tobytes(), dtype=np.uint8)
    model.buffers.append(data)
    new_quantization = schema.QuantizationParametersT()
    new_quantization.scale = [float(s) for s in scale]
    new_quantization.zeroPoint = [0] * len(scale)
    new_quantization.quantizedDimension = 0
    new = schema.TensorT()
    new.shape = list(tensor.shape)
    new.type = schema.TensorType.INT8
    new.buffer = len(model.buffers) - 1
    new.name = (tensor.name or b"weights") + b"/int8"
    new.quantization = new_quantization
    subgraph.tensors.append(new)
    # The float tensor now holds DEQUANTIZE's output: drop its constant data.
    buffer.data = None
    tensor.buffer = 0
    return len(subgraph.tensors) - 1


# --------------------------------------------------------------------------------------------
# Conversion, interpreters, latency
# --------------------------------------------------------------------------------------------


def _lce():
    try:
        import larq_compute_engine
    except ImportError as error:  # pragma: no cover - optional dependency
        raise ExportError(
            "Exporting needs larq-compute-engine: pip install 'larq-meta[export]' "
            "(larq-compute-engine 0.16)."
        ) from error
    return larq_compute_engine


def _name_layers(message: str, model: tf.keras.Model) -> list[str]:
    return [
        layer.name
        for layer in _all_layers(model)
        if f"/{layer.name}/" in message or f"'{layer.name}'" in message
    ]


def _convert_lce(
    model: tf.keras.Model, converter_kwargs: Mapping[str, Any], conversion: str = "saved_model"
) -> tuple[bytes, str]:
    lce = _lce()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if conversion == "saved_model":
                flatbuffer = lce.convert_keras_model(model, **converter_kwargs)
            else:
                flatbuffer = _convert_lce_graphdef(model, **converter_kwargs)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            layers = _name_layers(str(error), model)
            where = f" (layers named in the error: {layers})" if layers else ""
            raise ExportError(
                f"Larq Compute Engine could not convert model '{model.name}'{where}: "
                f"{type(error).__name__}: {error}"
            ) from error
    if conversion == "graphdef":
        how = "frozen graph (LCE's graphdef path)"
    elif any("falling back to graphdef" in str(w.message) for w in caught):
        how = "convert_keras_model (SavedModel failed, graphdef fallback)"
    else:
        how = "convert_keras_model (SavedModel)"
    return flatbuffer, f"larq_compute_engine {lce.__version__} {how}"


def _convert_lce_graphdef(
    model: tf.keras.Model,
    *,
    target: str = "arm",
    experimental_default_int8_range=None,
    inference_input_type=tf.float32,
    inference_output_type=tf.float32,
) -> bytes:
    """LCE's own fallback path of `convert_keras_model` (a frozen concrete function), without
    first saving a SavedModel: same operators, several seconds faster."""
    from larq_compute_engine.mlir._tf_tfl_flatbuffer import convert_graphdef_to_tflite_flatbuffer
    from larq_compute_engine.mlir.python.converter import (
        _contains_training_quant_op,
        _validate_options,
        concrete_function_from_keras_model,
    )
    from larq_compute_engine.mlir.python.util import modify_integer_quantized_model_io_type
    from tensorflow.core.framework.types_pb2 import DataType
    from tensorflow.lite.python.util import get_tensor_name
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _validate_options(
        inference_input_type=inference_input_type,
        inference_output_type=inference_output_type,
        target=target,
        experimental_default_int8_range=experimental_default_int8_range,
    )
    func = concrete_function_from_keras_model(model)
    frozen = convert_variables_to_constants_v2(func, lower_control_flow=False)
    inputs = [t for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    graph_def = frozen.graph.as_graph_def()
    quantize = _contains_training_quant_op(graph_def) or experimental_default_int8_range is not None
    shapes = []
    for tensor in inputs:
        shape = tensor.shape.as_list()
        if None in shape[1:]:
            raise ValueError(
                "None is only supported in the batch dimension; input "
                f"{get_tensor_name(tensor)!r} has shape {shape}."
            )
        if shape and shape[0] is None:
            shape[0] = 1
        shapes.append(shape)
    flatbuffer = convert_graphdef_to_tflite_flatbuffer(
        graph_def.SerializeToString(),
        [get_tensor_name(t) for t in inputs],
        [DataType.Name(t.dtype.as_datatype_enum) for t in inputs],
        shapes,
        [get_tensor_name(t) for t in frozen.outputs],
        quantize,
        target,
        experimental_default_int8_range,
    )
    if quantize and (inference_input_type != tf.float32 or inference_output_type != tf.float32):
        flatbuffer = modify_integer_quantized_model_io_type(
            flatbuffer,
            inference_input_type=inference_input_type,
            inference_output_type=inference_output_type,
        )
    return flatbuffer


def _layers_using_tf_ops(model: tf.keras.Model, op_types: set[str]) -> dict[str, list[str]]:
    """Which layers of `model` create TF ops of the given types (read from its traced graph)."""
    try:
        from larq_compute_engine.mlir.python.converter import concrete_function_from_keras_model

        graph_def = concrete_function_from_keras_model(model).graph.as_graph_def()
    except Exception:  # noqa: BLE001 - best effort, for an error message
        return {}
    names = {layer.name for layer in _all_layers(model)}
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    found: dict[str, set[str]] = {}
    for node in nodes:
        if node.op in op_types:
            found.setdefault(node.op, set()).update(names & set(node.name.split("/")))
    return {op: sorted(layers) for op, layers in found.items() if layers}


def _check_runnable(flatbuffer: bytes, model: tf.keras.Model) -> None:
    """LCE's converter leaves TF ops it cannot lower as custom ops no LCE runtime provides."""
    unknown: dict[str, list[str]] = {}
    builtins = set(_builtin_names().values())
    for op, outputs in _operators(flatbuffer):
        if op not in builtins and not op.startswith("BUILTIN_") and op not in LCE_CUSTOM_OPS:
            unknown.setdefault(op, []).extend(outputs)
    if unknown:
        by_graph = _layers_using_tf_ops(model, set(unknown))
        details = []
        for op, outputs in unknown.items():
            message = " ".join(f"/{o}/" for o in outputs)
            layers = by_graph.get(op) or sorted(set(_name_layers(message, model)))
            plural = "s" if len(layers) != 1 else ""
            details.append(f"{op} (from layer{plural} {layers or outputs})")
        raise ExportError(
            f"Larq Compute Engine could not convert model '{model.name}' to operators its runtime "
            f"provides: {'; '.join(details)} would be left as TensorFlow custom ops."
        )


def _bf16_layers(model: tf.keras.Model) -> list[str]:
    return [layer.name for layer in _all_layers(model) if isinstance(layer, BF16QuantDense)]


def _with_float32_products(model: tf.keras.Model) -> tuple[tf.keras.Model, list[str]]:
    """`model`, or a rebuilt copy (`_rebuild`, no dense rewrite) whose `BF16QuantDense`
    layers are plain `QuantDense` with the same weights, and the names of those layers."""
    names = _bf16_layers(model)
    if not names:
        return model, []
    try:
        return _rebuild(model, set()), names
    except ExportError as error:
        raise ExportError(
            f"Cannot copy model '{model.name}' to replace its BF16QuantDense layers {names} "
            f"({error}). Rebuild it with compute_dtype='float32' and copy the weights."
        ) from error


def float_tflite(model: tf.keras.Model) -> bytes:
    """The same network converted by the stock `tf.lite.TFLiteConverter` (no LCE): larq's
    quantizers become ordinary float ops (SIGN, ADD) and binary kernels float `±1` weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _lce_interpreter(flatbuffer: bytes, num_threads: int = 1, **options):
    lce = _lce()
    try:
        return lce.testing.Interpreter(flatbuffer, num_threads=num_threads, **options)
    except RuntimeError as error:
        raise ExportError(f"LCE's interpreter cannot load the flatbuffer: {error}") from error


def _run_lce(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of the flatbuffer (batch size 1, as LCE converts) for every sample of `x`."""
    interpreter = _lce_interpreter(flatbuffer)
    batch = interpreter.input_shapes[0][0]
    if batch not in (1, -1):
        raise ExportError(f"The flatbuffer has a fixed batch size {batch}; parity needs 1.")
    try:
        out = interpreter.predict(x)
    except RuntimeError as error:
        raise ExportError(f"LCE's interpreter failed to run the flatbuffer: {error}") from error
    return np.asarray(out).reshape(len(x), -1)


def _tflite_interpreter(flatbuffer: bytes, num_threads: int = 1, xnnpack: bool = True):
    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(
            model_content=flatbuffer,
            num_threads=num_threads,
            experimental_op_resolver_type=(
                resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )


def _run_tflite(flatbuffer: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of the float flatbuffer, in batches (one batch of 10k images of a convnet
    would need gigabytes of activations and fails to allocate)."""
    interpreter = _tflite_interpreter(flatbuffer, xnnpack=False)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    outs, shape = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if chunk.shape != shape:
            interpreter.resize_tensor_input(index, list(chunk.shape))
            interpreter.allocate_tensors()
            shape = chunk.shape
        interpreter.set_tensor(index, chunk)
        interpreter.invoke()
        outs.append(interpreter.get_tensor(output).reshape(len(chunk), -1))
    return np.concatenate(outs)


def _keras_predict(model: tf.keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = [
        np.asarray(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).reshape(len(x), -1)


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
        interpreter = _lce_interpreter(
            flatbuffer, num_threads=num_threads, use_indirect_bgemm=use_indirect_bgemm
        )
        x = [rng.random(interpreter.input_shapes[0], dtype=np.float32)]
        raw = interpreter.interpreter

        def step():
            raw.predict(x)

    elif runtime == "tflite":
        interpreter = _tflite_interpreter(flatbuffer, num_threads=num_threads, xnnpack=xnnpack)
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
    round's median is kept), plus ratios float/LCE (> 1: LCE faster). LCE's optimized
    kernels target ARM; on x86 these are only indicative."""
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


# --------------------------------------------------------------------------------------------
# to_lce
# --------------------------------------------------------------------------------------------


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


def _parity_inputs(model: tf.keras.Model, parity_data, samples: int):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"Parity checking supports single-input single-output models; '{model.name}' has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs (pass parity=False)."
        )
    shape = tuple(model.input_shape[1:])
    if parity_data is None:
        if None in shape:
            raise ExportError(f"Model '{model.name}' has input shape {shape}: pass `parity_data`.")
        x = np.random.default_rng(0).random((samples,) + shape, dtype=np.float32)
        return x, None, RANDOM_PARITY
    if isinstance(parity_data, (tuple, list)) and len(parity_data) == 2:
        x, y = parity_data
    else:
        x, y = parity_data, None
    x = np.asarray(x, dtype=np.float32)
    if x.shape == shape:  # one sample
        x = x[None]
    if x.ndim >= 1 and len(x) and int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        x = x.reshape((len(x),) + shape)  # e.g. (n, 28, 28) for a (28, 28, 1) input
    if tuple(x.shape[1:]) != shape:
        raise ExportError(
            f"`parity_data` has sample shape {x.shape[1:]}, model '{model.name}' expects {shape}."
        )
    if y is not None:
        y = np.asarray(y)
        y = y.argmax(-1) if y.ndim > 1 else y
        if len(y) != len(x):
            raise ExportError(f"`parity_data` has {len(x)} inputs but {len(y)} labels.")
    return x, y, "given"


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


def _write_atomic(path: str, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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
    report: bool = True,
    **converter_kwargs,
) -> ExportReport:
    """Convert `model` to a Larq Compute Engine flatbuffer at `path` and check it.

    # Arguments
        model: A built Keras/Larq model (e.g. `paper_mlp`, `binary_convnet`).
        path: Output `.tflite` file; written atomically, only if everything succeeded.
            None: convert and check only (the bytes are in `report.flatbuffer`).
        task: Export with task `task`'s BatchNorm state from `bn_snapshots` loaded (the live
            model keeps its own state).
        bn_snapshots: Per-task BatchNorm snapshots: a list whose item `k` is the
            `snapshot_batchnorm` dict saved after task `k` (`SequenceResult.bn_snapshots`), or
            a mapping task -> snapshot. `None` items count as missing.
        parity_data: `(x, y)` or `x` to compare Keras and LCE on. Default: `parity_samples`
            random inputs uniform in [0, 1), which checks the arithmetic but not behaviour on
            real data; real data is better (it also yields accuracies with labels).
        parity: Run the parity check with LCE's interpreter.
        parity_samples: Number of random parity inputs (ignored with `parity_data`).
        min_argmax_agreement: Raise ParityError (nothing written) below this argmax agreement.
        max_abs_diff: Raise ParityError (nothing written) above this max |logit difference|.
        rewrite_dense: True: rewrite every binarized QuantDense into a 1x1 binary
            QuantConv2D (others are left as they are, with a note); False: none; a list of
            layer names: exactly those, ExportError naming a layer that cannot be rewritten.
        compact_weights: "int8": store float weights that are `±a` per output channel
            (binary kernels of layers with real-valued inputs) as exact int8 + DEQUANTIZE;
            None: leave the converter's float32 weights.
        float_reference: Also convert with the stock TFLite converter for the size
            comparison (and informative parity).
        conversion: "saved_model": `larq_compute_engine.convert_keras_model` (saves a
            SavedModel and converts it; LCE itself falls back to a frozen graph if that
            fails); "graphdef": LCE's frozen-graph path directly (same operators, faster).
        report: Print the report table.
        **converter_kwargs: Passed to `larq_compute_engine.convert_keras_model` (e.g.
            `target="xcore"`); keep the default float32 input/output for the parity check.

    # Returns
        An `ExportReport`.

    # Raises
        ExportError: unsupported model/layer/task index, failed conversion; ParityError.
    """
    started = time.perf_counter()
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
    if not parity and (min_argmax_agreement is not None or max_abs_diff is not None):
        raise ExportError("Parity thresholds need the parity check (parity=True).")
    path = _check_path(path)
    snapshot = _select_snapshot(task, bn_snapshots)
    if snapshot is not None:
        bn_names = {layer.name for layer in batchnorm_layers(model)}
        if set(snapshot) != bn_names:
            raise ExportError(
                f"The BatchNorm snapshot of task {task} does not fit model '{model.name}': "
                f"layers without a snapshot {sorted(bn_names - set(snapshot))}, snapshot entries "
                f"without a layer {sorted(set(snapshot) - bn_names)}."
            )
    model, float32_products = _with_float32_products(model)
    targets, skipped = _plan_rewrite(model, rewrite_dense)
    notes = [
        f"QuantDense '{name}' stays a float FULLY_CONNECTED: {why}."
        for name, why in skipped.items()
    ]
    if float32_products:
        notes.append(
            f"BF16QuantDense {float32_products} exported as QuantDense (same weights; the "
            "bfloat16 products are a training-speed option; parity is against float32 products)."
        )
    if parity:
        x, y, data_source = _parity_inputs(model, parity_data, parity_samples)

    keras_out = rewritten_out = float_fb = None
    with using_batchnorm(model, snapshot):
        export_model = _rebuild(model, {id(layer) for layer in targets}) if targets else model
        flatbuffer, converter = _convert_lce(export_model, converter_kwargs, conversion)
        _check_runnable(flatbuffer, model)
        if float_reference:
            try:
                float_fb = float_tflite(model)
            except Exception as error:  # noqa: BLE001 - a reference only
                notes.append(f"float TFLite reference failed: {type(error).__name__}: {error}")
        if parity:
            keras_out = _keras_predict(model, x)
            if targets:
                rewritten_out = _keras_predict(export_model, x)

    converted_fb = flatbuffer
    compaction: dict[str, Any] = {
        "mode": compact_weights,
        "tensors": [],
        "float_bytes": 0,
        "int8_bytes": 0,
        "size_without_compaction": len(flatbuffer),
        "verified_identical": None,
    }
    if compact_weights == "int8":
        flatbuffer, info = compact_binary_float_weights(flatbuffer)
        compaction.update(info)

    parity_result = None
    if parity:
        lce_out = _run_lce(flatbuffer, x)
        if compaction["tensors"]:
            identical = bool(np.array_equal(lce_out, _run_lce(converted_fb, x)))
            compaction["verified_identical"] = identical
            if not identical:
                notes.append(
                    "int8 weights changed outputs on the parity sample: kept float32 weights."
                )
                flatbuffer, lce_out = converted_fb, _run_lce(converted_fb, x)
                compaction.update(tensors=[], float_bytes=0, int8_bytes=0)
        diff = np.abs(lce_out.astype(np.float64) - keras_out)
        parity_result = ParityResult(
            samples=len(x),
            data=data_source,
            argmax_agreement=float(np.mean(lce_out.argmax(1) == keras_out.argmax(1))),
            max_abs_diff=float(diff.max()) if diff.size else 0.0,
            samples_over_tolerance=int(np.sum(diff.reshape(len(x), -1).max(axis=1) > PARITY_TOLERANCE))
            if diff.size else 0,
        )
        if y is not None:
            parity_result.keras_accuracy = float(np.mean(keras_out.argmax(1) == y))
            parity_result.lce_accuracy = float(np.mean(lce_out.argmax(1) == y))
        if rewritten_out is not None:
            parity_result.rewrite_max_abs_diff = float(np.abs(rewritten_out - keras_out).max())
            parity_result.rewrite_identical = bool(np.array_equal(rewritten_out, keras_out))
        if float_fb is not None:
            try:
                float_out = _run_tflite(float_fb, x)
            except Exception as error:  # noqa: BLE001 - informative only
                notes.append(f"float TFLite parity not measured: {error}")
            else:
                agreement = np.mean(float_out.argmax(1) == keras_out.argmax(1))
                parity_result.float_tflite_argmax_agreement = float(agreement)
                parity_result.float_tflite_max_abs_diff = float(np.abs(float_out - keras_out).max())
        if data_source == RANDOM_PARITY:
            notes.append(
                "parity measured on random inputs; pass real parity_data for a stronger check."
            )
    else:
        notes.append("parity not checked (parity=False).")

    counts = op_counts(flatbuffer)
    binary_ops = sum(counts.get(op, 0) for op in LCE_BINARY_OPS)
    rewritten = [layer.name for layer in targets]
    layer_names = [layer.name for layer in _all_layers(model)]
    float_ops = {
        name: "/".join(sorted(set(ops) & _FLOAT_OPS))
        for name, ops in _ops_by_layer(flatbuffer, layer_names).items()
    }
    binarized, float_layers = _layer_report(model, set(rewritten), skipped, float_ops)
    if binary_ops != len(binarized):
        notes.append(
            f"{len(binarized)} binarized layers but {binary_ops} LCE binary ops: not every "
            "binarized layer runs as a binary operator."
        )

    result = ExportReport(
        path=path,
        model_name=model.name,
        task=None if task is None else int(task),
        size_bytes=len(flatbuffer),
        float_tflite_size_bytes=None if float_fb is None else len(float_fb),
        op_counts=counts,
        binarized_layers=binarized,
        binary_ops=binary_ops,
        rewritten_layers=rewritten,
        float_layers=float_layers,
        compaction=compaction,
        parity=parity_result,
        notes=notes,
        converter=converter,
        versions=_versions(),
        seconds=time.perf_counter() - started,
        flatbuffer=flatbuffer,
        float_flatbuffer=float_fb,
    )
    if parity_result is not None:
        failures = []
        agreement, worst = parity_result.argmax_agreement, parity_result.max_abs_diff
        if min_argmax_agreement is not None and agreement < min_argmax_agreement:
            failures.append(f"argmax agreement {agreement:.4f} < {min_argmax_agreement}")
        if max_abs_diff is not None and worst > max_abs_diff:
            failures.append(f"max |diff| {worst:.3g} > {max_abs_diff}")
        if failures:
            raise ParityError(
                f"LCE flatbuffer of '{model.name}' disagrees with Keras: {'; '.join(failures)}; "
                f"nothing written{'' if path is None else f' to {path}'}."
            )
    if path is not None:
        _write_atomic(path, flatbuffer)
    result.seconds = time.perf_counter() - started
    if report:
        print(result)
    return result


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"tensorflow": tf.__version__}
    for package in ("tf-keras", "larq", "larq-compute-engine"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover
            versions[package] = "unknown"
    return versions


# --------------------------------------------------------------------------------------------
# BatchNorm snapshot files and the command line
# --------------------------------------------------------------------------------------------


def save_bn_snapshots(
    path: PathLike, bn_snapshots: Sequence[Optional[Mapping[str, Sequence]]]
) -> None:
    """Save per-task BatchNorm snapshots as `.npz`: key `"{task}/{layer}/{i}"` holds weight
    `i` (0 gamma, 1 beta, 2 moving mean, 3 moving variance for an affine BatchNorm) of
    BatchNorm layer `layer` after task `task`. `None` items (no snapshot) are left out."""
    arrays = {}
    for k, snapshot in enumerate(bn_snapshots):
        for name, weights in (snapshot or {}).items():
            for i, w in enumerate(weights):
                arrays[f"{k}/{name}/{i}"] = np.asarray(w)
    np.savez(path, **arrays)


def load_bn_snapshots(path: PathLike) -> list[Optional[dict[str, list[np.ndarray]]]]:
    """Read a `save_bn_snapshots` file: a list (index = task), `None` for absent tasks."""
    found: dict[int, dict[str, dict[int, np.ndarray]]] = {}
    with np.load(path) as data:
        for key in data.files:
            try:
                task, rest = key.split("/", 1)
                name, index = rest.rsplit("/", 1)
                task_k, i = int(task), int(index)
            except ValueError as error:
                raise ExportError(
                    f"{os.fspath(path)}: key {key!r} is not '<task>/<layer>/<weight index>'."
                ) from error
            found.setdefault(task_k, {}).setdefault(name, {})[i] = data[key]
    snapshots: list[Optional[dict]] = [None] * (max(found) + 1 if found else 0)
    for k, layers in found.items():
        snapshots[k] = {name: [w[i] for i in sorted(w)] for name, w in layers.items()}
    return snapshots


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-meta export",
        description="Convert a saved Keras/Larq model to a Larq Compute Engine .tflite file, "
        "binary dense layers included, and check it against Keras.",
    )
    parser.add_argument("model_path", help="a .keras (or .h5/SavedModel) file from model.save")
    parser.add_argument("output_path", help="the .tflite file to write")
    parser.add_argument(
        "--task", type=int, default=None, help="export with task K's BatchNorm state"
    )
    parser.add_argument(
        "--bn-snapshots",
        default=None,
        metavar="FILE.npz",
        help="per-task BatchNorm snapshots written by larq_meta.export.save_bn_snapshots: key "
        "'<task>/<bn layer>/<i>' holds weight i (gamma, beta, moving mean, moving variance)",
    )
    parser.add_argument(
        "--parity-data",
        default=None,
        metavar="FILE.npz",
        help="arrays 'x' (and optionally 'y') to check parity on; default: random inputs",
    )
    parser.add_argument(
        "--parity-samples", type=int, default=256, help="random parity inputs (default 256)"
    )
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument(
        "--no-rewrite", action="store_true", help="keep QuantDense as float FULLY_CONNECTED"
    )
    parser.add_argument(
        "--no-compact", action="store_true", help="keep float32 weights for float layers"
    )
    parser.add_argument(
        "--min-agreement", type=float, default=None, help="fail below this argmax agreement"
    )
    parser.add_argument(
        "--max-diff", type=float, default=None, help="fail above this max |logit difference|"
    )
    parser.add_argument(
        "--conversion",
        choices=CONVERSIONS,
        default="saved_model",
        help="saved_model: larq_compute_engine.convert_keras_model (default); graphdef: LCE's "
        "frozen-graph path (same operators, faster)",
    )
    parser.add_argument(
        "--no-float-reference", action="store_true", help="skip the float TFLite size reference"
    )
    parser.add_argument(
        "--float-output",
        default=None,
        metavar="FILE.tflite",
        help="also write the plain float TFLite conversion (the size/latency baseline)",
    )
    parser.add_argument(
        "--report-json", default=None, metavar="FILE.json", help="also write the report as JSON"
    )
    return parser


def load_model(path: PathLike) -> tf.keras.Model:
    """Load a model saved with larq (and larq_meta) layers, without compiling it."""
    import larq_meta.optimizers  # noqa: F401 - registers MetaplasticAdam

    if not os.path.exists(path):
        raise ExportError(f"Model file {os.fspath(path)!r} does not exist.")
    try:
        with unclipped_kernels_by_design():
            return tf.keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001
        raise ExportError(
            f"Cannot load model {os.fspath(path)!r}: {type(error).__name__}: {error}"
        ) from error


def export_main(argv: Optional[list[str]] = None) -> int:
    """`larq-meta export MODEL.keras OUT.tflite [--task K --bn-snapshots S.npz] ...`

    Returns 0 on success, 1 on an export error (message on stderr); bad arguments exit with
    argparse's status 2.
    """
    import json

    args = _parser().parse_args(argv)
    try:
        model = load_model(args.model_path)
        snapshots = None
        if args.bn_snapshots is not None:
            if not os.path.exists(args.bn_snapshots):
                raise ExportError(f"BatchNorm snapshot file {args.bn_snapshots!r} does not exist.")
            snapshots = load_bn_snapshots(args.bn_snapshots)
        parity_data = None
        if args.parity_data is not None:
            with np.load(args.parity_data) as data:
                parity_data = (data["x"], data["y"]) if "y" in data.files else data["x"]
        result = to_lce(
            model,
            args.output_path,
            task=args.task,
            bn_snapshots=snapshots,
            parity_data=parity_data,
            parity=not args.no_parity,
            parity_samples=args.parity_samples,
            min_argmax_agreement=args.min_agreement,
            max_abs_diff=args.max_diff,
            rewrite_dense=not args.no_rewrite,
            compact_weights=None if args.no_compact else "int8",
            float_reference=not args.no_float_reference,
            conversion=args.conversion,
            report=True,
        )
        if args.float_output and result.float_flatbuffer is not None:
            _write_atomic(args.float_output, result.float_flatbuffer)
        if args.report_json:
            with open(args.report_json, "w") as f:
                json.dump(result.to_dict(), f, indent=2)
    except ExportError as error:
        print(f"larq-meta export: error: {error}", file=sys.stderr)
        return 1
    return 0
