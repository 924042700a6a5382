"""What a difference between Keras and LCE at a layer most likely comes from: the causes
`compare_layers` names, and the evidence it weighs (see `larq_meta.export.diagnose`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import tensorflow as tf

from larq_meta.export.layers import inexact_reason

if TYPE_CHECKING:  # pragma: no cover
    from larq_meta.export.diagnose import LayerDiff

__all__ = [
    "CAUSES",
    "FLOAT_ROUNDING",
    "NEAR_TIE",
    "WEIGHTED_OPS",
    "border_only",
    "fused_into",
    "likely_cause",
    "name_pieces",
    "small_map_note",
    "unmeasured_inexact",
]

#: A relative difference up to this is put down to float rounding (reordered float32 sums).
FLOAT_ROUNDING = 1e-3
#: |x| below this fraction of a tensor's largest |value| counts as "within rounding" of a tie.
NEAR_TIE = 1e-5

#: The causes `compare_layers` names, with what each means.
CAUSES = {
    "sign tie": "the flipped signs sit on Keras pre-activations exactly 0: Keras binarizes 0 "
    "to +1; LCE computes some of those zeros as tiny negative numbers (the multiplier and "
    "bias it folds BatchNorm into round) or -0.0, and binarizes them to -1",
    "float rounding": "the values differ by float32 rounding only, or the flipped signs sit "
    "within rounding of 0 (a BatchNorm folded into a threshold or a multiplier)",
    "quantizer LCE does not run exactly": "the layer's input quantizer is not a sign: LCE has "
    "no operator for it and computes something else",
    "padding value": "the differences sit only where a 'same' convolution reads padding: "
    "the padded value differs (LCE 0.16 gets zero padding of a binarized input wrong on "
    "maps smaller than the kernel)",
    "BatchNorm folding": "a BatchNormalization LCE folded into the operator before it "
    "(multiplier, bias or output threshold) computes other values than Keras' layer",
    "unexplained": "none of the above fits; compare the layer's weights and configuration",
}


def name_pieces(name: str) -> set[str]:
    """The path components of an LCE tensor name (fused names are joined with ";")."""
    return {p for part in name.split(";") for p in part.split("/")}


def border_only(diff: np.ndarray, tol: float, layer) -> bool:
    """All differences above `tol` at the border of a (n, h, w, c) map of a padded layer."""
    if diff.ndim != 4 or getattr(layer, "padding", None) != "same":
        return False
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None) or (3, 3)
    dilation = getattr(layer, "dilation_rate", None) or (1, 1)
    mh, mw = (max(1, d * (k // 2)) for k, d in zip(size, dilation))
    over = (diff > tol).any(axis=(0, 3))
    if not over.any():
        return False
    if over.shape[0] <= 2 * mh or over.shape[1] <= 2 * mw:
        return True  # every position of so small a map reads padding
    return not over[mh:-mh, mw:-mw].any()


def unmeasured_inexact(rows: list[LayerDiff], layers) -> Optional[Any]:
    """The last layer LCE does not run exactly among the unmeasured layers just before."""
    for row in reversed(rows):
        if row.max_abs_diff is not None or row.sign_flips is not None:
            return None
        if inexact_reason(layers[row.layer]) is not None:
            return layers[row.layer]
    return None


#: Operators that carry a layer's weights, into which LCE folds BatchNorm and activations.
WEIGHTED_OPS = ("LceBconv2d", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def fused_into(row: LayerDiff, layer, rows: list[LayerDiff], layers) -> Optional[Any]:
    """The layer with weights whose operator computes `row` (e.g. the convolution before a
    BatchNormalization LCE folded into it), when `row`'s own layer has none."""
    if row.lce_op not in WEIGHTED_OPS or hasattr(layer, "kernel"):
        return None
    for before in reversed(rows):
        if before.max_abs_diff is not None:
            return None
        if hasattr(layers[before.layer], "kernel"):
            return layers[before.layer]
    return None


