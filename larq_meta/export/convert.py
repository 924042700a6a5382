"""Conversion: Keras -> LCE flatbuffer (LCE's SavedModel path or its frozen-graph path), the
stock float TFLite conversion used as the size baseline, and the check that what LCE wrote
runs on LCE's runtime."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import tensorflow as tf

from larq_meta._compat import lce_graphdef_path
from larq_meta._utils import iter_layers
from larq_meta.export.errors import ExportError
from larq_meta.export.flatbuffer import LCE_CUSTOM_OPS, builtin_names, operators

__all__ = [
    "CONVERSIONS",
    "Conversion",
    "lce_module",
    "convert_lce",
    "check_runnable",
    "float_tflite",
    "versions",
]

#: Values of `conversion`.
CONVERSIONS = ("saved_model", "graphdef")


class Conversion(NamedTuple):
    """What `convert_lce` returns: the flatbuffer and a description of the path taken."""

    flatbuffer: bytes
    converter: str


def lce_module():
    """`larq_compute_engine`, or ExportError saying how to install it."""
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
        for layer in iter_layers(model)
        if f"/{layer.name}/" in message or f"'{layer.name}'" in message
    ]


def convert_lce(
    model: tf.keras.Model, *, conversion: str = "saved_model", **converter_kwargs: Any
) -> Conversion:
    """Convert `model` with Larq Compute Engine (no rewrite, no checks).

    !!! example
        ```python
        flatbuffer, how = convert_lce(model, conversion="graphdef")
        ```

    # Arguments
        model: A Keras/Larq model.
        conversion: "saved_model": `larq_compute_engine.convert_keras_model` (saves a
            SavedModel and converts it; LCE itself falls back to a frozen graph if that
            fails); "graphdef": LCE's frozen-graph path directly (same operators, faster).
        **converter_kwargs: Passed to the converter (e.g. `target="xcore"`).

    # Returns
        A `Conversion(flatbuffer, converter)`; `converter` names LCE's version and the path.

    # Raises
        ExportError: the conversion failed (naming the layers the converter's error names).
    """
    if conversion not in CONVERSIONS:
        raise ExportError(f"`conversion` must be one of {CONVERSIONS}, got {conversion!r}.")
    lce = lce_module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if conversion == "saved_model":
                flatbuffer = lce.convert_keras_model(model, **converter_kwargs)
            else:
                flatbuffer = _convert_graphdef(model, **converter_kwargs)
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
    return Conversion(flatbuffer, f"larq_compute_engine {lce.__version__} {how}")


def _convert_graphdef(
    model: tf.keras.Model,
    *,
    target: str = "arm",
    experimental_default_int8_range=None,
    inference_input_type=tf.float32,
    inference_output_type=tf.float32,
) -> bytes:
    """LCE's own fallback path of `convert_keras_model` (a frozen concrete function), without
    first saving a SavedModel: same operators, several seconds faster."""
    from tensorflow.core.framework.types_pb2 import DataType

    lce = lce_graphdef_path()
    lce.validate_options(
        inference_input_type=inference_input_type,
        inference_output_type=inference_output_type,
        target=target,
        experimental_default_int8_range=experimental_default_int8_range,
    )
    func = lce.concrete_function_from_keras_model(model)
    frozen = lce.convert_variables_to_constants_v2(func, lower_control_flow=False)
    inputs = [t for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    graph_def = frozen.graph.as_graph_def()
    quantize = (
        lce.contains_training_quant_op(graph_def) or experimental_default_int8_range is not None
    )
    shapes = []
    for tensor in inputs:
        shape = tensor.shape.as_list()
        if None in shape[1:]:
            raise ValueError(
                "None is only supported in the batch dimension; input "
                f"{lce.get_tensor_name(tensor)!r} has shape {shape}."
            )
        if shape and shape[0] is None:
            shape[0] = 1
        shapes.append(shape)
    flatbuffer = lce.convert_graphdef_to_tflite_flatbuffer(
        graph_def.SerializeToString(),
        [lce.get_tensor_name(t) for t in inputs],
        [DataType.Name(t.dtype.as_datatype_enum) for t in inputs],
        shapes,
        [lce.get_tensor_name(t) for t in frozen.outputs],
        quantize,
        target,
        experimental_default_int8_range,
    )
    if quantize and (inference_input_type != tf.float32 or inference_output_type != tf.float32):
        flatbuffer = lce.modify_integer_quantized_model_io_type(
            flatbuffer,
            inference_input_type=inference_input_type,
            inference_output_type=inference_output_type,
        )
    return flatbuffer


def _layers_using_tf_ops(model: tf.keras.Model, op_types: set[str]) -> dict[str, list[str]]:
    """Which layers of `model` create TF ops of the given types (read from its traced graph)."""
    try:
        function = lce_graphdef_path().concrete_function_from_keras_model(model)
        graph_def = function.graph.as_graph_def()
    except Exception:  # noqa: BLE001 - best effort, for an error message
        return {}
    names = {layer.name for layer in iter_layers(model)}
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    found: dict[str, set[str]] = {}
    for node in nodes:
        if node.op in op_types:
            found.setdefault(node.op, set()).update(names & set(node.name.split("/")))
    return {op: sorted(layers) for op, layers in found.items() if layers}


def check_runnable(flatbuffer: bytes, model: tf.keras.Model) -> None:
    """ExportError if the flatbuffer holds operators no LCE runtime provides (TF ops LCE's
    converter could not lower and left as custom ops), naming them and the layers using them."""
    unknown: dict[str, list[str]] = {}
    builtins = set(builtin_names().values())
    for op, outputs in operators(flatbuffer):
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


def float_tflite(model: tf.keras.Model) -> bytes:
    """The same network converted by the stock `tf.lite.TFLiteConverter` (no LCE).

    larq's quantizers become ordinary float ops (SIGN, ADD) and binary kernels float `±1`
    weights: the size and latency baseline of an export.

    # Arguments
        model: A Keras/Larq model.

    # Returns
        The flatbuffer bytes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def versions() -> dict[str, str]:
    """Installed versions of the packages an export depends on."""
    from importlib import metadata

    found = {"tensorflow": tf.__version__}
    for package in ("tf-keras", "larq", "larq-compute-engine"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover
            found[package] = "unknown"
    return found
