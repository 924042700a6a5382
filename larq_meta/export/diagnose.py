"""Where an LCE flatbuffer and its Keras model part: a layer-by-layer comparison.

`compare_layers` runs the same inputs through Keras and through LCE's interpreter with the
intermediate tensors kept, matches each LCE tensor to the Keras layer it computes, and reports
per layer how far the two runtimes are apart:

- the largest |difference| of the layer's output, where LCE materialises it (BatchNorm and
  activations fused into the operator before them have no tensor of their own);
- at each layer with a sign input quantizer, the fraction of its binarized input whose sign
  differs (LCE's bitpacked tensors are unpacked; Keras binarizes with `sign(0) = +1`), the
  number of exact ties (Keras pre-activations equal to 0, where two runtimes may binarize
  differently) and how many flips fall on a tie or within float rounding of one.

The first layer where they part, and the likely cause, close the report (see `CAUSES`).

LCE's interpreter keeps no intermediate tensor, so the flatbuffer is run with every operator
output added to the subgraph's outputs (`flatbuffer.with_outputs`; the operators are
unchanged, so the values are those of the real file).

!!! example
    ```python
    from larq_meta.export import compare_layers, to_lce

    report = to_lce(model, None, allow_mismatch=True)
    diff = compare_layers(model, report.flatbuffer, x_test[:64])
    print(diff)  # one row per layer; the first diverging layer and the cause below
    ```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from larq_meta._utils import check_int
from larq_meta.export.causes import (
    CAUSES,
    NEAR_TIE,
    border_only,
    fused_into,
    likely_cause,
    name_pieces,
    unmeasured_inexact,
)
from larq_meta.export.errors import ExportError
from larq_meta.export.flatbuffer import tensor_table, with_outputs
from larq_meta.export.layers import inexact_reason, is_sign, quantizer_name
from larq_meta.export.parity import (
    ParityResult,
    keras_predict,
    lce_interpreter,
    parity_inputs,
    run_lce,
)

__all__ = ["CAUSES", "LayerDiff", "LayerComparison", "compare_layers", "DEFAULT_RTOL"]

#: A layer output "diverges" when its max |difference| exceeds this fraction of the largest
#: |value| Keras computes there (float32 reordering stays below 1e-5 in the networks tried).
DEFAULT_RTOL = 1e-4
@dataclasses.dataclass
class LayerDiff:
    """Keras vs LCE at one layer (None: not measured there)."""

    layer: str
    layer_type: str
    #: The LCE tensor compared with the layer's output, and the operator computing it (None:
    #: LCE fused the layer into a later operator, no tensor of its own).
    lce_tensor: Optional[str] = None
    lce_op: Optional[str] = None
    max_abs_diff: Optional[float] = None
    #: `max_abs_diff` / the largest |value| of Keras' output.
    relative_diff: Optional[float] = None
    #: Input quantizer of the layer ("SteSign", ...; None for a layer without one).
    input_quantizer: Optional[str] = None
    #: At a layer with a sign input quantizer: elements of its binarized input compared, and
    #: how many have another sign in LCE than in Keras.
    binarized_elements: Optional[int] = None
    sign_flips: Optional[int] = None
    #: Keras pre-activations exactly 0 at that input, and the flips on them.
    ties: Optional[int] = None
    flips_at_ties: Optional[int] = None
    #: Flips on pre-activations within `NEAR_TIE` of 0 (not exactly 0).
    flips_near_ties: Optional[int] = None
    #: Where LCE's binarized input came from ("LceQuantize", "LceBconv2d" output threshold,
    #: or "float" from the sign of LCE's float input).
    bits_from: Optional[str] = None
    diverges: bool = False

    @property
    def sign_flip_fraction(self) -> Optional[float]:
        """`sign_flips / binarized_elements`."""
        if self.sign_flips is None or not self.binarized_elements:
            return None
        return self.sign_flips / self.binarized_elements


@dataclasses.dataclass
class LayerComparison:
    """What `compare_layers` found. `str()` is a table; `to_dict()` is JSON-ready."""

    model_name: str
    samples: int
    data: str
    layers: list[LayerDiff]
    #: Keras vs LCE at the model's output.
    parity: ParityResult
    #: The first layer where the two part (None: they agree everywhere), the likely cause (a
    #: key of `CAUSES`) and the evidence.
    first_divergence: Optional[str] = None
    #: The layer the cause lies in (e.g. the ternary layer whose quantizer LCE folded into the
    #: operator before it); usually `first_divergence`.
    culprit: Optional[str] = None
    cause: Optional[str] = None
    explanation: str = ""
    rtol: float = DEFAULT_RTOL
    #: The layers are compared on this many of the samples: all, or the `keep` samples
    #: whose outputs differ most.
    compared_samples: int = 0

    def layer(self, name: str) -> LayerDiff:
        """The row of layer `name` (KeyError if there is none)."""
        for row in self.layers:
            if row.layer == name:
                return row
        raise KeyError(f"No layer '{name}' in the comparison of '{self.model_name}'.")

    def _kept(self) -> str:
        if not self.compared_samples or self.compared_samples == self.samples:
            return ""
        return f" (layers compared on the {self.compared_samples} that differ most)"

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready data."""
        out = dataclasses.asdict(self)
        for row, data in zip(self.layers, out["layers"]):
            data["sign_flip_fraction"] = row.sign_flip_fraction
        return out

    def __str__(self) -> str:
        header = ("layer", "type", "LCE op", "max|diff|", "rel", "sign flips", "ties", "at ties")
        rows = [header]
        for r in self.layers:
            flips = "" if r.sign_flips is None else (
                f"{r.sign_flips}/{r.binarized_elements} ({100 * r.sign_flip_fraction:.2f}%)"
            )
            rows.append((
                ("> " if r.layer == self.first_divergence else "") + r.layer,
                r.layer_type,
                r.lce_op or "(fused)",
                "" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}",
                "" if r.relative_diff is None else f"{r.relative_diff:.2g}",
                flips,
                "" if r.ties is None else str(r.ties),
                "" if r.flips_at_ties is None else str(r.flips_at_ties),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            f"Keras vs LCE, layer by layer: model '{self.model_name}', {self.samples} "
            f"{self.data} samples{self._kept()}; argmax agreement "
            f"{100 * self.parity.argmax_agreement:.2f}%, max |output diff| "
            f"{self.parity.max_abs_diff:.3g}"
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        if self.first_divergence is None:
            lines.append("Keras and LCE agree at every layer (relative tolerance "
                         f"{self.rtol:g}, no sign flip).")
        else:
            where = "" if self.culprit in (None, self.first_divergence) else (
                f" (the cause is in '{self.culprit}')"
            )
            lines.append(f"First divergence: '{self.first_divergence}'{where}; likely cause: "
                         f"{self.cause}.")
            lines.append(f"  {self.explanation}")
        return "\n".join(lines)


# -- Keras side -------------------------------------------------------------------------------


def _layer_output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):  # shared layer (several inbound nodes)
        return None


