"""Export to Larq Compute Engine: the dense rewrite, parity, op counts, sizes, errors, CLI."""

import json
import os

import larq_meta  # noqa: F401 - first, so tf.keras is tf-keras

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("larq_compute_engine")

from larq_meta import models  # noqa: E402
from larq_meta.batchnorm import snapshot_batchnorm, using_batchnorm  # noqa: E402
from larq_meta.export import (  # noqa: E402
    ExportError,
    ParityError,
    compact_binary_float_weights,
    dense_to_conv1x1,
    export_main,
    load_bn_snapshots,
    measure_latency,
    op_counts,
    save_bn_snapshots,
    to_lce,
)

RNG = np.random.default_rng(0)
BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
#: Quicker exports for tests that do not need the SavedModel path or the float reference.
FAST = dict(float_reference=False, conversion="graphdef", report=False)


def randomize_batchnorm(model, seed=0):
    """BatchNorm states far from the identity, so that BN folding is actually exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            sign = rng.choice([-1, 1], gamma.shape)
            layer.set_weights(
                [
                    (rng.uniform(0.5, 2.0, gamma.shape) * sign).astype("f4"),
                    rng.normal(size=beta.shape).astype("f4"),
                    rng.normal(size=mean.shape).astype("f4"),
                    rng.uniform(0.5, 3.0, var.shape).astype("f4"),
                ]
            )
    return model


def no_bn_mlp(widths, inputs=20):
    """Real-input QuantDense, then binarized QuantDense layers, no BatchNorm at all."""
    x0 = tf.keras.Input((inputs,))
    x = lq.layers.QuantDense(widths[0], kernel_quantizer="ste_sign", name="d0")(x0)
    for i, w in enumerate(widths[1:], 1):
        x = lq.layers.QuantDense(w, name=f"d{i}", **BINARY)(x)
    return tf.keras.Model(x0, x, name="no_bn")


def sequential_with_bias():
    return tf.keras.Sequential(
        [
            tf.keras.Input((12,)),
            tf.keras.layers.Dense(16),
            tf.keras.layers.BatchNormalization(),
            lq.layers.QuantDense(
                9,
                input_quantizer="approx_sign",
                kernel_quantizer="ste_sign",
                bias_initializer="random_normal",
            ),
            tf.keras.layers.BatchNormalization(),
            lq.layers.QuantDense(
                5, input_quantizer="ste_sign", kernel_quantizer="swish_sign", activation="tanh"
            ),
        ],
        name="seq",
    )


def nested_model():
    inner = no_bn_mlp((10, 6), inputs=8)
    x0 = tf.keras.Input((8,))
    x = inner(x0)
    x = lq.layers.QuantDense(4, name="outer", **BINARY)(x)
    return tf.keras.Model(x0, x, name="outer_model")


# ---------------------------------------------------------------------------------------------
# The QuantDense -> 1x1 QuantConv2D rewrite (Keras only, no conversion)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, rewritten",
    [
        (lambda: randomize_batchnorm(models.paper_mlp((8,), input_shape=(6, 5))), 1),
        (lambda: randomize_batchnorm(models.paper_mlp((16, 12), input_shape=(30,))), 2),
        (lambda: randomize_batchnorm(models.paper_mlp((33, 7, 21), 3, input_shape=(17,))), 3),
        (lambda: no_bn_mlp((9,)), 0),
        (lambda: no_bn_mlp((24, 13, 5)), 2),
        (lambda: randomize_batchnorm(sequential_with_bias()), 2),
        (nested_model, 2),
        (lambda: randomize_batchnorm(models.binary_convnet((4, 8), input_shape=(12, 12, 1))), 1),
        (lambda: randomize_batchnorm(models.paper_convnet(
            (4, 4, 8, 8, 8, 8), (16, 12), input_shape=(16, 16, 1))), 3),
    ],
)
def test_rewrite_is_exact(build, rewritten):
    model = build()
    before = [w.copy() for w in model.get_weights()]
    x = RNG.normal(size=(64,) + model.input_shape[1:]).astype("f4")
    expected = model(x, training=False).numpy()
    if rewritten == 0:
        with pytest.raises(ExportError, match="no QuantDense layer to rewrite"):
            dense_to_conv1x1(model)
        return
    new = dense_to_conv1x1(model)
    got = new(x, training=False).numpy()
    np.testing.assert_array_equal(got, expected)
    layers = list(_flat(new))
    convs = [c for c in layers if isinstance(c, lq.layers.QuantConv2D) and c.kernel_size == (1, 1)]
    assert len(convs) == rewritten
    dense = [d for d in layers if isinstance(d, lq.layers.QuantDense)]
    assert all(d.input_quantizer is None for d in dense)  # only real-input dense layers remain
    # The original is untouched.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(x, training=False).numpy(), expected)


def _flat(model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _flat(layer)
        else:
            yield layer


def test_rewrite_refuses_what_it_cannot_do():
    mlp = models.paper_mlp((8, 8), input_shape=(10,))
    with pytest.raises(ExportError, match="'dense_1'.*real-valued"):
        dense_to_conv1x1(mlp, ["dense_1"])
    with pytest.raises(ExportError, match="'nope'.*does not exist"):
        dense_to_conv1x1(mlp, ["nope"])
    with pytest.raises(ExportError, match="'bn_1'.*not a QuantDense"):
        dense_to_conv1x1(mlp, ["bn_1"])
    x0 = tf.keras.Input((10,))
    x = lq.layers.QuantDense(
        6, input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign", name="mag"
    )(x0)
    x = lq.layers.QuantDense(
        4, input_quantizer="ste_tern", kernel_quantizer="ste_sign", name="tern"
    )(x)
    odd = tf.keras.Model(x0, x)
    with pytest.raises(ExportError, match="'mag'.*quantizer MagnitudeAwareSign is not a sign"):
        dense_to_conv1x1(odd, ["mag"])
    with pytest.raises(ExportError, match="'tern'.*input quantizer SteTern is not a sign"):
        dense_to_conv1x1(odd, ["tern"])

    class Subclassed(tf.keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = lq.layers.QuantDense(3, **BINARY)

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(tf.zeros((1, 5)))
    with pytest.raises(ExportError, match="'subclassed'.*rewrite_dense=False"):
        dense_to_conv1x1(sub)


# ---------------------------------------------------------------------------------------------
# Full exports
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    """paper_mlp exported with task 1's BatchNorm state, real-ish parity data with labels."""
    model = models.paper_mlp((24, 16), input_shape=(6, 6))
    snapshots = [snapshot_batchnorm(randomize_batchnorm(model, seed)) for seed in (1, 2, 3)]
    randomize_batchnorm(model, seed=9)  # the live state differs from every snapshot
    live = [w.copy() for w in model.get_weights()]
    x = RNG.random((300, 6, 6)).astype("f4")
    with using_batchnorm(model, snapshots[1]):
        y = model(x, training=False).numpy().argmax(1)
    path = tmp_path_factory.mktemp("mlp") / "mlp.tflite"
    report = to_lce(model, path, task=1, bn_snapshots=snapshots, parity_data=(x, y), report=False)
    return model, snapshots, live, x, path, report


