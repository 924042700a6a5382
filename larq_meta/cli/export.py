"""`larq-meta export` (temporary forwarder; being rewritten)."""

import argparse


def register(subparsers, common) -> None:
    p = subparsers.add_parser("export", help="Larq Compute Engine flatbuffer of a trained model, verified",
                              add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args):
        from larq_meta import export

        return export.export_main(args.rest)

    p.set_defaults(func=run, verbose=False)
