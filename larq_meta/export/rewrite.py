"""The exact QuantDense -> 1x1 QuantConv2D rewrite, and the model rebuild it runs on.

LCE only makes binary operators (`LceBconv2d`) out of `QuantConv2D`; a binarized `QuantDense`
would become a float `FULLY_CONNECTED` fed by `LceDequantize`. `dense_to_conv1x1` rewrites each
one into `Reshape((1, 1, C)) -> 1x1 QuantConv2D -> Reshape((units,))` with the same latent
kernel: sign inputs times sign kernels are integer dot products, so the rewrite is exact in
float32. `rebuild_model` replays a functional graph with fresh layers (also used to replace
`BF16QuantDense` layers, whose XLA-only products no TFLite runtime has).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import larq as lq
import tensorflow as tf

from larq_meta._compat import keras_skips_first_node
from larq_meta._utils import iter_layers
from larq_meta.export.errors import ExportError
from larq_meta.export.layers import is_lce_binary_candidate, is_sign, quantizer_name
from larq_meta.models import BF16QuantDense, unclipped_kernels_by_design

__all__ = [
    "dense_to_conv1x1",
    "plan_dense_rewrite",
    "rebuild_model",
    "with_float32_products",
]


def _dense_rewrite_blocker(layer: lq.layers.QuantDense) -> Optional[str]:
    """Why `layer` cannot become a binary 1x1 convolution (None: it can)."""
    if layer.input_quantizer is None:
        return "its input is real-valued (no input quantizer), so LCE cannot binarize it"
    if not is_sign(layer.input_quantizer):
        return f"its input quantizer {quantizer_name(layer.input_quantizer)} is not a sign"
    if not is_sign(layer.kernel_quantizer):
        return f"its kernel quantizer {quantizer_name(layer.kernel_quantizer)} is not a sign"
    if not layer.built:
        return "it is not built (no input shape)"
    ranks = {  # of the tensors the layer was called on
        tensor.shape.rank
        for node in layer.inbound_nodes
        for tensor in tf.nest.flatten(getattr(node, "input_tensors", None))
        if getattr(tensor, "shape", None) is not None and tensor.shape.rank is not None
    }
    if ranks and ranks != {2}:
        return f"its input has rank {sorted(ranks)}; only (batch, features) inputs are rewritten"
    return None


def plan_dense_rewrite(
    model: tf.keras.Model, layers: Union[bool, Sequence[str], None]
) -> tuple[list[lq.layers.QuantDense], dict[str, str]]:
    """The QuantDense layers to rewrite, and the binarized ones left alone with the reason.

    # Arguments
        model: A Keras model.
        layers: True: every QuantDense that can be rewritten; False/None: none; a list of
            names: exactly those (ExportError naming a layer that does not exist, is not a
            QuantDense or cannot be rewritten).

    # Returns
        `(layers to rewrite, {name of a binarized QuantDense left alone: reason})`.
    """
    dense = [layer for layer in iter_layers(model) if isinstance(layer, lq.layers.QuantDense)]
    if layers is False or layers is None:
        reason = "QuantDense rewrite disabled (rewrite_dense=False)"
        return [], {layer.name: reason for layer in dense if is_lce_binary_candidate(layer)}
    if layers is True:
        targets, skipped = [], {}
        for layer in dense:
            reason = _dense_rewrite_blocker(layer)
            if reason is None:
                targets.append(layer)
            elif layer.input_quantizer is not None:  # a real-valued input is no surprise
                skipped[layer.name] = f"not rewritten: {reason}"
        return targets, skipped
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise ExportError(
            f"`rewrite_dense` must be True, False or a list of layer names, got {layers!r}."
        )
    names = list(layers)
    by_name = {layer.name: layer for layer in dense}
    targets = []
    for name in names:
        if name not in by_name:
            exists = any(layer.name == name for layer in iter_layers(model))
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
        if is_lce_binary_candidate(layer) and layer.name not in names
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
    return any(id(layer) in targets for layer in iter_layers(model))


def _bf16_layers(model: tf.keras.Model) -> list[str]:
    return [layer.name for layer in iter_layers(model) if isinstance(layer, BF16QuantDense)]


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


def _has_list(value) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, Mapping):
        return any(_has_list(v) for v in value.values())
    return False


def _node_references(node) -> list:
    """The `[layer, node index, tensor index, (kwargs)]` entries of one config node."""
    return node if node and isinstance(node[0], (list, tuple)) else [node]


def _graph_config(model: tf.keras.Model):
    graph = model
    if isinstance(model, tf.keras.Sequential):
        if not getattr(model, "inputs", None):
            raise ExportError(
                f"Sequential model '{model.name}' has no input shape; build it first."
            )
        graph = tf.keras.Model(model.inputs, model.outputs, name=model.name)  # a graph view
    try:
        config = graph.get_config()
        return graph, config["layers"], config["input_layers"], config["output_layers"]
    except (NotImplementedError, KeyError, TypeError) as error:
        raise ExportError(
            f"Cannot rewrite the QuantDense layers of model '{model.name}': its layer graph "
            f"cannot be read ({type(error).__name__}: {error}). The rewrite needs a Sequential "
            "or functional model (subclassed models have no layer graph); pass "
            "rewrite_dense=False to export it with float FULLY_CONNECTED layers."
        ) from error


def rebuild_model(model: tf.keras.Model, targets: set[int]) -> tf.keras.Model:
    """Replay `model`'s functional graph with fresh layers and copied weights.

    QuantDense layers whose `id` is in `targets` become the 1x1 convolution block of
    `dense_to_conv1x1`; `BF16QuantDense` layers become `QuantDense`. Nested models are rebuilt
    recursively; the original model is untouched.

    # Arguments
        model: A Sequential or functional model (ExportError for a subclassed one).
        targets: `id(layer)` of each QuantDense to rewrite (may be empty).

    # Returns
        The new model.
    """
    graph, entries, inputs_config, outputs_config = _graph_config(model)
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
            calls[name] = rebuild_model(layer, targets)  # weights already copied
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
            index = k + int(keras_skips_first_node(graph.get_layer(name)))
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


def with_float32_products(model: tf.keras.Model) -> tuple[tf.keras.Model, list[str]]:
    """`model`, or a rebuilt copy whose `BF16QuantDense` layers are plain `QuantDense` with
    the same weights, and the names of those layers (empty: `model` itself is returned)."""
    names = _bf16_layers(model)
    if not names:
        return model, []
    try:
        return rebuild_model(model, set()), names
    except ExportError as error:
        raise ExportError(
            f"Cannot copy model '{model.name}' to replace its BF16QuantDense layers {names} "
            f"({error}). Rebuild it with compute_dtype='float32' and copy the weights."
        ) from error


def dense_to_conv1x1(
    model: tf.keras.Model, layers: Union[bool, Sequence[str]] = True
) -> tf.keras.Model:
    """A copy of `model` whose binarized QuantDense layers are 1x1 binary QuantConv2D blocks.

    Each rewritten `QuantDense` named `n` becomes three layers:
    `Reshape((1, 1, C), name=n_to_map) -> QuantConv2D(units, 1, name=n) ->
    Reshape((units,), name=n_from_map)`, with the latent kernel reshaped to `(1, 1, C, units)`
    and the same quantizers, bias and activation. With sign inputs $x \\in \\{-1, 1\\}^C$ and
    sign weights, $y_u = \\sum_c x_c w_{cu}$ is an integer sum in both forms, so the rewrite is
    exact in float32. All other layers are copied with their weights; BatchNorm stays after the
    reshape (LCE fuses it into `LceBconv2d` there as well as on the 4D map). The graph is
    replayed from the model's functional config, so shared layers and nested models are
    handled; subclassed models raise ExportError.

    !!! example
        ```python
        conv_model = dense_to_conv1x1(models.paper_mlp((512, 512)))
        ```

    # Arguments
        model: A built Sequential or functional model.
        layers: True: every QuantDense with a sign input and a sign kernel quantizer; a list
            of names: exactly those (ExportError naming the layer if one cannot be rewritten).

    # Returns
        A new model with the same predictions in inference mode; `model` is untouched.
    """
    targets, _ = plan_dense_rewrite(model, layers)
    if not targets:
        raise ExportError(f"Model '{model.name}' has no QuantDense layer to rewrite.")
    return rebuild_model(model, {id(layer) for layer in targets})
