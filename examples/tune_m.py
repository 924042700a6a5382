"""Keras-Tuner search of m (and the learning rate) over a task sequence.

Same as `larq-meta tune`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
