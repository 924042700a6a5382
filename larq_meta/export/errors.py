"""The exceptions of `larq_meta.export`."""

from __future__ import annotations

__all__ = ["ExportError", "ParityError", "UnsafeModelError"]


class ExportError(ValueError):
    """The model cannot be exported as asked (the message names the layer, task index or file)."""


class ParityError(ExportError):
    """The exported flatbuffer disagrees with Keras beyond the thresholds; nothing was written.

    Raised by `to_lce`, it has a `report` attribute: the `ExportReport` of the refused export
    (`report.flatbuffer` holds the file it did not write), for `compare_layers`.
    """

    report = None


class UnsafeModelError(ExportError):
    """A model file carries Python code (a `Lambda` layer) and was not loaded.

    Loading it would run that code; pass `safe_mode=False` (`larq-meta export --unsafe`) only
    for a file you trust as you would trust a script.
    """
