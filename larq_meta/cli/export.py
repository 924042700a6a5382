"""`larq-meta export`: a saved model to a verified Larq Compute Engine `.tflite` file.

Every argument is checked before any conversion starts or any file is written: output folders
exist, no output is the input model or another output, the BatchNorm snapshots and parity
data are readable `.npz` files, and the model file carries no code (unless `--unsafe`). Then
`larq_meta.export.to_lce` converts and checks, and the report is printed.
"""

from __future__ import annotations

import argparse
import os

from larq_meta.cli._common import (
    UsageError,
    existing_file,
    non_negative_float,
    non_negative_int,
    positive_int,
)

__all__ = ["register"]

CONVERSIONS = ("saved_model", "graphdef")  # larq_meta.export.CONVERSIONS, without importing TF


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def register(subparsers, common) -> None:
    """Add the `export` command."""
    p = subparsers.add_parser(
        "export", parents=[common],
        help="Larq Compute Engine flatbuffer of a trained model, verified",
        description="Convert a saved Keras/Larq model to a Larq Compute Engine .tflite file, "
        "binary dense layers included, check it against Keras and print a report.",
    )
    p.add_argument("model_path", help="a .keras file (or legacy .h5 / SavedModel folder) from "
                   "model.save")
    p.add_argument("output_path", help="the .tflite file to write")
    p.add_argument("--task", type=non_negative_int, default=None,
                   help="export with task K's BatchNorm state (needs --bn-snapshots)")
    p.add_argument("--bn-snapshots", type=existing_file, default=None, metavar="FILE.npz",
                   help="per-task BatchNorm snapshots written by "
                   "larq_meta.export.save_bn_snapshots: key '<task>/<bn layer>/<i>' holds "
                   "weight i (gamma, beta, moving mean, moving variance)")
    p.add_argument("--parity-data", type=existing_file, default=None, metavar="FILE.npz",
                   help="arrays 'x' (and optionally 'y') to check parity on; default: random "
                   "inputs")
    p.add_argument("--parity-samples", type=positive_int, default=256,
                   help="random parity inputs (256)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check")
    p.add_argument("--no-rewrite", action="store_true",
                   help="keep QuantDense as float FULLY_CONNECTED")
    p.add_argument("--no-compact", action="store_true",
                   help="keep float32 weights for float layers")
    p.add_argument("--min-agreement", type=fraction, default=None,
                   help="fail (nothing written) below this argmax agreement, in [0, 1] "
                   "(default 0.999)")
    p.add_argument("--max-diff", type=non_negative_float, default=None,
                   help="fail (nothing written) above this max |logit difference| (default: "
                   "5%% of the range of Keras' logits on the parity data, at least 0.001)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="write the file even if LCE disagrees with Keras beyond the thresholds "
                   "(default: argmax agreement >= 99.9%% and max |logit diff| <= 5%% of the "
                   "logit range; otherwise exit 1, nothing written); the report warns")
    p.add_argument("--diagnose", action="store_true",
                   help="also print the layer-by-layer comparison of Keras and LCE (printed "
                   "anyway when parity refuses the export): which layer they part at, and why")
    p.add_argument("--diagnose-samples", type=positive_int, default=64, metavar="N",
                   help="compare the layers on the N parity inputs whose outputs differ most "
                   "(64)")
    p.add_argument("--conversion", choices=CONVERSIONS, default="saved_model",
                   help="saved_model: larq_compute_engine.convert_keras_model (default); "
                   "graphdef: LCE's frozen-graph path (same operators, faster)")
    p.add_argument("--no-float-reference", action="store_true",
                   help="skip the float TFLite size reference")
    p.add_argument("--float-output", default=None, metavar="FILE.tflite",
                   help="also write the plain float TFLite conversion (the size/latency "
                   "baseline)")
    p.add_argument("--report-json", default=None, metavar="FILE.json",
                   help="also write the report as JSON")
    p.add_argument("--unsafe", action="store_true",
                   help="load a model file that carries Python code (a Lambda layer in a .h5 "
                   "file or SavedModel, or a .keras file outside Keras' safe mode). RISK: "
                   "loading runs that code with your permissions; use only for files you "
                   "trust as you would trust a script")
    p.set_defaults(func=run)


