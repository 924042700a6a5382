"""larq-meta: synaptic metaplasticity for binarized neural networks in Keras and Larq.

Importing this package first makes `tf.keras` resolve to legacy Keras (`tf-keras`), which
larq needs on TensorFlow >= 2.16 (it sets `TF_USE_LEGACY_KERAS=1` unless already set).
"""

from larq_meta._legacy_keras import ensure_legacy_keras

ensure_legacy_keras()

from larq_meta import models, optimizers  # noqa: E402
from larq_meta.optimizers import MetaplasticAdam  # noqa: E402

__version__ = "0.1.0"

__all__ = ["MetaplasticAdam", "models", "optimizers", "__version__"]
