"""What every `larq-meta` command shares: argument types, the usage error, output helpers.

The exit-code rule of the whole command line: 0 success, 2 a usage error (argparse's own, or
`UsageError` raised by a command after parsing), 1 a failure while running. A failure prints
one line, `larq-meta <command>: error: <message>`, naming the argument or file; the traceback
only with `--verbose`.
"""

from __future__ import annotations

import argparse
import math
import os


class UsageError(Exception):
    """A command's arguments do not fit together (exit 2, like argparse's own errors)."""


# -- argparse types: each error names the expected value ------------------------------------------


def positive_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int(text, 0, "an integer >= 0")


def _int(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def non_negative_float(text: str) -> float:
    return _float(text, positive=False)


def positive_float(text: str) -> float:
    return _float(text, positive=True)


def _float(text: str, positive: bool) -> float:
    expected = "> 0" if positive else ">= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number {expected}, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise argparse.ArgumentTypeError(f"must be a finite number {expected}, got {text}")
    return value


def existing_file(text: str) -> str:
    """A path to an existing regular file (a folder or a device is refused by name)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text}: not a regular file")
    return text


def output_folder(path: str, option: str = "--output") -> str:
    """Create the output folder `path`; a `UsageError` naming `option`, before any work, if
    it is a file, cannot be created or is not writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path}: exists and is not a folder; choose another {option}.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot create it ({error.strerror}).") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: not writable; choose another {option}.")
    return path


def tensorboard(log_dir: str):
    """Keras' `TensorBoard` callback writing into `log_dir`; a `UsageError` that says how to
    install the `tensorboard` package (TensorFlow >= 2.16 no longer installs it) if missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install 'larq-meta[tensorboard]'."
        )
    import tensorflow as tf

    return tf.keras.callbacks.TensorBoard(log_dir=log_dir)


def common_parser() -> argparse.ArgumentParser:
    """Options every command takes (added through `parents=`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--verbose", action="store_true",
        help="show TensorFlow's logs and, on failure, the full traceback",
    )
    return parser


def describe_error(error: BaseException) -> str:
    """One line for a failure: the file and the reason for OS errors, else the message."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, (ValueError, OSError, RuntimeError, KeyError)):
        text = f"{type(error).__name__}: {text}"
    return text
