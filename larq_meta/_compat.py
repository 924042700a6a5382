"""Every use of another package's private API, in one place, behind version checks.

larq-meta reaches into keras-tuner (distributed-search plumbing, the grid oracle's state)
and larq-compute-engine (the flatbuffer schema, the GraphDef conversion path) where their
public APIs stop short. Each such name is imported here and nowhere else; each package has a
range of versions it was tested with, and `check_version` raises an `ImportError` that names
the package, its installed version and that range before any private name is used.
`tests/test_compat.py` checks that the installed versions are in range.
"""

from __future__ import annotations

import importlib.metadata

#: Distribution name -> (lowest tested version, first version not tested), as tuples.
TESTED_VERSIONS = {
    "keras-tuner": ((1, 4, 8), (1, 5)),
    "larq-compute-engine": ((0, 16), (0, 17)),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def check_version(distribution: str) -> str:
    """The installed version of `distribution`; ImportError if it is outside the tested range
    (or not installed), naming this module, the package and the range."""
    low, high = TESTED_VERSIONS[distribution]
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"{distribution} is not installed.") from None
    if not low <= _version_tuple(installed) < high:
        span = f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        raise ImportError(
            f"larq_meta._compat: {distribution} {installed} is outside the range larq-meta uses "
            f"private parts of and was tested with ({span}); install {distribution}{span}."
        )
    return installed


# -- keras-tuner ----------------------------------------------------------------------------------
# (private names used by larq_meta.tuning go here, each behind check_version("keras-tuner"))


# -- larq-compute-engine --------------------------------------------------------------------------
# (private names used by larq_meta.export go here, each behind check_version("larq-compute-engine"))
