"""`larq-meta tune` (temporary forwarder; being rewritten)."""

import argparse


def register(subparsers, common) -> None:
    p = subparsers.add_parser("tune", help="keras-tuner search of m (and the learning rate)",
                              add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args):
        from larq_meta import tuning

        return tuning.tune_main(args.rest)

    p.set_defaults(func=run, verbose=False)
