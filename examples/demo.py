"""Permuted MNIST with m=0 vs m=1.35: the forgetting and its absence (the README's main job).

Same as `larq-meta demo`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
