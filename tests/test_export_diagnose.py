"""Issue 19: the layer-by-layer comparison of Keras and LCE (`compare_layers`, `--diagnose`)
names the layer where they part and the cause, on models with one planted difference and on
larq-zoo architectures (random weights, small inputs)."""

import json
import os

import pytest

pytest.importorskip("larq_compute_engine")

from export_models import FAST, no_bn_mlp, randomize_batchnorm, ternary_mlp  # noqa: E402
from larq_meta._utils import json_default  # noqa: E402
from larq_meta.cli import main  # noqa: E402
from larq_meta.export import (  # noqa: E402
    CAUSES,
    LayerComparison,
    ParityError,
    compare_layers,
    to_lce,
)
from larq_meta.export.flatbuffer import tensor_table, with_outputs  # noqa: E402
from larq_meta.plots import plot_layer_comparison  # noqa: E402

import larq as lq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _refused(model, **kwargs):
    """The flatbuffer `to_lce` refused to write (ParityError carries its report)."""
    with pytest.raises(ParityError) as caught:
        to_lce(model, None, **FAST, **kwargs)
    assert caught.value.report is not None and caught.value.report.path is None
    return caught.value.report.flatbuffer


def small_map_model(seed=0):
    """One planted difference: a binary 3x3 'same' zero-padded convolution on a 2x2 map
    ('small'), which LCE computes differently; the same convolution on a 6x6 map ('big')
    before it is exact."""
    tf.keras.utils.set_random_seed(seed)
    x0 = tf.keras.Input((6, 6, 3))
    h = tf.keras.layers.Conv2D(32, 3, padding="same", name="stem")(x0)
    h = tf.keras.layers.BatchNormalization(name="bn0")(h)
    h = lq.layers.QuantConv2D(32, 3, padding="same", name="big", **BINARY)(h)
    h = tf.keras.layers.MaxPooling2D(3, name="pool")(h)  # 6x6 -> 2x2
    h = tf.keras.layers.BatchNormalization(name="bn1")(h)
    h = lq.layers.QuantConv2D(16, 3, padding="same", name="small", **BINARY)(h)
    h = tf.keras.layers.BatchNormalization(name="bn2")(h)
    h = tf.keras.layers.Flatten(name="flat")(h)
    h = tf.keras.layers.Dense(5, name="head")(h)
    return randomize_batchnorm(tf.keras.Model(x0, h, name="small_map"), seed)


def test_exact_model_agrees_at_every_layer():
    """No divergence on a network LCE runs exactly; LCE's bitpacked inputs unpack to Keras'
    signs (a wrong bit order would flip about half of them)."""
    model = randomize_batchnorm(no_bn_mlp((24, 40, 33, 6)), seed=1)
    report = to_lce(model, None, **FAST)
    result = compare_layers(model, report.flatbuffer, samples=24)
    assert isinstance(result, LayerComparison)
    assert result.first_divergence is None and result.cause is None
    assert result.parity.argmax_agreement == 1.0 and result.compared_samples == 24
    binary = [row for row in result.layers if row.binarized_elements]
    assert {row.layer for row in binary} == {"d1", "d2", "d3"}
    assert all(row.sign_flips == 0 for row in binary)
    assert binary[0].binarized_elements == 24 * 24 and binary[0].bits_from == "LceQuantize"
    measured = [row for row in result.layers if row.max_abs_diff is not None]
    assert measured and all(row.relative_diff <= 1e-5 for row in measured)
    text = str(result)
    assert "agree at every layer" in text and "d2" in text
    data = json.loads(json.dumps(result.to_dict(), default=json_default))
    assert data["layers"][1]["sign_flip_fraction"] == 0.0


def test_intermediate_tensors_are_outputs_of_the_same_operators():
    model = no_bn_mlp((8, 16, 4), inputs=6)
    flatbuffer = to_lce(model, None, **FAST).flatbuffer
    table = tensor_table(flatbuffer)
    exposed = with_outputs(flatbuffer, [row["index"] for row in table])
    assert [(r["op"], r["name"]) for r in tensor_table(exposed)] == [
        (r["op"], r["name"]) for r in table
    ]
    assert all(row["output"] for row in tensor_table(exposed))
    assert sum(row["output"] for row in table) == 1