def _layer_input(layer):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return None
    return inputs if tf.is_tensor(inputs) or hasattr(inputs, "shape") else None


def _keras_tensors(model, x, batch_size=64):
    """{layer name: output}, {layer name: input} for the top-level layers (input only for
    layers with an input quantizer), computed in inference mode."""
    outputs, inputs = {}, {}
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        out = _layer_output(layer)
        if out is not None and not isinstance(out, (list, tuple)):
            outputs[layer.name] = out
        if getattr(layer, "input_quantizer", None) is not None:
            inp = _layer_input(layer)
            if inp is not None:
                inputs[layer.name] = inp
    names = list(outputs) + [f"{n} (input)" for n in inputs]
    probe = tf.keras.Model(model.inputs, list(outputs.values()) + list(inputs.values()))
    values = [[] for _ in names]
    for start in range(0, len(x), batch_size):
        got = probe(x[start : start + batch_size], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for store, value in zip(values, got):
            store.append(np.asarray(value))
    arrays = [np.concatenate(v) for v in values]
    k = len(outputs)
    return dict(zip(outputs, arrays[:k])), dict(zip(inputs, arrays[k:]))


# -- LCE side ---------------------------------------------------------------------------------


def _consumers(model) -> dict[str, list[str]]:
    """Top-level layer name -> names of the top-level layers reading its output."""
    out: dict[str, list[str]] = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", [])[:1]:
            for parent in tf.nest.flatten(node.inbound_layers):
                out.setdefault(parent.name, []).append(layer.name)
    return out


def _candidates(row, model, order, consumers, keras_out, output_rows) -> list[str]:
    """Layers a float LCE tensor may compute: those its name mentions, and the layers LCE may
    have fused into that operator (a chain of single consumers of the same size after it)."""
    names = name_pieces(row["name"]) & set(order)
    if row["index"] in output_rows:
        names.add(model.layers[-1].name)
    size = int(np.prod(row["shape"][1:]))
    found = []
    for name in sorted(names, key=order.get):
        for _ in range(4):
            if name in keras_out and keras_out[name][0].size == size and name not in found:
                found.append(name)
            after = consumers.get(name, [])
            if len(after) != 1:
                break
            name = after[0]
    return found


def _lce_rows(table):
    """The LCE tensors worth reading: batch-1 float tensors, and bitpacked binary inputs."""
    return [
        row for row in table
        if row["op"] != "DEQUANTIZE" and row["shape"] and row["shape"][0] == 1 and (
            row["type"] == "FLOAT32"
            or (row["type"] == "INT32" and row["op"] in ("LceQuantize", "LceBconv2d"))
        )
    ]


def _match_tensors(rows, values, model, keras_out, keras_in, output_rows):
    """{layer: (row, LCE values)} for float outputs (of the candidate tensors, the closest to
    Keras' values) and for bitpacked inputs (the latest consumer the name mentions)."""
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    consumers = _consumers(model)
    float_match, bits_match, best = {}, {}, {}
    n = len(next(iter(keras_out.values())))
    for row, value in zip(rows, values):
        shape = row["shape"]
        if row["type"] == "FLOAT32":
            value = np.asarray(value).reshape(n, -1)
            closest, distance = None, np.inf
            for name in _candidates(row, model, order, consumers, keras_out, output_rows):
                k = keras_out[name].reshape(n, -1)
                scale = max(float(np.abs(k).max()), 1e-30)
                d = float(np.abs(value.astype(np.float64) - k).max()) / scale
                if d < distance:  # ties (a reshape of the same values): the earlier layer
                    closest, distance = name, d
            if closest is not None and distance <= best.get(closest, np.inf):
                best[closest] = distance  # ties: the later operator
                float_match[closest] = (row, value)
        else:
            mentioned = sorted(name_pieces(row["name"]) & set(order), key=order.get, reverse=True)
            for name in mentioned:
                k_in = keras_in.get(name)
                if k_in is not None and k_in.ndim >= 2 and (
                    np.prod(k_in.shape[1:-1]) == np.prod(shape[1:-1])
                    and -(-k_in.shape[-1] // 32) == shape[-1]
                ):  # e.g. (n, 40) in Keras, (1, 1, 1, 2) words after the 1x1 rewrite
                    words = k_in.shape[:-1] + (shape[-1],)
                    bits_match[name] = (row, np.asarray(value).reshape(words))
                    break
    return float_match, bits_match


def _run_lce(flatbuffer, x, rows):
    interpreter = lce_interpreter(with_outputs(flatbuffer, [r["index"] for r in rows]))
    try:
        out = interpreter.predict(np.asarray(x, dtype=np.float32))
    except RuntimeError as error:
        raise ExportError(f"LCE's interpreter failed to run the flatbuffer: {error}") from error
    out = out if isinstance(out, list) else [out]
    return np.asarray(out[0]).reshape(len(x), -1), out[1:]


def _unpack_signs(packed: np.ndarray, channels: int) -> np.ndarray:
    """LCE bitpacked int32 (32 channels a word, bit 1 = -1) -> bool "negative", `channels`."""
    words = np.ascontiguousarray(packed).view(np.uint32)
    bits = (words[..., None] >> np.arange(32, dtype=np.uint32)) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :channels].astype(bool)


# -- comparison -------------------------------------------------------------------------------


def _predecessors(model) -> dict[str, str]:
    """Layer name -> the one layer it reads (layers with several inputs are left out)."""
    out = {}
    for layer in model.layers:
        inbound = [n.inbound_layers for n in getattr(layer, "_inbound_nodes", [])[:1]]
        flat = tf.nest.flatten(inbound)
        if len(flat) == 1:
            out[layer.name] = flat[0].name
    return out


def _compare_signs(row, keras_x, lce_negative, bits_from, lce_before, before, details):
    """Fill the sign columns of `row` (Keras' binarized input `keras_x` vs LCE's signs)."""
    lce_negative = np.asarray(lce_negative).reshape(keras_x.shape)
    keras_negative = keras_x < 0  # larq: sign(0) = sign(-0.0) = +1
    flipped = keras_negative != lce_negative
    zero = keras_x == 0
    scale = float(np.abs(keras_x).max()) if keras_x.size else 0.0
    near = (np.abs(keras_x) <= NEAR_TIE * scale) & ~zero
    row.binarized_elements = int(keras_x.size)
    row.sign_flips = int(flipped.sum())
    row.ties = int(zero.sum())
    row.flips_at_ties = int((flipped & zero).sum())
    row.flips_near_ties = int((flipped & near).sum())
    row.bits_from = bits_from
    details["negative_zero_flips"] = int((flipped & zero & np.signbit(keras_x)).sum())
    if lce_before is not None and (flipped & zero).any():
        at_ties = np.asarray(lce_before[1]).reshape(keras_x.shape)[flipped & zero]
        details["lce_at_ties"] = (float(at_ties.min()), float(at_ties.max()))
        details["lce_tie_op"] = lce_before[0]["op"]
    details["border_only"] = border_only(np.where(flipped, 1.0, 0.0), 0.5, before)


def _compare_outputs(row, keras_value, match, rtol, details):
    """Fill the output columns of `row` (Keras' output vs the LCE tensor matched to it)."""
    n = len(keras_value)
    k = keras_value.reshape(n, -1)
    diff = np.abs(np.asarray(match[1]).reshape(n, -1).astype(np.float64) - k)
    row.lce_tensor, row.lce_op = match[0]["name"], match[0]["op"]
    row.max_abs_diff = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(k).max()) if k.size else 0.0
    row.relative_diff = row.max_abs_diff / scale if scale > 0 else row.max_abs_diff
    if row.relative_diff > rtol and not row.sign_flips:
        details["diff_map"] = (diff.reshape(keras_value.shape), rtol * scale)


