"""Argument checks shared by the modules: clear errors that name the argument and the range."""

from __future__ import annotations

import numpy as np


def check_int(value, argument: str, minimum: int = 1) -> int:
    """`value` as an int >= `minimum` (Python or numpy integer, not bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{argument}` must be {expected}, got {value!r}.")
    return int(value)
