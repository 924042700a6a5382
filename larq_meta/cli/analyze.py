"""`larq-meta analyze` and `larq-meta toy` (temporary forwarders; being rewritten)."""

import argparse


def register(subparsers, common) -> None:
    for name, function, text in (
        ("analyze", "analysis_main", "hidden-weight analysis: importance vs |W_h|, Fisher correlation"),
        ("toy", "toy_main", "the quadratic binary toy problem (Fig. 5a,b)"),
    ):
        p = subparsers.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, f=function: _forward(f, args.rest), verbose=False)


def _forward(function, rest):
    from larq_meta import analysis

    return getattr(analysis, function)(rest)
