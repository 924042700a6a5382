"""larq-meta: synaptic metaplasticity for binarized neural networks in Keras and Larq.

Importing this package first makes `tf.keras` resolve to legacy Keras (`tf-keras`), which
larq needs on TensorFlow >= 2.16 (it sets `TF_USE_LEGACY_KERAS=1` unless already set).
Submodules load on first use (`larq_meta.models`, `from larq_meta import MetaplasticAdam`),
so `import larq_meta` itself does not import TensorFlow.
"""

import importlib
import os

from larq_meta._version import __version__

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probes, CPU features) is noise for a CPU
# user; warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL yourself to change it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from larq_meta._legacy_keras import ensure_legacy_keras  # noqa: E402

ensure_legacy_keras(import_tensorflow=False)

_MODULES = (
    "batchnorm",
    "callbacks",
    "checkpoint",
    "consolidation",
    "datasets",
    "distribute",
    "export",
    "hidden_weights",
    "metrics",
    "models",
    "optimizers",
    "plots",
    "quadratic",
    "tasks",
    "training",
    "tuning",
)
_NAMES = {"MetaplasticAdam": "optimizers"}
#: Modules kept for one release under their old names (they warn when used).
_DEPRECATED_MODULES = ("analysis",)


def __getattr__(name):
    if name in _MODULES or name in _DEPRECATED_MODULES:
        ensure_legacy_keras()
        return importlib.import_module(f"larq_meta.{name}")
    if name in _NAMES:
        ensure_legacy_keras()
        return getattr(importlib.import_module(f"larq_meta.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'larq_meta' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_MODULES, *_NAMES])


__all__ = ["MetaplasticAdam", *_MODULES, "__version__"]
