"""Shared test setup: quiet TensorFlow, and import larq_meta first so `tf.keras` is tf-keras."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_meta  # noqa: E402,F401
