"""What each layer's quantizers mean for LCE: binarized or not, and whether LCE runs it exactly.

Vocabulary (used by the report and the rewrite):

- a **binarized layer** is a larq layer whose input quantizer and every weight quantizer
  (`kernel_quantizer`, `depthwise_quantizer`, `pointwise_quantizer`) have precision 1: sign
  inputs times sign weights, whatever the layer type (`QuantDense`, `QuantConv2D`,
  `QuantDepthwiseConv2D`, `QuantLocallyConnected2D`, ...);
- an **LCE binary candidate** is a binarized `QuantConv2D` or `QuantDense` with sign quantizers
  (forward pass `sign(x)`, `sign(0) = +1`): the layers LCE turns into `LceBconv2d` (a
  `QuantDense` after `dense_to_conv1x1`). Other binarized layers run as float operators on `±1`
  values;
- a layer LCE **does not run exactly** has an input quantizer that is not a sign (ternary,
  DoReFa, Heaviside, ...): LCE has no operator for it, and its converter lowers it to other
  operators whose results need not match Keras' (a ternary `QuantDense` between binary layers
  disagrees with Keras on 5-12 % of random inputs in the tests; where exactly they part is
  the subject of the layer-by-layer comparison of issue #19).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import larq as lq

__all__ = [
    "SIGN_QUANTIZERS",
    "WEIGHT_QUANTIZER_ATTRIBUTES",
    "quantizer_name",
    "is_sign",
    "weight_quantizers",
    "is_quantized_layer",
    "is_binarized",
    "has_binary_weights",
    "is_lce_binary_candidate",
    "inexact_reason",
]

#: Forward pass `sign(x)` with sign(0) = +1; LCE recognises these (they differ in gradient only).
SIGN_QUANTIZERS = (lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign)
#: The attributes larq layers keep their weight quantizers in.
WEIGHT_QUANTIZER_ATTRIBUTES = ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer")


def quantizer_name(quantizer: Any) -> str:
    """The class name of `quantizer` (`"None"` for no quantizer)."""
    return "None" if quantizer is None else type(quantizer).__name__


def is_sign(quantizer: Any) -> bool:
    """True for a quantizer whose forward pass is `sign(x)` with `sign(0) = +1`."""
    return isinstance(quantizer, SIGN_QUANTIZERS)


def _precision(quantizer: Any) -> Optional[int]:
    return None if quantizer is None else getattr(quantizer, "precision", None)


def is_quantized_layer(layer) -> bool:
    """True for a larq quantized layer (it has an `input_quantizer` attribute)."""
    return hasattr(layer, "input_quantizer")


def weight_quantizers(layer) -> Iterator[tuple[str, Any]]:
    """`(attribute, quantizer)` for each weight quantizer attribute `layer` has (quantizer may
    be None)."""
    for attribute in WEIGHT_QUANTIZER_ATTRIBUTES:
        if hasattr(layer, attribute):
            yield attribute, getattr(layer, attribute)


def has_binary_weights(layer) -> bool:
    """A larq layer whose every weight quantizer has precision 1."""
    quantizers = [q for _, q in weight_quantizers(layer)]
    return bool(quantizers) and all(_precision(q) == 1 for q in quantizers)


def is_binarized(layer) -> bool:
    """A larq layer of any type whose input and every weight quantizer have precision 1."""
    return (
        is_quantized_layer(layer)
        and _precision(layer.input_quantizer) == 1
        and has_binary_weights(layer)
    )


def is_lce_binary_candidate(layer) -> bool:
    """A `QuantConv2D` or `QuantDense` with sign input and sign kernel quantizers: what LCE
    turns into its binary convolution `LceBconv2d` (a `QuantDense` after the 1x1 rewrite)."""
    return (
        isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDense))
        and is_sign(getattr(layer, "input_quantizer", None))
        and is_sign(getattr(layer, "kernel_quantizer", None))
    )


def inexact_reason(layer) -> Optional[str]:
    """Why LCE may not compute `layer` exactly as Keras does (None: it does).

    An input quantizer other than a sign has no LCE operator and is lowered to other
    operators, which need not match Keras. Weight quantizers are applied to constant weights
    at conversion time, so any of them is exact.
    """
    if not is_quantized_layer(layer):
        return None
    quantizer = layer.input_quantizer
    if quantizer is None or is_sign(quantizer):
        return None
    return (
        f"its input quantizer {quantizer_name(quantizer)} is not a sign: LCE has no operator "
        "for it and does not compute it exactly as Keras does"
    )
