"""Export a trained model to a Larq Compute Engine flatbuffer, with a parity check.

Same as `larq-meta export`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
