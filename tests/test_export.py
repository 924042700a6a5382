"""Export to Larq Compute Engine: full exports, parity, op counts, sizes, reports, errors."""

import dataclasses
import json
import os
import stat

import pytest

pytest.importorskip("larq_compute_engine")

from export_models import (  # noqa: E402 - imports larq_meta's modules before larq
    BINARY,
    FAST,
    mnist,
    randomize_batchnorm,
    ternary_mlp,
)
from larq_meta import models  # noqa: E402
from larq_meta.batchnorm import snapshot_batchnorm, using_batchnorm  # noqa: E402
from larq_meta.export import (  # noqa: E402
    ExportError,
    ParityError,
    ParityResult,
    compact_binary_float_weights,
    convert_lce,
    float_tflite,
    logit_tolerance,
    op_counts,
    run_lce,
    run_tflite,
    to_lce,
)

import larq as lq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Full exports
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    """paper_mlp trained briefly on real MNIST; task 1's BatchNorm state is the trained one,
    the other snapshots and the live state are random; parity on MNIST test images with their
    real labels."""
    (x_train, y_train), (x_test, y_test) = mnist(n_train=2000, n_test=300)
    tf.keras.utils.set_random_seed(0)
    model = models.compiled_paper_mlp((24, 16), input_shape=(28, 28))
    model.fit(x_train, y_train, epochs=2, batch_size=100, verbose=0)
    trained = snapshot_batchnorm(model)
    snapshots = [snapshot_batchnorm(randomize_batchnorm(model, seed)) for seed in (1, 2)]
    snapshots.insert(1, trained)
    randomize_batchnorm(model, seed=9)  # the live state differs from every snapshot
    live = [w.copy() for w in model.get_weights()]
    path = tmp_path_factory.mktemp("mlp") / "mlp.tflite"
    report = to_lce(model, path, task=1, bn_snapshots=snapshots, parity_data=(x_test, y_test))
    return model, snapshots, live, x_test, y_test, path, report