def small_map_note(layer) -> str:
    """The LCE 0.16 defect behind a padding difference, when it is that one."""
    try:
        height, width = layer.input_shape[1:3]
    except (AttributeError, ValueError, TypeError):
        return ""
    size = getattr(layer, "kernel_size", None)
    dilation = getattr(layer, "dilation_rate", None) or (1, 1)
    if size is None or getattr(layer, "pad_values", None) != 0 or height is None:
        return ""
    reach = [(k - 1) * d + 1 for k, d in zip(size, dilation)]
    if height >= reach[0] and width >= reach[1]:
        return ""
    return (
        f" Its {height}x{width} input map is smaller than its {reach[0]}x{reach[1]}"
        f"{' dilated' if max(dilation) > 1 else ''} kernel: LCE 0.16 computes a zero-padded "
        "binary convolution wrongly there (an LCE defect; pad_values=1, or a larger input, "
        "avoids it)."
    )


def likely_cause(row: LayerDiff, layer, details: dict[str, Any]) -> tuple[str, str]:
    """The likely cause (a key of `CAUSES`) of the first divergence, seen at `row` and put
    down to `layer`, and the evidence as text. `details` holds what `compare_layers`
    measured there: `layers` (name -> layer), `border_only`, `next_inexact` (a following
    layer LCE does not run exactly), `negative_zero_flips`, `lce_at_ties`, `lce_tie_op`."""
    reason = inexact_reason(layer)
    if reason is not None:
        return "quantizer LCE does not run exactly", f"'{layer.name}': {reason}."
    if row.sign_flips:
        where = f"{row.sign_flips} of {row.binarized_elements} signs of its binarized input " \
                f"differ (LCE's bits from {row.bits_from})"
        if row.flips_at_ties == row.sign_flips:
            negative_zeros = details.get("negative_zero_flips", 0)
            how = (
                f"; {negative_zeros} of them are -0.0 in Keras" if negative_zeros else ""
            )
            lce = ""
            if "lce_at_ties" in details:
                low, high = details["lce_at_ties"]
                op = details["lce_tie_op"]
                why = (
                    "float rounding of the multiplier and bias it folds BatchNorm into"
                    if op == "LceBconv2d" else "float rounding in the operators before"
                )
                lce = f"; LCE's {op} computes those zeros as {low:.3g} .. {high:.3g} ({why})"
            return "sign tie", (
                f"{where}, every one at a Keras pre-activation exactly 0 ({row.ties} ties in "
                f"all{how}): Keras binarizes 0 to +1, LCE to -1 there{lce}."
            )
        if row.flips_at_ties + row.flips_near_ties == row.sign_flips:
            return "float rounding", (
                f"{where}, each within {NEAR_TIE:g} x max|x| of 0 ({row.flips_at_ties} exactly "
                "0): float rounding puts them on the other side of the threshold."
            )
        if details.get("border_only"):
            return "padding value", f"{where}, all at the border of the feature map."
        if row.bits_from == "LceBconv2d output threshold":
            return "BatchNorm folding", (
                f"{where}, away from 0, in bits LCE computes with a BatchNorm folded into the "
                "output threshold of the binary convolution before it."
            )
        return "unexplained", f"{where}, away from 0 while the layers before agree."
    following = details.get("next_inexact")
    if following is not None:
        return "quantizer LCE does not run exactly", (
            f"'{row.layer}' feeds '{following.name}': {inexact_reason(following)}; LCE "
            f"folded part of that quantizer into the operator computing '{row.layer}' (its "
            f"output differs by up to {row.max_abs_diff:.3g})."
        )
    what = (
        f"its output differs by up to {row.max_abs_diff:.3g} ({row.relative_diff:.2g} of its "
        f"largest |value|; LCE tensor '{row.lce_tensor}' from {row.lce_op})"
    )
    if details.get("border_only"):
        pads = getattr(layer, "pad_values", None)
        how = "" if pads is None else f" (padding 'same', pad_values={pads:g})"
        return "padding value", (
            f"'{layer.name}': {what}, only at positions that read padding{how}."
            + small_map_note(layer)
        )
    fused_bn = [
        name for name in name_pieces(row.lce_tensor or "")
        if isinstance(details["layers"].get(name), tf.keras.layers.BatchNormalization)
    ]
    if (row.relative_diff or 0) > 1e-2 and (
        isinstance(layer, tf.keras.layers.BatchNormalization) or fused_bn
    ):
        return "BatchNorm folding", f"'{layer.name}': {what}, with BatchNorm folded in."
    if (row.relative_diff or 0) <= FLOAT_ROUNDING:
        return "float rounding", f"'{layer.name}': {what}: float32 rounding."
    return "unexplained", f"'{layer.name}': {what}."
