"""MNIST then Fashion-MNIST or the reverse (--paper: 4096-4096, 50 epochs per task, m 1.5).

Same as `larq-meta mnist-fashion`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["mnist-fashion", *sys.argv[1:]]))
