"""The quadratic binary toy problem of the paper's Fig. 5a,b.

Same as `larq-meta toy`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["toy", *sys.argv[1:]]))
