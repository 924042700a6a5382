"""`larq-meta export`: the command end to end, its one-line errors (checked before any
conversion or write), refused code-carrying model files and refused output paths."""

import json
import os

import pytest

pytest.importorskip("larq_compute_engine")

from export_models import randomize_batchnorm, ternary_mlp  # noqa: E402 - larq_meta first
from larq_meta import export, models  # noqa: E402
from larq_meta.batchnorm import snapshot_batchnorm  # noqa: E402
from larq_meta.cli import main  # noqa: E402
from larq_meta.export import (  # noqa: E402
    UnsafeModelError,
    export_main,
    load_bn_snapshots,
    load_model,
    save_bn_snapshots,
)
from larq_meta.optimizers import MetaplasticAdam  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture
def saved_model(tmp_path):
    """A compiled paper_mlp saved as .keras, with per-task BatchNorm snapshots in an .npz."""
    model = models.paper_mlp((12, 10), input_shape=(16,))
    model.compile(optimizer=MetaplasticAdam(), loss="mse")
    snapshots = [snapshot_batchnorm(randomize_batchnorm(model, seed)) for seed in (4, 5)]
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    snapshot_path = save_bn_snapshots(str(tmp_path / "bn.npz"), snapshots)
    return model_path, snapshot_path, snapshots


@pytest.fixture
def no_conversion(monkeypatch):
    """Fail the test if the command reaches the conversion."""

    def fail(*args, **kwargs):
        raise AssertionError("to_lce was called: the argument was not checked first")

    monkeypatch.setattr(export, "to_lce", fail)


