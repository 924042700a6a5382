"""Every example / `larq-meta` subcommand runs end to end on real data at a tiny size."""

import json
import os
import subprocess
import sys

import pytest

from larq_meta.cli import build_parser, main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run(argv):
    assert main(argv) == 0


def summary(directory):
    return json.load(open(os.path.join(directory, "summary.json")))


def test_demo_prints_both_runs_and_plots(tmp_path, capsys):
    run(["demo", "--width", "16", "--epochs", "1", "--tasks", "2", "--train-size", "2000",
         "--no-jit", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert "m=0 " in out and "m=1.35" in out and "Final test accuracy per task" in out
    assert os.path.getsize(tmp_path / "task_accuracies.png") > 10_000
    assert set(summary(tmp_path)) == {"bnn m=0", "bnn m=1.35"}


@pytest.mark.parametrize(
    "argv",
    [
        ["permuted-mnist", "--tasks", "2", "--m", "1.0"],
        ["permuted-mnist", "--tasks", "2", "--m", "0", "--method", "float"],
        ["permuted-mnist", "--tasks", "2", "--method", "ewc", "--fisher-samples", "50", "--m", "0"],
        ["mnist-fashion", "--order", "fashion_first", "--m", "1.5"],
        ["split-mnist", "--scenario", "task", "--m", "1.35"],
    ],
    ids=["permuted", "float", "ewc", "fashion", "split"],
)
def test_sequence_commands(tmp_path, argv):
    run(argv + ["--width", "16", "--epochs", "1", "--train-size", "600", "--no-jit",
                "--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert len(result["final_accuracies"]) == (5 if "split-mnist" in argv else 2)
    assert result["config"]["bn_protocol"] == "per_task"
    for name in ("task_accuracies.png", "accuracy_matrix.png"):
        assert os.path.exists(tmp_path / name)


def test_bfloat16_compute_dtype(tmp_path):
    run(["permuted-mnist", "--tasks", "2", "--m", "1.35", "--width", "16", "--epochs", "1",
         "--train-size", "600", "--compute-dtype", "bfloat16", "--save-model",
         "--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert result["config"]["compute_dtype"] == "bfloat16"
    assert min(result["final_accuracies"]) > 0.2  # it learns (chance: 0.1)
    import tensorflow as tf

    from larq_meta.models import BF16QuantDense

    model = tf.keras.models.load_model(tmp_path / "bnn_m1.35" / "model.keras")
    assert sum(isinstance(layer, BF16QuantDense) for layer in model.layers) == 3
    with pytest.raises(SystemExit, match="--compute-dtype bfloat16 applies to the binarized"):
        main(["permuted-mnist", "--method", "float", "--compute-dtype", "bfloat16",
              "--output", str(tmp_path / "float")])
    with pytest.raises(SystemExit, match="--recalibrate-bn needs --bn-protocol per_task"):
        main(["permuted-mnist", "--recalibrate-bn", "--bn-protocol", "batch_stats",
              "--output", str(tmp_path / "recalibrated")])


def test_stream_keeps_the_optimizer_and_shares_bn(tmp_path, capsys):
    run(["stream", "--subsets", "3", "--width", "16", "--epochs", "3", "--m", "2.5", "--no-jit",
         "--evaluate-every", "2", "--recalibrate-bn", "--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert result["config"]["evaluate_every"] == 2
    assert result["config"]["recalibrate_bn"] is True
    history = json.load(open(tmp_path / "bnn_m2.5" / "results.json"))["history"]
    assert [record["epoch"] for record in history] == [1, 2] * 3  # every 2nd and each subset's last
    assert result["config"]["reset_optimizer_per_task"] is False
    assert result["config"]["bn_protocol"] == "shared"
    assert len(result["final_accuracies"]) == 3
    assert "test accuracy (one test set, 3 subsets)" in capsys.readouterr().out


def test_toy_and_analyze(tmp_path):
    run(["toy", "--d", "2", "50", "--steps", "100", "--output", str(tmp_path / "toy")])
    assert os.path.exists(tmp_path / "toy" / "toy_d50.png")
    run(["analyze", "--width", "16", "--epochs", "1", "--train-size", "1000", "--eval-size", "500",
         "--bins", "3", "--sample", "10", "--runs", "1", "--fisher-samples", "50",
         "--output", str(tmp_path / "analyze")])
    assert any(name.endswith(".png") for name in os.listdir(tmp_path / "analyze"))


def test_every_command_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "permuted-mnist", "mnist-fashion", "split-mnist", "stream", "analyze", "toy",
            "tune", "export"} <= set(commands)
    for name in ("demo", "permuted-mnist", "stream"):
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0


def test_bad_arguments_are_refused(capsys):
    for argv in (["demo", "--m", "-1"], ["permuted-mnist", "--width", "0"], ["nope"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


def test_example_scripts_forward_to_the_cli():
    for script in sorted(os.listdir(EXAMPLES)):
        done = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, script), "--help"],
            capture_output=True, text=True, timeout=120,
        ) if script == "demo.py" else None
        if done is not None:
            assert done.returncode == 0 and "usage: larq-meta demo" in done.stdout
        text = open(os.path.join(EXAMPLES, script)).read()
        assert "from larq_meta.cli import main" in text


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["permuted-mnist", "--paper"], {"epsilon": 1e-8, "weight_decay": 1e-7, "width": 4096,
                                         "epochs": 40, "tasks": 6}),
        (["permuted-mnist", "--paper", "--weight-decay", "0"], {"weight_decay": 0.0, "epsilon": 1e-8}),
        (["permuted-mnist"], {"epsilon": 1e-7, "weight_decay": 0.0, "width": 256}),
        (["stream", "--paper"], {"weight_decay": 1e-7, "subsets": 60, "evaluate_every": 20}),
    ],
)
def test_paper_flag_fills_the_reference_settings(monkeypatch, argv, expected):
    import larq_meta.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "run_experiment", lambda tasks, args, **kw: seen.update(vars(args)))
    run(argv + ["--train-size", "100"] * (argv[0] != "stream"))
    for key, value in expected.items():
        assert seen[key] == value, key
