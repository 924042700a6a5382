"""Stream learning on Fashion-MNIST (--paper: 60 subsets, 1024-1024, m 2.5).

Same as `larq-meta stream`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", *sys.argv[1:]]))
