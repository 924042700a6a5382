"""The `larq-meta` sequence commands end to end on real data at a tiny size, and the rules
every command follows: exit 2 for usage errors, 1 for failures, one line each, no TensorFlow
noise, no mixed or overwritten results."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from larq_meta.cli import build_parser, main

TINY = ["--width", "16", "--epochs", "1", "--train-size", "600", "--no-jit"]


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
    run(argv + TINY + ["--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert len(result["final_accuracies"]) == (5 if "split-mnist" in argv else 2)
    assert result["config"]["bn_protocol"] == "per_task"
    assert result["settings"]["train_size"] == 600 and result["settings"]["width"] == 16
    for name in ("task_accuracies.png", "accuracy_matrix.png"):
        assert os.path.exists(tmp_path / name)


def test_bfloat16_compute_dtype(tmp_path):
    run(["permuted-mnist", "--tasks", "2", "--m", "1.35", "--width", "16", "--epochs", "1",
         "--train-size", "600", "--compute-dtype", "bfloat16", "--save-model",
         "--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert result["settings"]["compute_dtype"] == "bfloat16"
    assert min(result["final_accuracies"]) > 0.2  # it learns (chance: 0.1)
    import tensorflow as tf

    from larq_meta.models import BF16QuantDense

    model = tf.keras.models.load_model(tmp_path / "bnn_m1.35" / "model.keras")
    assert sum(isinstance(layer, BF16QuantDense) for layer in model.layers) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["permuted-mnist", "--method", "float", "--compute-dtype", "bfloat16"],
         "--compute-dtype bfloat16 applies to the binarized"),
        (["permuted-mnist", "--recalibrate-bn", "--bn-protocol", "batch_stats"],
         "--recalibrate-bn needs --bn-protocol per_task"),
        (["permuted-mnist", "--resume-previous"], "--resume-previous needs --checkpoint"),
        (["stream", "--train-size", "100"], "--train-size does not apply to streams"),
        (["demo", "--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
        (["demo", "--m", "-1"], "must be a finite number >= 0"),
        (["permuted-mnist", "--width", "0"], "argument --width: must be a positive integer"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main(argv + ["--output", str(tmp_path / "out")] * (argv[0] != "nope")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "summary.json")


def test_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    assert main(["demo", "--output", str(a_file)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o500)
        assert main(["demo", "--output", str(read_only)]) == 2
        assert "not writable" in capsys.readouterr().err


def test_rerun_into_an_output_with_other_settings_is_refused(tmp_path, capsys):
    argv = ["permuted-mnist", "--tasks", "2", "--m", "1.0", *TINY, "--output", str(tmp_path)]
    run(argv)
    before = (tmp_path / "bnn_m1" / "results.json").read_text()
    assert main(argv[:-2] + ["--seed", "2", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (seed: 1 -> 2)" in err and "--overwrite" in err
    assert (tmp_path / "bnn_m1" / "results.json").read_text() == before  # untouched
    # the same settings again: replaced, not appended (one row per epoch)
    run(argv)
    rows = list(csv.DictReader(open(tmp_path / "bnn_m1" / "epochs.csv")))
    assert [(r["task"], r["epoch"]) for r in rows] == [("1", "0"), ("2", "1")]
    run(argv[:-2] + ["--seed", "2", "--overwrite", "--output", str(tmp_path)])
    assert json.load(open(tmp_path / "bnn_m1" / "results.json"))["settings"]["seed"] == 2


def test_resume_with_another_train_size_is_refused_listing_it(tmp_path, capsys):
    argv = ["permuted-mnist", "--tasks", "2", "--m", "1.0", "--checkpoint", *TINY]
    run(argv + ["--output", str(tmp_path)])
    capsys.readouterr()
    changed = [a if a != "600" else "700" for a in argv]
    assert main(changed + ["--output", str(tmp_path), "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings.train_size: 600 -> 700" in err[0]
    assert "sequence_info" in err[0]  # the sequence records its size too


def test_stream_keeps_the_optimizer_and_shares_bn(tmp_path, capsys):
    run(["stream", "--subsets", "3", "--width", "16", "--epochs", "3", "--m", "2.5", "--no-jit",
         "--evaluate-every", "2", "--recalibrate-bn", "--output", str(tmp_path)])
    (label, result), = summary(tmp_path).items()
    assert result["config"]["evaluate_every"] == 2
    assert result["config"]["recalibrate_bn"] is True
    history = json.load(open(tmp_path / "bnn_m2.5" / "results.json"))["history"]
    # every 2nd epoch of the sequence (global 1, 3, 5, 7) and each subset's last (2, 5, 8),
    # counted from the subset's first epoch
    assert [record["epoch"] for record in history] == [1, 2, 0, 2, 1, 2]
    assert result["config"]["reset_optimizer_per_task"] is False
    assert result["config"]["bn_protocol"] == "shared"
    assert len(result["final_accuracies"]) == 3
    assert "test accuracy (one test set, 3 subsets)" in capsys.readouterr().out


def test_tensorboard_curves_run_on_across_tasks(tmp_path):
    import tensorflow as tf

    run(["permuted-mnist", "--tasks", "2", "--m", "1.0", "--width", "16", "--epochs", "2",
         "--train-size", "600", "--no-jit", "--output", str(tmp_path / "out"),
         "--tensorboard", str(tmp_path / "tb")])
    events: dict[str, list[tuple[float, int]]] = {}
    folder = tmp_path / "tb" / "bnn_m1" / "train"
    for name in os.listdir(folder):  # one event file per task's fit
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.wall_time, event.step))
    for tag in ("epoch_acc_task_1", "epoch_acc_task_2", "epoch_loss", "epoch_task"):
        # in the order they were written, the steps run on over both tasks
        assert [step for _, step in sorted(events[tag])] == [0, 1, 2, 3], tag


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "permuted-mnist", "mnist-fashion", "split-mnist", "stream", "analyze", "toy",
            "tune", "export"} <= set(commands)
    for name in sorted(commands):
        assert main([name, "--help"]) == 0, name
        assert "--verbose" in capsys.readouterr().out, name


def test_no_tensorflow_noise_by_default_and_tracebacks_only_with_verbose(tmp_path):
    command = [sys.executable, "-m", "larq_meta.cli", "demo", "--tasks", "1", "--epochs", "1",
               "--width", "8", "--train-size", "200", "--no-jit"]
    done = subprocess.run(command + ["--output", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for noise in ("I0000", "E0000", "cuInit", "oneDNN", "absl::InitializeLog"):
        assert noise not in done.stderr, noise
    # a failure while running: one line, exit 1; the traceback with --verbose
    (tmp_path / "b" / "bnn_m0").mkdir(parents=True)
    (tmp_path / "b" / "bnn_m0" / "checkpoint").write_text("not a folder")
    command = [sys.executable, "-m", "larq_meta.cli", "permuted-mnist", "--tasks", "1", "--m", "0",
               "--epochs", "1", "--width", "8", "--train-size", "200", "--no-jit", "--checkpoint",
               "--output", str(tmp_path / "b")]
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = [line for line in failed.stderr.splitlines() if "larq-meta permuted-mnist" in line]
    assert failed.returncode == 1 and len(lines) == 1 and "Traceback" not in failed.stderr
    assert "checkpoint" in lines[0]  # names the file
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


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
def test_paper_flag_fills_the_reference_settings(monkeypatch, tmp_path, argv, expected):
    import larq_meta.cli.experiments as experiments

    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda tasks, args, **kw: seen.update(vars(args)))
    run(argv + ["--train-size", "100"] * (argv[0] != "stream") + ["--output", str(tmp_path)])
    for key, value in expected.items():
        assert seen[key] == value, key
    np.testing.assert_equal(seen["depth"], 2)