def check_paths(args) -> None:
    """UsageError unless every output can be written and no two paths of the call are the
    same file (compared as resolved real paths), before any work."""
    outputs = [("output_path", args.output_path)]
    if args.float_output is not None:
        if args.no_float_reference:
            raise UsageError("--float-output needs the float reference; drop --no-float-reference.")
        outputs.append(("--float-output", args.float_output))
    if args.report_json is not None:
        outputs.append(("--report-json", args.report_json))
    seen = {os.path.realpath(args.model_path): "the input model"}
    for flag, path in outputs:
        if os.path.isdir(path):
            raise UsageError(f"{flag} {path}: is a directory; give a file name.")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"{flag} {path}: folder {directory} does not exist; create it first.")
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(
                f"{flag} {path} is the same file as {seen[real]}; choose another file name."
            )
        seen[real] = f"{flag} {path}"
    for flag, path in (("--bn-snapshots", args.bn_snapshots), ("--parity-data", args.parity_data)):
        if path is not None and os.path.realpath(path) in seen:
            raise UsageError(f"{flag} {path} is also an output of this command.")


def run(args) -> int:
    """Check the arguments, load the model, export, write the extra outputs, print."""
    if args.task is not None and args.bn_snapshots is None:
        raise UsageError("--task needs --bn-snapshots (the per-task BatchNorm snapshots).")
    if args.no_parity and (args.min_agreement is not None or args.max_diff is not None):
        raise UsageError("--min-agreement / --max-diff need the parity check; drop --no-parity.")
    if args.no_parity and args.allow_mismatch:
        raise UsageError("--allow-mismatch needs the parity check; drop --no-parity.")
    if args.no_parity and args.diagnose:
        raise UsageError("--diagnose compares Keras and LCE on the parity data; drop --no-parity.")
    check_paths(args)

    import json

    from larq_meta._utils import json_default, write_atomic
    from larq_meta.export import (
        ParityError,
        load_bn_snapshots,
        load_model,
        load_parity_data,
        to_lce,
    )

    snapshots = None if args.bn_snapshots is None else load_bn_snapshots(args.bn_snapshots)
    parity_data = None if args.parity_data is None else load_parity_data(args.parity_data)
    model = load_model(args.model_path, safe_mode=not args.unsafe)
    try:
        report = to_lce(
            model,
            args.output_path,
            task=args.task,
            bn_snapshots=snapshots,
            parity_data=parity_data,
            parity=not args.no_parity,
            parity_samples=args.parity_samples,
            min_argmax_agreement=args.min_agreement,
            max_abs_diff=args.max_diff,
            rewrite_dense=not args.no_rewrite,
            compact_weights=None if args.no_compact else "int8",
            float_reference=not args.no_float_reference,
            conversion=args.conversion,
            allow_mismatch=args.allow_mismatch,
        )
    except ParityError as error:
        if error.report is not None:  # refused: say where Keras and LCE part, then fail
            print(diagnosis(model, error.report.flatbuffer, parity_data, snapshots, args))
        raise
    if args.float_output is not None:
        if report.float_flatbuffer is None:
            raise RuntimeError(
                f"--float-output {args.float_output}: the float TFLite conversion failed, "
                f"nothing written there ({'; '.join(report.notes)})."
            )
        write_atomic(args.float_output, report.float_flatbuffer)
    if args.report_json is not None:
        write_atomic(
            args.report_json, json.dumps(report.to_dict(), indent=2, default=json_default) + "\n"
        )
    print(report)
    if args.diagnose:
        print(diagnosis(model, report.flatbuffer, parity_data, snapshots, args))
    return 0


def diagnosis(model, flatbuffer, parity_data, snapshots, args) -> str:
    """The layer-by-layer comparison (`larq_meta.export.compare_layers`) of the exported
    flatbuffer on the parity data, as text; the reason if it could not be made."""
    from larq_meta.batchnorm import using_batchnorm
    from larq_meta.export import compare_layers
    from larq_meta.export.rewrite import with_float32_products

    snapshot = None if args.task is None else snapshots[args.task]
    try:
        compared, _ = with_float32_products(model)
        with using_batchnorm(compared, snapshot):
            result = compare_layers(
                compared, flatbuffer, parity_data, samples=args.parity_samples,
                keep=args.diagnose_samples,
            )
    except Exception as error:  # noqa: BLE001 - a diagnosis must not hide the export's error
        return f"layer-by-layer comparison not available: {type(error).__name__}: {error}"
    return str(result)
