"""Hidden-weight analysis: importance vs |W_h| and its correlation with the EWC Fisher.

Same as `larq-meta analyze`; run with `--help` for the options.
"""

import sys

from larq_meta.cli import main

if __name__ == "__main__":
    sys.exit(main(["analyze", *sys.argv[1:]]))
