"""`python -m larq_meta.cli ...`: the same as the `larq-meta` command."""

import sys

from larq_meta.cli import main

sys.exit(main())