def _one_line_error(capsys, code, result, *fragments):
    err = capsys.readouterr().err.strip()
    assert result == code, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("larq-meta export: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.slow
def test_export_command_end_to_end(tmp_path, saved_model, capsys):
    model_path, snapshot_path, snapshots = saved_model
    loaded = load_bn_snapshots(snapshot_path)
    assert len(loaded) == 2 and sorted(loaded[1]) == ["bn_1", "bn_2", "bn_3"]
    np.testing.assert_array_equal(loaded[1]["bn_2"][2], snapshots[1]["bn_2"][2])

    out = str(tmp_path / "model.tflite")
    report_json = str(tmp_path / "report.json")
    float_out = str(tmp_path / "float.tflite")
    argv = ["export", model_path, out, "--task", "0", "--bn-snapshots", snapshot_path]
    argv += ["--parity-samples", "32", "--conversion", "graphdef", "--float-output", float_out]
    argv += ["--report-json", report_json, "--min-agreement", "0.99"]
    assert main(argv) == 0
    assert os.path.getsize(out) > 0
    data = json.load(open(report_json))
    assert data["task"] == 0 and data["op_counts"]["LceBconv2d"] == 2
    assert data["parity"]["argmax_agreement"] == 1.0
    assert data["size_bytes"] == os.path.getsize(out)
    assert data["float_tflite_size_bytes"] == os.path.getsize(float_out)
    assert "LceBconv2d 2" in capsys.readouterr().out  # the CLI prints the report

    missing = str(tmp_path / "missing.tflite")
    result = main(["export", model_path, missing, "--task", "7", "--bn-snapshots", snapshot_path])
    _one_line_error(capsys, 1, result, "task 7")
    assert not os.path.exists(missing)
    result = main(["export", str(tmp_path / "nope.keras"), missing])
    _one_line_error(capsys, 1, result, "does not exist")

    # The old entry point still works, with a deprecation warning.
    with pytest.warns(DeprecationWarning, match="export_main"):
        assert export_main([model_path, missing, "--no-parity", "--conversion", "graphdef"]) == 0
    assert os.path.getsize(missing) > 0


def test_argument_errors_before_any_work(tmp_path, saved_model, capsys, no_conversion):
    """Issue 16, point 8: one line, exit 2 for usage / 1 for unreadable files, nothing
    written, the conversion never reached."""
    model_path, snapshot_path, _ = saved_model
    out = str(tmp_path / "out.tflite")
    text = tmp_path / "notes.txt"
    text.write_text("not an npz\n")
    cases = [
        (2, ["--parity-samples", "0"], "--parity-samples"),
        (2, ["--parity-samples", "-3"], "--parity-samples"),
        (2, ["--parity-data", str(tmp_path / "missing.npz")], "no such file"),
        (2, ["--bn-snapshots", str(tmp_path)], "not a regular file"),
        (1, ["--task", "0", "--bn-snapshots", str(text)], "not an .npz archive"),
        (1, ["--parity-data", str(text)], "not an .npz archive"),
        (2, ["--report-json", str(tmp_path / "no" / "r.json")], "does not exist"),
        (2, ["--float-output", str(tmp_path / "no" / "f.tflite")], "does not exist"),
        (2, ["--min-agreement", "1.5"], "--min-agreement"),
        (2, ["--max-diff", "-1"], "--max-diff"),
        (2, ["--task", "0"], "--task needs --bn-snapshots"),
        (2, ["--no-parity", "--min-agreement", "0.9"], "--no-parity"),
        (2, ["--no-parity", "--allow-mismatch"], "--no-parity"),
        (2, ["--no-float-reference", "--float-output", str(tmp_path / "f.tflite")],
         "--no-float-reference"),
    ]
    for code, extra, fragment in cases:
        result = main(["export", model_path, out, *extra])
        err = capsys.readouterr().err.strip()
        assert result == code, (extra, err)
        assert fragment in err, (extra, err)
        # One error line (argparse prints its usage above it), no traceback.
        assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
        assert err.splitlines()[-1].startswith("larq-meta export: error:"), (extra, err)
        assert "Traceback" not in err
        assert sorted(os.listdir(tmp_path)) == ["bn.npz", "model.keras", "notes.txt"], extra


def test_outputs_that_are_the_input_or_each_other_are_refused(
    tmp_path, saved_model, capsys, no_conversion
):
    """Issue 16, point 2: compared as resolved real paths, before any work."""
    model_path, _, _ = saved_model
    before = open(model_path, "rb").read()
    out = str(tmp_path / "out.tflite")
    link = tmp_path / "link.keras"
    link.symlink_to(model_path)
    cases = [
        ([model_path, model_path], "the input model"),
        ([model_path, str(link)], "the input model"),
        ([model_path, str(tmp_path / "sub" / ".." / "model.keras")], "the input model"),
        ([model_path, out, "--float-output", out], "same file as output_path"),
        ([model_path, out, "--report-json", out], "same file as output_path"),
        ([model_path, out, "--float-output", str(tmp_path / "r"), "--report-json",
          str(tmp_path / "r")], "same file as --float-output"),
        ([model_path, out, "--report-json", model_path], "the input model"),
    ]
    (tmp_path / "sub").mkdir()
    for argv, fragment in cases:
        result = main(["export", *argv])
        _one_line_error(capsys, 2, result, fragment)
    assert open(model_path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["bn.npz", "link.keras", "model.keras", "sub"]


def _lambda_model(marker):
    x0 = tf.keras.Input((4,))
    x = tf.keras.layers.Lambda(
        lambda t: (open(marker, "w").write("code from the model file ran"), t)[1], name="evil"
    )(x0)
    return tf.keras.Model(x0, tf.keras.layers.Dense(2)(x), name="malicious")


@pytest.mark.parametrize("suffix", [".h5", ".keras", "_savedmodel"])
def test_model_file_carrying_code_is_refused(tmp_path, capsys, suffix):
    """Issue 16, point 1: a Lambda that writes a marker file; loading must not run it."""
    marker = str(tmp_path / "marker")
    path = str(tmp_path / f"malicious{suffix}")
    model = _lambda_model(marker)
    if suffix == "_savedmodel":
        model.save(path, save_format="tf")
    else:
        model.save(path)
    os.remove(marker)  # written while the model was built and saved
    out = str(tmp_path / "out.tflite")
    result = main(["export", path, out])
    _one_line_error(capsys, 1, result, "Python code", "--unsafe")
    assert not os.path.exists(marker)
    assert not os.path.exists(out)
    with pytest.raises(UnsafeModelError):
        load_model(path)
    assert not os.path.exists(marker)
    # The check is what stops it: without safe mode the code does run.
    load_model(path, safe_mode=False)
    assert os.path.exists(marker)


def test_bn_snapshot_files(tmp_path):
    snapshots = [{"bn": [np.arange(3.0), np.ones(3)]}, None, {"bn": [np.zeros(3), np.ones(3)]}]
    path = save_bn_snapshots(tmp_path / "s", snapshots)  # .npz appended, as np.savez does
    assert path == str(tmp_path / "s.npz")
    loaded = load_bn_snapshots(path)
    assert loaded[1] is None and len(loaded) == 3
    np.testing.assert_array_equal(loaded[0]["bn"][0], np.arange(3.0))
    np.savez(tmp_path / "bad.npz", nonsense=np.zeros(2))
    with pytest.raises(export.ExportError, match="'nonsense' is not"):
        load_bn_snapshots(tmp_path / "bad.npz")


@pytest.mark.slow
def test_disagreeing_export_needs_allow_mismatch(tmp_path, capsys):
    """Issue 19: exit 1 and nothing written by default; --allow-mismatch writes, warns."""
    model_path = str(tmp_path / "ternary.keras")
    ternary_mlp().save(model_path)
    out = str(tmp_path / "out.tflite")
    argv = ["export", model_path, out, "--conversion", "graphdef", "--parity-samples", "200"]
    _one_line_error(capsys, 1, main(argv), "disagrees with Keras", "--allow-mismatch")
    assert not os.path.exists(out)
    assert main([*argv, "--allow-mismatch"]) == 0
    printed = capsys.readouterr().out
    assert os.path.getsize(out) > 0
    assert "WARNING" in printed and "written although" in printed
