"""The `larq-meta` command: continual-learning runs, analyses, searches and exports.

```
larq-meta demo                          # permuted MNIST, m=0 vs m=1.35, table + plot (~5 min)
larq-meta permuted-mnist --m 0 1.35     # the paper's Fig. 2 experiment (--paper: full scale)
larq-meta mnist-fashion --order mnist_first
larq-meta split-mnist --scenario task
larq-meta stream --subsets 60
larq-meta analyze                       # importance vs |W_h|, Fisher correlation, histograms
larq-meta toy                           # the quadratic binary toy problem (Fig. 5a,b)
larq-meta tune ...                      # keras-tuner search of m
larq-meta export MODEL.keras OUT.tflite # Larq Compute Engine flatbuffer, verified
larq-meta <command> --help
```

This package is the only place that parses arguments, prints and chooses exit codes (see
`larq_meta.cli._common`): the library returns values and raises. Each command module has a
`register(subparsers, common)` that adds its parsers with `func` set to a function
`func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import traceback

from larq_meta.cli._common import UsageError, common_parser, describe_error

__all__ = ["build_parser", "main"]

#: Command modules, in the order `--help` lists their commands.
COMMAND_MODULES = ("experiments", "analyze", "tune", "export")


def build_parser() -> argparse.ArgumentParser:
    """The `larq-meta` parser with every command."""
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="larq-meta",
        description="Synaptic metaplasticity for binarized neural networks (Laborieux et al. 2021).",
        parents=[common],
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMAND_MODULES:
        importlib.import_module(f"larq_meta.cli.{name}").register(subparsers, common)
    return parser


def _import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow (as legacy Keras) with its C++ start-up logs hidden unless `verbose`.

    Some of those lines (oneDNN, CUDA probes that read like failures on a CPU machine) are
    written before TensorFlow's log level applies, so they are caught at the file-descriptor
    level and shown only if the import fails. Python warnings are not touched.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    import larq_meta

    if verbose:
        larq_meta.ensure_legacy_keras()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            larq_meta.ensure_legacy_keras()
            import tensorflow as tf

            tf.config.list_physical_devices()  # the device probes log here
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `larq-meta` console command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: 0 for --help, 2 for a usage error
        return int(exit_.code or 0)
    prog = f"larq-meta {args.command}"
    try:
        _import_tensorflow(args.verbose)
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (exit 1)
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        print(f"{prog}: error: {describe_error(error)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