def test_mlp_export_is_binary_and_matches_keras(mlp_export):
    model, snapshots, live, x, path, report = mlp_export
    assert path.read_bytes() == report.flatbuffer
    counts = op_counts(report.flatbuffer)
    assert counts == report.op_counts
    # dense_2 and dense_3 are binarized: both LceBconv2d; dense_1 sees real pixels.
    assert counts["LceBconv2d"] == 2 == len(report.binarized_layers)
    assert report.all_binarized_layers_binary
    assert counts["FULLY_CONNECTED"] == 1 and "LceDequantize" not in counts
    assert report.rewritten_layers == ["dense_2", "dense_3"]
    assert list(report.float_layers) == ["dense_1"]
    assert "real-valued input" in report.float_layers["dense_1"]
    p = report.parity
    assert p.samples == 300 and p.data == "given"
    assert p.argmax_agreement == 1.0 and p.max_abs_diff <= 1e-3
    assert p.samples_over_tolerance == 0
    assert p.keras_accuracy == 1.0 and p.lce_accuracy == 1.0  # labels are task 1's own predictions
    assert p.rewrite_identical and p.rewrite_max_abs_diff == 0.0
    # int8 storage of dense_1's ±a weights: one DEQUANTIZE, identical outputs.
    assert counts["DEQUANTIZE"] == 1 and report.compaction["verified_identical"] is True
    assert report.compaction["int8_bytes"] * 4 == report.compaction["float_bytes"] == 4 * 36 * 24
    assert report.size_bytes < report.float_tflite_size_bytes
    # The live model kept its own BatchNorm state.
    for a, b in zip(live, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert report.task == 1
    text = str(report)
    assert "LceBconv2d 2" in text and "dense_1" in text and "task 1" in text
    json.dumps(report.to_dict())


def test_exported_file_runs_task_state(mlp_export):
    from larq_compute_engine import testing

    model, snapshots, _, x, path, _ = mlp_export
    lce = testing.Interpreter(path.read_bytes()).predict(x[:50])
    with using_batchnorm(model, snapshots[1]):
        task1 = model(x[:50], training=False).numpy()
    with using_batchnorm(model, snapshots[2]):
        task2 = model(x[:50], training=False).numpy()
    assert np.abs(lce - task1).max() < 1e-3
    assert np.abs(lce - task2).max() > 1e-2


def test_convnet_export_and_no_rewrite(tmp_path):
    model = randomize_batchnorm(models.binary_convnet((8, 16), input_shape=(12, 12, 1)))
    report = to_lce(model, tmp_path / "conv.tflite", parity_samples=64, report=False)
    counts = report.op_counts
    assert counts["LceBconv2d"] == 2 == len(report.binarized_layers)  # conv_2 and dense_3
    assert counts["CONV_2D"] == 1 and "FULLY_CONNECTED" not in counts
    assert report.parity.argmax_agreement == 1.0 and report.parity.max_abs_diff <= 1e-3
    assert report.size_bytes < report.float_tflite_size_bytes

    # Without the rewrite the binarized dense layer is a float FULLY_CONNECTED: reported.
    plain = to_lce(model, None, rewrite_dense=False, parity=False, **FAST)
    assert plain.op_counts["LceBconv2d"] == 1 and plain.op_counts["FULLY_CONNECTED"] == 1
    assert not plain.all_binarized_layers_binary
    assert "rewrite disabled" in plain.float_layers["dense_3"]
    assert any("dense_3" in note for note in plain.notes)
    assert plain.size_bytes > report.size_bytes


def test_paper_convnet_every_layer_after_the_first_is_binary(tmp_path):
    model = randomize_batchnorm(
        models.paper_convnet((8, 8, 16, 16, 32, 32), (64, 64), input_shape=(16, 16, 1))
    )
    report = to_lce(model, tmp_path / "paper_conv.tflite", parity_samples=64, report=False)
    assert report.op_counts["LceBconv2d"] == 8 == len(report.binarized_layers)
    assert report.all_binarized_layers_binary
    assert report.op_counts["CONV_2D"] == 1 and "FULLY_CONNECTED" not in report.op_counts
    assert report.parity.argmax_agreement == 1.0 and report.parity.max_abs_diff <= 1e-3
    assert report.size_ratio > 5  # tiny widths: the fixed flatbuffer structure weighs in


def test_bfloat16_model_exports_with_float32_products(tmp_path):
    """A model trained with compute_dtype="bfloat16" exports like its float32 twin."""
    bf16 = randomize_batchnorm(models.paper_mlp((32, 32), compute_dtype="bfloat16"))
    twin = models.paper_mlp((32, 32))
    twin.set_weights(bf16.get_weights())
    x = RNG.random((64, 784), dtype=np.float32)
    report = to_lce(bf16, None, parity_data=x, **{**FAST, "float_reference": True})
    assert report.float_tflite_size_bytes  # the stock converter has no XlaDotV2 either
    assert report.op_counts["LceBconv2d"] == 2
    assert any("BF16QuantDense" in note for note in report.notes)
    assert report.parity.argmax_agreement == 1.0 and report.parity.max_abs_diff <= 1e-3
    reference = to_lce(twin, None, parity_data=x, **FAST)
    assert report.op_counts == reference.op_counts
    assert report.parity.max_abs_diff == reference.parity.max_abs_diff
    # the user's model is untouched
    assert isinstance(bf16.get_layer("dense_2"), models.BF16QuantDense)

    inputs = tf.keras.Input((784,))
    nested = tf.keras.Model(inputs, bf16(inputs), name="outer")
    report = to_lce(nested, None, parity_data=x, **FAST)
    assert report.op_counts == reference.op_counts
    assert report.parity.max_abs_diff == reference.parity.max_abs_diff


def test_parity_counts_samples_over_the_tolerance(monkeypatch):
    import larq_meta.export as export

    run_lce = export._run_lce

    def shifted(flatbuffer, x):  # as if 3 samples had one activation flipped
        out = run_lce(flatbuffer, x)
        out[:3, 0] += 0.01
        return out

    monkeypatch.setattr(export, "_run_lce", shifted)
    model = randomize_batchnorm(models.paper_mlp((8, 8), input_shape=(10,)))
    report = to_lce(model, None, parity_samples=20, **FAST)
    assert report.parity.samples_over_tolerance == 3
    assert 0.01 - 1e-4 < report.parity.max_abs_diff < 0.01 + 1e-4
    assert "3 sample(s) > 0.001" in str(report)


def test_compaction_leaves_real_float_weights_alone():
    x0 = tf.keras.Input((7,))
    model = tf.keras.Model(x0, tf.keras.layers.Dense(5)(x0))
    from larq_meta.export import _convert_lce

    flatbuffer, _ = _convert_lce(model, {}, "graphdef")
    same, info = compact_binary_float_weights(flatbuffer)
    assert same == flatbuffer and info["tensors"] == []
    assert op_counts(flatbuffer) == {"FULLY_CONNECTED": 1}
    for runtime in ("lce", "tflite"):
        timing = measure_latency(flatbuffer, runtime=runtime, runs=3, warmup=1)
        assert timing["median_ms"] > 0


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing at the output path
# ---------------------------------------------------------------------------------------------


def _assert_untouched(path, before):
    directory = os.path.dirname(path)
    if before is None:
        assert not os.path.exists(path)
    else:
        assert open(path, "rb").read() == before
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]