def test_planted_ternary_layer_is_named():
    """The ternary QuantDense of `ternary_mlp` is the one layer LCE does not run exactly: the
    comparison names it, though LCE folds part of its quantizer into the operator before."""
    model = ternary_mlp()
    flatbuffer = _refused(model, parity_samples=200)
    result = compare_layers(model, flatbuffer, samples=200, keep=48)
    assert result.culprit == "tern"
    assert result.first_divergence in ("d0", "bn0", "tern")  # d0+bn0 run as one operator
    assert result.cause == "quantizer LCE does not run exactly" and result.cause in CAUSES
    assert "SteTern" in result.explanation
    assert result.samples == 200 and result.compared_samples == 48
    assert result.parity.argmax_agreement < 0.999
    # the layers before it agree
    assert result.layer("d0").diverges is False
    assert "the cause is in 'tern'" in str(result) or "> tern" in str(result)


def test_planted_padding_difference_is_named(tmp_path):
    """Only 'small' reads padding at every position; LCE's binary convolution gets those
    wrong (issue 19's smallest reproduction), 'big' before it is exact."""
    model = small_map_model()
    flatbuffer = _refused(model, parity_samples=64)
    result = compare_layers(model, flatbuffer, samples=64)
    assert result.first_divergence == "small" and result.culprit == "small"
    assert result.cause == "padding value"
    assert "pad_values=0" in result.explanation
    for name in ("stem", "big", "pool"):
        row = result.layer(name)
        assert not row.diverges, row
    assert result.layer("big").sign_flips == 0
    assert result.layer("bn2").relative_diff > 0.1  # small+bn2: one LceBconv2d
    png = plot_layer_comparison(result, str(tmp_path / "layers.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_argument_errors():
    model = no_bn_mlp((8, 4), inputs=6)
    with pytest.raises(ValueError, match="bytes of a .tflite"):
        compare_layers(model, "model.tflite")
    with pytest.raises(ValueError, match="tf.keras.Model"):
        compare_layers(object(), b"")


@pytest.mark.slow
def test_refused_export_prints_the_layer_diff(tmp_path, capsys):
    """One command: a refused export exits 1, writes nothing, and prints where and why."""
    model_path = str(tmp_path / "ternary.keras")
    ternary_mlp().save(model_path)
    out = str(tmp_path / "out.tflite")
    argv = ["export", model_path, out, "--conversion", "graphdef", "--parity-samples", "200",
            "--no-float-reference"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert not os.path.exists(out)
    assert "disagrees with Keras" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "First divergence" in captured.out and "'tern'" in captured.out
    assert "quantizer LCE does not run exactly" in captured.out
    # --diagnose on an export that passes: the diff says they agree; the file is written.
    model_path = str(tmp_path / "exact.keras")
    randomize_batchnorm(no_bn_mlp((16, 24, 5)), seed=2).save(model_path)
    argv = ["export", model_path, out, "--conversion", "graphdef", "--no-float-reference",
            "--diagnose", "--diagnose-samples", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert os.path.getsize(out) > 0
    assert "agree at every layer" in printed and "layers compared on the 16" in printed


# -- larq-zoo: reference architectures nobody here wrote (random weights, no download) -------

def _zoo():
    return pytest.importorskip(
        "larq_zoo",
        reason="larq-zoo is an optional test dependency: pip install --no-deps "
        "larq-zoo==2.4.0 zookeeper==1.4.0 typeguard",
    )


def _zoo_model(name, size):
    zoo = _zoo()
    tf.keras.utils.set_random_seed(0)
    build = getattr(zoo.literature, name, None) or getattr(zoo.sota, name)
    return build(input_shape=(size, size, 3), weights=None, num_classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("size", [96, 64])
def test_larq_zoo_binary_densenet(size):
    """BinaryDenseNet28 (the smallest larq-zoo network, 4.6M weights). At 96x96 every map is
    at least 3x3: LCE agrees with Keras and the export passes. At 64x64 its last dense block
    runs 3x3 zero-padded binary convolutions on 2x2 maps, which LCE computes differently:
    refused, and the diff names the first such layer and the padding."""
    model = _zoo_model("BinaryDenseNet28", size)
    if size == 96:
        report = to_lce(model, None, parity_samples=32, **FAST)
        assert report.parity.passed and report.parity.argmax_agreement == 1.0
        assert report.all_binarized_layers_binary
        return
    flatbuffer = _refused(model, parity_samples=32)
    result = compare_layers(model, flatbuffer, samples=32)
    first = model.get_layer(result.first_divergence)
    assert result.cause == "padding value" and "LCE defect" in result.explanation
    assert first.input_shape[1:3] == (2, 2) and first.padding == "same"
    assert first.pad_values == 0
    assert result.parity.argmax_agreement < 0.999
    # every layer before it agrees
    before = result.layers[: [r.layer for r in result.layers].index(first.name)]
    assert before and not any(row.diverges for row in before)
