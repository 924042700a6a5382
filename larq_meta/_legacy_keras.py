"""Make `tf.keras` resolve to legacy Keras (tf-keras), which larq needs on TF >= 2.16.

TensorFlow reads `TF_USE_LEGACY_KERAS` once, the first time `tf.keras` is touched, so this
must run before anything else imports TensorFlow's Keras: `import larq_meta` does it first.
"""

import os
import sys

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


def ensure_legacy_keras() -> None:
    """Set `TF_USE_LEGACY_KERAS=1` unless already set, then check that `tf.keras` is Keras 2."""
    already_imported = "tensorflow" in sys.modules
    os.environ.setdefault(LEGACY_KERAS_VARIABLE, "1")
    import tensorflow as tf

    # tf-keras on TF >= 2.16 is `tf_keras.api._v2.keras`; TF <= 2.15 bundles `keras.api._v2.keras`.
    if "api._v2" not in tf.keras.__name__:
        raise ImportError(
            "larq_meta needs legacy Keras (the `tf-keras` package) as `tf.keras`, but "
            f"`tf.keras` is `{tf.keras.__name__}` (Keras 3). Set {LEGACY_KERAS_VARIABLE}=1 before "
            "anything touches `tf.keras`, or import larq_meta first "
            f"({LEGACY_KERAS_VARIABLE}={os.environ.get(LEGACY_KERAS_VARIABLE)!r}, tensorflow "
            f"{'was' if already_imported else 'was not'} imported before larq_meta)."
        )