@pytest.mark.parametrize("existing", [None, b"previous export"])
def test_bad_task_index(tmp_path, existing):
    model = models.paper_mlp((8,), input_shape=(10,))
    path = str(tmp_path / "out.tflite")
    if existing is not None:
        open(path, "wb").write(existing)
    snapshots = [snapshot_batchnorm(model), None, snapshot_batchnorm(model)]
    with pytest.raises(ExportError, match=r"task 5.*tasks \[0, 2\]"):
        to_lce(model, path, task=5, bn_snapshots=snapshots, report=False)
    with pytest.raises(ExportError, match=r"task 1.*tasks \[0, 2\]"):
        to_lce(model, path, task=1, bn_snapshots=snapshots, report=False)
    with pytest.raises(ExportError, match=r"without `task`.*\[0, 2\]"):
        to_lce(model, path, bn_snapshots=snapshots, report=False)
    with pytest.raises(ExportError, match="task=0 needs `bn_snapshots`"):
        to_lce(model, path, task=0, report=False)
    wrong = [{"bn_1": snapshots[0]["bn_1"], "bn_9": snapshots[0]["bn_2"]}]
    with pytest.raises(ExportError, match=r"task 0 does not fit.*\['bn_2'\].*\['bn_9'\]"):
        to_lce(model, path, task=0, bn_snapshots=wrong, report=False)
    with pytest.raises(ExportError, match="'dense_1'"):
        to_lce(model, path, rewrite_dense=["dense_1"], report=False)
    with pytest.raises(ExportError, match="thresholds need the parity check"):
        to_lce(model, path, parity=False, min_argmax_agreement=0.99, report=False)
    _assert_untouched(path, existing)


