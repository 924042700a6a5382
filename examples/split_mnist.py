"""Split MNIST, five two-class tasks, task or class scenario.

Same as `larq-meta split-mnist`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["split-mnist", *sys.argv[1:]]))
