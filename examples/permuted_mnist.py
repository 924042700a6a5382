"""Permuted MNIST, the paper's Fig. 2 (--paper: 6 tasks, 4096-4096, 40 epochs per task).

Same as `larq-meta permuted-mnist`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["permuted-mnist", *sys.argv[1:]]))