def _name_divergence(result, row, layer, layers, details) -> None:
    """Record `row` as the first divergence: the layer to blame, the cause, the evidence."""
    culprit = (
        unmeasured_inexact(result.layers, layers)
        or fused_into(row, layer, result.layers, layers)
        or layer
    )
    if "diff_map" in details:
        details["border_only"] = border_only(*details["diff_map"], culprit)
    result.first_divergence = result.culprit = culprit.name
    result.cause, result.explanation = likely_cause(row, culprit, details)
    if details.get("next_inexact") is not None and result.cause.startswith("quantizer"):
        result.culprit = details["next_inexact"].name
    if culprit is not layer:
        result.explanation += (
            f" LCE has no tensor of its own for '{culprit.name}': the difference shows at "
            f"'{layer.name}'" + (f", whose {row.lce_op} computes both." if row.lce_op else ".")
        )


def compare_layers(
    model: tf.keras.Model,
    flatbuffer: bytes,
    x=None,
    *,
    samples: int = 32,
    keep: int = 64,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
) -> LayerComparison:
    """Run `x` through Keras and LCE, keep every intermediate tensor, compare layer by layer.

    For layer $l$ with Keras output $k_l$ and the LCE tensor $e_l$ computing it:
    `max_abs_diff` $= \\max |e_l - k_l|$, `relative_diff` $= \\max|e_l - k_l| / \\max|k_l|$;
    at a layer whose input $u$ is binarized, `sign_flips` $= \\#\\{i : [u^K_i < 0] \\ne
    b^{LCE}_i\\}$ with $b^{LCE}$ LCE's bits (or the sign of its float input), `ties`
    $= \\#\\{i : u^K_i = 0\\}$. A layer diverges when `relative_diff > rtol` or it has a sign
    flip; the first one in the model's (topological) layer order is named with its likely
    cause (`CAUSES`).

    !!! example
        ```python
        diff = compare_layers(model, report.flatbuffer, x_test[:64])
        diff.first_divergence, diff.cause  # ('quant_conv2d_3', 'sign tie')
        ```

    # Arguments
        model: The Keras model the flatbuffer was converted from, in the same state (e.g. the
            task's BatchNorm statistics loaded); single input and output. Its top-level
            layers are compared (a nested model counts as one layer).
        flatbuffer: The LCE flatbuffer (`report.flatbuffer` of `to_lce`, or a file's bytes).
        x: `(x, y)` or `x`: inputs as for `to_lce(parity_data=...)`; default `samples`
            random inputs uniform in [0, 1).
        samples: Number of random inputs without `x`.
        keep: Compare the layers on at most this many samples: with more inputs, the `keep`
            whose outputs differ most (every intermediate tensor of every sample is held in
            memory). `parity` still covers all inputs.
        rtol: Relative tolerance of a layer's output (see `DEFAULT_RTOL`).
        seed: Seed of the random inputs.

    # Returns
        A `LayerComparison`.

    # Raises
        ExportError: a model with several inputs or outputs, a flatbuffer LCE cannot run.
    """
    if not isinstance(model, tf.keras.Model):
        raise ExportError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    if not isinstance(flatbuffer, (bytes, bytearray)):
        raise ExportError(
            f"`flatbuffer` must be the bytes of a .tflite file, got {type(flatbuffer).__name__}."
        )
    x, y, source = parity_inputs(model, x, samples, seed=seed)
    check_int(keep, "keep")
    whole = None
    if len(x) > keep:  # the layers on the `keep` samples whose outputs differ most
        keras_final, lce_all = keras_predict(model, x), run_lce(flatbuffer, x)
        whole = ParityResult.from_outputs(keras_final, lce_all, y, data=source)
        worst = np.abs(lce_all.astype(np.float64) - keras_final).max(axis=1)
        chosen = np.sort(np.argsort(-worst, kind="stable")[:keep])
        x, y = x[chosen], None if y is None else y[chosen]
    keras_out, keras_in = _keras_tensors(model, x)
    table = tensor_table(bytes(flatbuffer))
    rows = _lce_rows(table)
    output_rows = {row["index"] for row in rows if row["output"]}
    inner = [row for row in rows if not row["output"]]
    lce_final, lce_inner = _run_lce(bytes(flatbuffer), x, inner)
    by_index = {row["index"]: value for row, value in zip(inner, lce_inner)}
    lce_values = [by_index.get(row["index"], lce_final) for row in rows]
    float_match, bits_match = _match_tensors(
        rows, lce_values, model, keras_out, keras_in, output_rows
    )
    lce_float = {name: value for name, (_, value) in float_match.items()}
    lce_bits = {name: value for name, (_, value) in bits_match.items()}
    layers = {layer.name: layer for layer in model.layers}
    consumers = _consumers(model)
    predecessor = _predecessors(model)
    final_keras = keras_out.get(model.layers[-1].name)
    parity = ParityResult.from_outputs(
        np.asarray(keras_predict(model, x) if final_keras is None else final_keras)
        .reshape(len(x), -1), lce_final, y, data=source,
    )
    result = LayerComparison(
        model.name, len(x) if whole is None else whole.samples, source, [],
        parity if whole is None else whole, rtol=rtol, compared_samples=len(x),
    )
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer) or layer.name not in keras_out:
            continue
        quantizer = getattr(layer, "input_quantizer", None)
        row = LayerDiff(layer.name, type(layer).__name__,
                        input_quantizer=None if quantizer is None else quantizer_name(quantizer))
        following = [layers[n] for n in consumers.get(layer.name, []) if n in layers]
        details: dict[str, Any] = {
            "layers": layers,
            "next_inexact": next((f for f in following if inexact_reason(f)), None),
        }
        if layer.name in keras_in and is_sign(quantizer):
            before = predecessor.get(layer.name)
            if layer.name in bits_match:
                match, packed = bits_match[layer.name]
                lce_negative = _unpack_signs(packed, keras_in[layer.name].shape[-1])
                bits_from = "LceQuantize" if match["op"] == "LceQuantize" else (
                    "LceBconv2d output threshold"
                )
            elif before in float_match:
                lce_negative = np.signbit(float_match[before][1])
                bits_from = "the sign bit of LCE's float input"
            else:
                lce_negative = None
            if lce_negative is not None:
                lce_before = None if before not in float_match else float_match[before]
                _compare_signs(row, keras_in[layer.name], lce_negative, bits_from,
                               lce_before, layers.get(before), details)
        if layer.name in float_match:
            _compare_outputs(row, keras_out[layer.name], float_match[layer.name], rtol, details)
        row.diverges = bool(row.sign_flips) or (row.relative_diff or 0.0) > rtol
        if row.diverges and result.first_divergence is None:
            _name_divergence(result, row, layer, layers, details)
        result.layers.append(row)
    return result
