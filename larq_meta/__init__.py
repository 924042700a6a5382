"""larq-meta: synaptic metaplasticity for binarized neural networks in Keras and Larq.

Importing this package first makes `tf.keras` resolve to legacy Keras (`tf-keras`), which
larq needs on TensorFlow >= 2.16 (it sets `TF_USE_LEGACY_KERAS=1` unless already set).
"""

import importlib
import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probes, CPU features) is noise for a CPU
# user; warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL yourself to change it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from larq_meta._legacy_keras import ensure_legacy_keras  # noqa: E402

ensure_legacy_keras()

from larq_meta import (  # noqa: E402
    batchnorm,
    callbacks,
    metrics,
    models,
    optimizers,
    plots,
    tasks,
    training,
)
from larq_meta.optimizers import MetaplasticAdam  # noqa: E402

__version__ = "0.1.0"

# Modules with optional dependencies (keras-tuner, larq-compute-engine, tensorflow-datasets)
# or heavier imports load on first use: `larq_meta.tuning`, `larq_meta.export`, ...
_LAZY = ("analysis", "cli", "consolidation", "datasets", "export", "tuning")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"larq_meta.{name}")
    raise AttributeError(f"module 'larq_meta' has no attribute {name!r}")


__all__ = [
    "MetaplasticAdam",
    "analysis",
    "batchnorm",
    "callbacks",
    "consolidation",
    "datasets",
    "export",
    "metrics",
    "models",
    "optimizers",
    "plots",
    "tasks",
    "training",
    "tuning",
    "__version__",
]