@pytest.mark.slow
def test_mlp_export_is_binary_and_matches_keras(mlp_export):
    model, snapshots, live, x, y, path, report = mlp_export
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
    assert report.warnings == []
    p = report.parity
    assert p.samples == 300 and p.data == "given" and p.inexact_layers == []
    assert p.argmax_agreement == 1.0 and p.max_abs_diff <= 1e-3
    assert p.samples_over_tolerance == 0
    # Real labels: the trained task-1 state classifies MNIST well above chance, and LCE
    # gets exactly the same accuracy as Keras (numpy reference on the same images).
    with using_batchnorm(model, snapshots[1]):
        expected = np.mean(model(x, training=False).numpy().argmax(1) == y)
    assert p.keras_accuracy == pytest.approx(expected) and expected > 0.6
    assert p.lce_accuracy == p.keras_accuracy
    assert p.rewrite_identical and p.rewrite_max_abs_diff == 0.0
    # int8 storage of dense_1's ±a weights: one DEQUANTIZE, identical outputs.
    assert counts["DEQUANTIZE"] == 1 and report.compaction["verified_identical"] is True
    assert report.compaction["int8_bytes"] * 4 == report.compaction["float_bytes"] == 4 * 784 * 24
    assert report.size_bytes < report.float_tflite_size_bytes
    # The live model kept its own BatchNorm state.
    for a, b in zip(live, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert report.task == 1
    text = str(report)
    assert "LceBconv2d 2" in text and "dense_1" in text and "task 1" in text
    json.dumps(report.to_dict())


@pytest.mark.slow
def test_exported_file_runs_task_state(mlp_export):
    from larq_compute_engine import testing

    model, snapshots, _, x, _, path, _ = mlp_export
    lce = testing.Interpreter(path.read_bytes()).predict(x[:50])
    with using_batchnorm(model, snapshots[1]):
        task1 = model(x[:50], training=False).numpy()
    with using_batchnorm(model, snapshots[2]):
        task2 = model(x[:50], training=False).numpy()
    assert np.abs(lce - task1).max() < 1e-3
    assert np.abs(lce - task2).max() > 1e-2


@pytest.mark.slow
def test_convnet_export_and_no_rewrite(tmp_path):
    model = randomize_batchnorm(models.binary_convnet((8, 16), input_shape=(12, 12, 1)))
    report = to_lce(model, tmp_path / "conv.tflite", parity_samples=64)
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


@pytest.mark.slow
def test_paper_convnet_every_layer_after_the_first_is_binary(tmp_path):
    model = randomize_batchnorm(
        models.paper_convnet((8, 8, 16, 16, 32, 32), (64, 64), input_shape=(16, 16, 1))
    )
    report = to_lce(model, tmp_path / "paper_conv.tflite", parity_samples=64)
    assert report.op_counts["LceBconv2d"] == 8 == len(report.binarized_layers)
    assert report.all_binarized_layers_binary
    assert report.op_counts["CONV_2D"] == 1 and "FULLY_CONNECTED" not in report.op_counts
    assert report.parity.argmax_agreement == 1.0 and report.parity.max_abs_diff <= 1e-3
    assert report.size_ratio > 5  # tiny widths: the fixed flatbuffer structure weighs in


@pytest.mark.slow
def test_bfloat16_model_exports_with_float32_products():
    """A model trained with compute_dtype="bfloat16" exports like its float32 twin."""
    bf16 = randomize_batchnorm(models.paper_mlp((32, 32), compute_dtype="bfloat16"))
    twin = models.paper_mlp((32, 32))
    twin.set_weights(bf16.get_weights())
    x = np.random.default_rng(1).random((64, 784), dtype=np.float32)
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


def test_binary_layers_of_any_type_are_counted():
    """Issue 16, point 10: a binary QuantDepthwiseConv2D / QuantLocallyConnected2D is a
    binarized layer (not "full precision"); LCE has no binary operator for them: reported."""
    x0 = tf.keras.Input((8, 8, 3))
    h = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", use_bias=False)(x0)
    h = tf.keras.layers.BatchNormalization()(h)
    h = lq.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
                                       depthwise_quantizer="ste_sign", name="dw")(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = lq.layers.QuantLocallyConnected2D(4, 2, name="lc", **BINARY)(h)
    h = tf.keras.layers.Flatten()(h)
    h = lq.layers.QuantDense(5, name="head", **BINARY)(h)
    model = randomize_batchnorm(tf.keras.Model(x0, h, name="mixed"))
    report = to_lce(model, None, parity_samples=32, **FAST)
    assert report.binarized_layers == ["dw", "lc", "head"]
    assert report.binary_ops == 1 and not report.all_binarized_layers_binary
    assert "binarized QuantDepthwiseConv2D" in report.float_layers["dw"]
    assert "binarized QuantLocallyConnected2D" in report.float_layers["lc"]
    assert "full-precision" not in " ".join(report.float_layers.values())
    assert any("3 binarized layers but 1 LCE binary ops" in note for note in report.notes)
    assert "MISMATCH" in str(report)
    # ±1 products in float are exact: no warning, exact parity.
    assert report.warnings == [] and report.parity.inexact_layers == []
    assert report.parity.argmax_agreement == 1.0 and report.parity.max_abs_diff <= 1e-3


def test_layer_lce_does_not_run_exactly_is_warned_and_flagged(tmp_path):
    """Issue 16, point 10: a ternary QuantDense gets a warning and a flagged parity result;
    here LCE indeed disagrees with Keras on some inputs."""
    model = ternary_mlp()
    path = tmp_path / "tern.tflite"
    report = to_lce(model, path, parity_samples=200, allow_mismatch=True, **FAST)
    assert "'tern'" in report.warnings[0] and "SteTern" in report.warnings[0]
    assert report.parity.inexact_layers == ["tern"]
    assert report.parity.argmax_agreement < 0.999  # what the warning is about
    # allow_mismatch: written anyway, with a second warning naming the numbers.
    assert path.read_bytes() == report.flatbuffer
    assert len(report.warnings) == 2 and "written although" in report.warnings[1]
    assert report.parity.passed is False
    text = str(report)
    assert "WARNING" in text and "FLAGGED" in text and "FAILED" in text
    assert report.to_dict()["parity"]["inexact_layers"] == ["tern"]


def test_parity_fails_by_default(tmp_path):
    """Issue 19: without thresholds, a disagreeing export is refused (nothing written)."""
    model = ternary_mlp()
    path = str(tmp_path / "out.tflite")
    with pytest.raises(ParityError, match=r"agreement 0\.\d+ < 0\.999.*tern.*allow_mismatch"):
        to_lce(model, path, parity_samples=200, **FAST)
    _assert_untouched(path, None)


def test_logit_tolerance_and_default_judgement():
    reference = np.array([[-4.0, 6.0], [1.0, 2.0]])
    assert logit_tolerance(reference) == pytest.approx(0.05 * 10)
    assert logit_tolerance(np.zeros((3, 2))) == 1e-3  # the floor
    close = ParityResult.from_outputs(reference, reference + 0.4)
    assert close.judge(0.999, logit_tolerance(reference)) == [] and close.passed
    far = ParityResult.from_outputs(reference, reference + 0.6)
    assert far.judge(0.999, logit_tolerance(reference)) == ["max |diff| 0.6 > 0.5"]
    assert far.passed is False and far.logit_range == 10.0


def test_parity_result_from_outputs():
    """The parity numbers against a numpy reference, incl. samples over the tolerance."""
    rng = np.random.default_rng(3)
    keras_out = rng.normal(size=(20, 10)).astype("f4")
    lce_out = keras_out.copy()
    lce_out[:3, 0] += 0.01  # as if 3 samples had one activation flipped
    lce_out[5] = keras_out[5][::-1]  # one sample with another argmax
    labels = keras_out.argmax(1)
    result = ParityResult.from_outputs(keras_out, lce_out, labels)
    assert result.samples == 20 and result.data == "given"
    assert result.samples_over_tolerance == 4
    expected = np.abs(lce_out.astype("f8") - keras_out.astype("f8")).max()
    assert result.max_abs_diff == pytest.approx(expected)
    assert result.argmax_agreement == pytest.approx(
        np.mean(lce_out.argmax(1) == keras_out.argmax(1))
    )
    assert result.keras_accuracy == 1.0 and result.lce_accuracy == result.argmax_agreement
    with pytest.raises(ValueError, match="shapes"):
        ParityResult.from_outputs(keras_out, lce_out[:5])


def test_report_shows_samples_over_tolerance():
    model = randomize_batchnorm(models.paper_mlp((8, 8), input_shape=(10,)))
    report = to_lce(model, None, parity_samples=20, **FAST)
    assert report.parity.samples_over_tolerance == 0
    out = np.random.default_rng(4).normal(size=(20, 10))
    shifted = out.copy()
    shifted[:3, 0] += 0.01
    report = dataclasses.replace(report, parity=ParityResult.from_outputs(out, shifted))
    assert "3 sample(s) > 0.001" in str(report)


def test_compaction_and_runtimes_on_a_float_model():
    x0 = tf.keras.Input((7,))
    model = tf.keras.Model(x0, tf.keras.layers.Dense(5)(x0))
    flatbuffer, converter = convert_lce(model, conversion="graphdef")
    assert "graphdef" in converter
    same, info = compact_binary_float_weights(flatbuffer)
    assert same == flatbuffer and info["tensors"] == []
    assert op_counts(flatbuffer) == {"FULLY_CONNECTED": 1}
    # Both interpreters run it and agree with Keras.
    x = np.random.default_rng(5).normal(size=(40, 7)).astype("f4")
    expected = model(x).numpy()
    np.testing.assert_allclose(run_lce(flatbuffer, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run_tflite(flatbuffer, x), expected, rtol=1e-5, atol=1e-5)


def test_float_tflite_runs_in_batches():
    x0 = tf.keras.Input((7,))
    model = tf.keras.Model(x0, tf.keras.layers.Dense(5)(x0))
    x = np.random.default_rng(6).normal(size=(300, 7)).astype("f4")  # 128+128+44: resized
    got = run_tflite(float_tflite(model), x, batch_size=128)
    np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_to_lce_is_silent_and_report_argument_deprecated(capsys):
    model = models.paper_mlp((8,), input_shape=(10,))
    to_lce(model, None, parity=False, **FAST)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    with pytest.warns(DeprecationWarning, match="report"):
        to_lce(model, None, parity=False, report=False, **FAST)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_file_mode_follows_the_umask(tmp_path, umask):
    """Issue 16, point 10: exported files get 0o666 less the umask, not 0o600."""
    model = models.paper_mlp((8,), input_shape=(10,))
    path = tmp_path / "out.tflite"
    old = os.umask(umask)
    try:
        to_lce(model, path, parity=False, **FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


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
        to_lce(model, path, task=5, bn_snapshots=snapshots)
    with pytest.raises(ExportError, match=r"task 1.*tasks \[0, 2\]"):
        to_lce(model, path, task=1, bn_snapshots=snapshots)
    with pytest.raises(ExportError, match=r"without `task`.*\[0, 2\]"):
        to_lce(model, path, bn_snapshots=snapshots)
    with pytest.raises(ExportError, match="task=0 needs `bn_snapshots`"):
        to_lce(model, path, task=0)
    wrong = [{"bn_1": snapshots[0]["bn_1"], "bn_9": snapshots[0]["bn_2"]}]
    with pytest.raises(ExportError, match=r"task 0 does not fit.*\['bn_2'\].*\['bn_9'\]"):
        to_lce(model, path, task=0, bn_snapshots=wrong)
    with pytest.raises(ExportError, match="'dense_1'"):
        to_lce(model, path, rewrite_dense=["dense_1"])
    with pytest.raises(ExportError, match="thresholds need the parity check"):
        to_lce(model, path, parity=False, min_argmax_agreement=0.99)
    with pytest.raises(ValueError, match="parity_samples"):
        to_lce(model, path, parity_samples=0)
    with pytest.raises(ValueError, match="min_argmax_agreement"):
        to_lce(model, path, min_argmax_agreement=1.5)
    with pytest.raises(ValueError, match="max_abs_diff"):
        to_lce(model, path, max_abs_diff=-1.0)
    with pytest.raises(ExportError, match="does not exist"):
        to_lce(model, tmp_path / "missing" / "out.tflite")
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
        to_lce(model, path, conversion="graphdef")
    _assert_untouched(path, None)


def test_parity_threshold_failure_writes_nothing(tmp_path):
    """A model LCE really disagrees with (a ternary layer) fails the thresholds."""
    model = ternary_mlp()
    path = str(tmp_path / "out.tflite")
    open(path, "wb").write(b"old")
    with pytest.raises(ParityError, match="argmax agreement.*< 0.999.*nothing written"):
        to_lce(model, path, parity_samples=200, min_argmax_agreement=0.999, **FAST)
    with pytest.raises(ParityError, match="max \\|diff\\|.*> 0.001.*nothing written"):
        to_lce(model, path, parity_samples=200, max_abs_diff=1e-3, **FAST)
    _assert_untouched(path, b"old")


def test_lce_private_names_check_the_version(monkeypatch):
    """LCE's private modules (schema, frozen-graph path) are reached through
    `larq_meta._compat`: another LCE version fails loudly instead of misbehaving."""
    import importlib.metadata

    x0 = tf.keras.Input((3,))
    model = tf.keras.Model(x0, tf.keras.layers.Dense(2)(x0))
    flatbuffer = convert_lce(model, conversion="graphdef").flatbuffer
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version",
        lambda name: "0.17.0" if name == "larq-compute-engine" else real(name),
    )
    with pytest.raises(ImportError, match=r"larq-compute-engine 0\.17\.0 .*>=0\.16,<0\.17"):
        op_counts(flatbuffer)
    with pytest.raises(ExportError, match=r"larq-compute-engine 0\.17\.0"):
        convert_lce(model, conversion="graphdef")
