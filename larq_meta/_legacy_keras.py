"""Make `tf.keras` resolve to legacy Keras (tf-keras), which larq needs on TF >= 2.16.

TensorFlow >= 2.16 reads `TF_USE_LEGACY_KERAS` when it is imported (for `from
tensorflow.keras import ...`) and again when `tf.keras` is first touched. `import larq_meta`
sets the variable before either happens; if TensorFlow was imported first, it points the
`tensorflow.keras` import path at tf-keras the way TensorFlow itself does at import time.
"""

import os
import sys

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"
_LEGACY_VALUES = ("true", "True", "1")


def _fail(reason: str) -> None:
    raise ImportError(
        f"larq_meta needs legacy Keras (the `tf-keras` package) as `tf.keras`: {reason} "
        f"Set {LEGACY_KERAS_VARIABLE}=1 in the environment, or import larq_meta before "
        "anything imports Keras."
    )


def ensure_legacy_keras(import_tensorflow: bool = True) -> None:
    """Set `TF_USE_LEGACY_KERAS=1` unless already set, then check that `tf.keras` is Keras 2.

    With `import_tensorflow=False` and TensorFlow not imported yet, setting the variable is
    all there is to do (TensorFlow reads it when it is imported); the check runs later.
    """
    if os.environ.setdefault(LEGACY_KERAS_VARIABLE, "1") not in _LEGACY_VALUES:
        _fail(f"{LEGACY_KERAS_VARIABLE}={os.environ[LEGACY_KERAS_VARIABLE]!r} asks for Keras 3.")
    if not import_tensorflow and "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    if getattr(tf, "_tf_uses_legacy_keras", True) is False:
        # TensorFlow was imported before the variable was set: redo its import-time choice.
        if any(name.startswith("tensorflow.keras") for name in sys.modules):
            _fail("`tensorflow.keras` was already imported as Keras 3.")
        from tensorflow.python.tools import module_util

        tf.__path__.insert(0, module_util.get_parent_dir_for_name("tf_keras.api._v2.keras"))
        tf._tf_uses_legacy_keras = True
    # Keras 2 is tf-keras (`tf_keras.src.engine...`) on TF >= 2.16, bundled `keras.src.engine`
    # on TF 2.15; Keras 3's layers live in `keras.src.layers`. (The module's `__name__` is no
    # guide: importing larq renames it `tensorflow.keras`.)
    layer_module = tf.keras.layers.Layer.__module__
    if not layer_module.startswith(("tf_keras.", "keras.src.engine.")):
        _fail(f"`tf.keras` is Keras 3 (its layers come from `{layer_module}`).")
