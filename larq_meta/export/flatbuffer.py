"""Reading and editing TFLite flatbuffers: operator counts and exact int8 weight storage.

The flatbuffer is read and rewritten with LCE's copy of the TFLite schema (its generated
Python classes, reached through `larq_meta._compat`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import numpy as np

from larq_meta._compat import lce_tflite_schema

__all__ = [
    "LCE_CUSTOM_OPS",
    "LCE_BINARY_OPS",
    "FLOAT_OPS",
    "builtin_names",
    "operators",
    "op_counts",
    "ops_by_layer",
    "compact_binary_float_weights",
    "tensor_table",
    "with_outputs",
]

#: Custom operators the LCE runtime (interpreter, Android benchmark tool) provides.
LCE_CUSTOM_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
#: LCE's binary operators: what a binarized layer must become.
LCE_BINARY_OPS = ("LceBconv2d",)
#: Float operators that carry a layer's weights.
FLOAT_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"})

_TFLITE_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16  # the schema's `force_align: 16` on buffer data


def builtin_names() -> dict[int, str]:
    """TFLite builtin operator code -> name (e.g. 9 -> "FULLY_CONNECTED")."""
    operators_ = vars(lce_tflite_schema().BuiltinOperator).items()
    return {v: k for k, v in operators_ if not k.startswith("_") and isinstance(v, int)}


def _op_name(code, names: Mapping[int, str]) -> str:
    custom = code.CustomCode()
    if custom:
        return custom.decode(errors="replace")
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    return names.get(builtin, f"BUILTIN_{builtin}")


def operators(flatbuffer: bytes, inputs: bool = False) -> list[tuple[str, list[str]]]:
    """`(operator name, [output tensor names])` for every operator of every subgraph, in
    order; with `inputs=True` the input tensor names follow the outputs."""
    model = lce_tflite_schema().Model.GetRootAsModel(flatbuffer, 0)
    names = builtin_names()
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
    """How many of each operator a TFLite flatbuffer holds.

    !!! example
        ```python
        op_counts(report.flatbuffer)  # {"LceBconv2d": 2, "FULLY_CONNECTED": 1, ...}
        ```

    # Arguments
        flatbuffer: The bytes of a `.tflite` file.

    # Returns
        Operator name (builtin name such as `FULLY_CONNECTED`, or custom code such as
        `LceBconv2d`) -> count.
    """
    return dict(Counter(name for name, _ in operators(flatbuffer)))


def ops_by_layer(flatbuffer: bytes, layer_names: Iterable[str]) -> dict[str, list[str]]:
    """Best effort: layer name -> the operators whose tensor names mention it (`.../name/...`)."""
    wanted = set(layer_names)
    found: dict[str, list[str]] = {}
    for op, tensors in operators(flatbuffer, inputs=True):
        parts = {p for name in tensors for piece in name.split(";") for p in piece.split("/")}
        for name in wanted & parts:
            found.setdefault(name, []).append(op)
    return found


def tensor_table(flatbuffer: bytes) -> list[dict[str, Any]]:
    """The tensors of the first subgraph that an operator computes, in execution order:
    `{"index", "name", "shape", "type" (a `TensorType` name), "op", "inputs" (tensor indices),
    "consumers" (names of the operators reading it), "output" (a subgraph output)}`."""
    schema = lce_tflite_schema()
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = builtin_names()
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [_op_name(model.OperatorCodes(i), names) for i in range(model.OperatorCodesLength())]
    subgraph = model.Subgraphs(0)
    table, consumers = [], {}
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        name = codes[op.OpcodeIndex()]
        inputs = [op.Inputs(j) for j in range(op.InputsLength())]
        for t in inputs:
            consumers.setdefault(t, []).append(name)
        for j in range(op.OutputsLength()):
            t = subgraph.Tensors(op.Outputs(j))
            table.append({
                "index": op.Outputs(j),
                "name": t.Name().decode(errors="replace"),
                "shape": tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                "type": types.get(t.Type(), str(t.Type())),
                "op": name,
                "inputs": [t for t in inputs if t >= 0],
            })
    outputs = {subgraph.Outputs(j) for j in range(subgraph.OutputsLength())}
    for row in table:
        row["consumers"] = consumers.get(row["index"], [])
        row["output"] = row["index"] in outputs
    return table


def with_outputs(flatbuffer: bytes, tensors: Iterable[int]) -> bytes:
    """The same flatbuffer with tensors `tensors` of the first subgraph appended to its outputs
    (after the original ones), so that an interpreter returns them: a way to read intermediate
    tensors from interpreters that do not keep them (LCE's). Operators are unchanged."""
    schema = lce_tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    subgraph = model.subgraphs[0]
    outputs = [int(i) for i in subgraph.outputs]
    subgraph.outputs = outputs + [int(t) for t in tensors if int(t) not in outputs]
    return _pack(model)


def _pack_aligned_buffer(buffer, builder):
    """`BufferT.Pack` with the data 16-byte aligned, as the schema's `force_align` asks (the
    generated Python code aligns uint8 vectors to 1 byte only)."""
    schema = lce_tflite_schema()
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
    $w_{c,i} = \\pm a_c$ for every output channel $c$. They are replaced by an int8 tensor
    $q_{c,i} = w_{c,i} / a_c \\in \\{-1, 1\\}$ with the per-channel scale $a_c$ (zero point 0),
    dequantized to float32 by a `DEQUANTIZE` op (version 5, per-channel int8):
    `float32(a_c) * q` reproduces every float32 weight bit for bit, so the layer computes
    exactly as before with 4x fewer weight bytes. Tensors not of that form are left alone.

    !!! example
        ```python
        smaller, info = compact_binary_float_weights(flatbuffer)
        ```

    # Arguments
        flatbuffer: The bytes of a `.tflite` file.

    # Returns
        `(new flatbuffer, info)` with info `{"tensors": [names], "float_bytes", "int8_bytes"}`;
        the input flatbuffer unchanged if nothing qualifies.
    """
    schema = lce_tflite_schema()
    names = builtin_names()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    info: dict[str, Any] = {"tensors": [], "float_bytes": 0, "int8_bytes": 0}
    targets = {schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.CONV_2D}
    dequantize_index = None
    for subgraph in model.subgraphs:
        buffer_users = Counter(t.buffer for t in subgraph.tensors)
        tensor_users = Counter(
            int(i) for op in subgraph.operators if op.inputs is not None for i in op.inputs
        )
        new_operators = []
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
                    new_operators.append(dequantize)
                    tensor = subgraph.tensors[weights_index]
                    name = tensor.name.decode(errors="replace") if tensor.name else "?"
                    info["tensors"].append(f"{name} ({names.get(builtin)})")
                    info["int8_bytes"] += int(np.prod(tensor.shape))
                    info["float_bytes"] += 4 * int(np.prod(tensor.shape))
            new_operators.append(op)
        subgraph.operators = new_operators
    if not info["tensors"]:
        return flatbuffer, info
    return _pack(model), info


def _operator_code(model, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
            code.version = max(code.version, version)
            return i
    code = lce_tflite_schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _int8_weight(model, subgraph, index: int, buffer_users, tensor_users) -> Optional[int]:
    """Add the int8 version of float tensor `index` if exact; return its index (or None)."""
    schema = lce_tflite_schema()
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