def test_unconvertible_layer_is_named(tmp_path):
    x0 = tf.keras.Input((8,))
    x = lq.layers.QuantDense(6, kernel_quantizer="ste_sign", name="d0")(x0)
    igamma = tf.keras.layers.Lambda(
        lambda t: tf.math.igamma(tf.abs(t) + 1.0, tf.abs(t) + 2.0), name="weird_igamma"
    )
    x = igamma(x)
    model = tf.keras.Model(x0, x, name="unconvertible")
    path = str(tmp_path / "out.tflite")
    with pytest.raises(ExportError, match="Igamma.*'weird_igamma'"):
        to_lce(model, path, conversion="graphdef", report=False)
    _assert_untouched(path, None)


def test_parity_threshold_failure_writes_nothing(tmp_path):
    model = randomize_batchnorm(models.paper_mlp((8,), input_shape=(10,)))
    path = str(tmp_path / "out.tflite")
    open(path, "wb").write(b"old")
    with pytest.raises(ParityError, match="max \\|diff\\|.*nothing written"):
        to_lce(model, path, max_abs_diff=-1.0, **FAST)
    _assert_untouched(path, b"old")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_export_main_end_to_end(tmp_path, capsys):
    model = models.paper_mlp((12, 10), input_shape=(16,))
    model.compile(optimizer=larq_meta.MetaplasticAdam(), loss="mse")
    snapshots = [snapshot_batchnorm(randomize_batchnorm(model, seed)) for seed in (4, 5)]
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    snapshot_path = str(tmp_path / "bn.npz")
    save_bn_snapshots(snapshot_path, snapshots)
    loaded = load_bn_snapshots(snapshot_path)
    assert len(loaded) == 2 and sorted(loaded[1]) == ["bn_1", "bn_2", "bn_3"]
    np.testing.assert_array_equal(loaded[1]["bn_2"][2], snapshots[1]["bn_2"][2])

    out = str(tmp_path / "model.tflite")
    report_json = str(tmp_path / "report.json")
    argv = [model_path, out, "--task", "0", "--bn-snapshots", snapshot_path]
    argv += ["--parity-samples", "32", "--conversion", "graphdef"]
    argv += ["--report-json", report_json, "--min-agreement", "0.99"]
    assert export_main(argv) == 0
    assert os.path.getsize(out) > 0
    data = json.load(open(report_json))
    assert data["task"] == 0 and data["op_counts"]["LceBconv2d"] == 2
    assert data["parity"]["argmax_agreement"] == 1.0
    assert "LceBconv2d 2" in capsys.readouterr().out

    missing = str(tmp_path / "missing.tflite")
    assert export_main([model_path, missing, "--task", "7", "--bn-snapshots", snapshot_path]) == 1
    assert "task 7" in capsys.readouterr().err and not os.path.exists(missing)
    assert export_main([str(tmp_path / "nope.keras"), missing]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_float_tflite_runs_in_batches():
    from larq_meta.export import _run_tflite, float_tflite

    x0 = tf.keras.Input((7,))
    model = tf.keras.Model(x0, tf.keras.layers.Dense(5)(x0))
    x = RNG.normal(size=(300, 7)).astype("f4")  # 128 + 128 + 44: the last batch is resized
    got = _run_tflite(float_tflite(model), x, batch_size=128)
    np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)
