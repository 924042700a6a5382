"""The pieces of `MetaplasticAdam`'s rule that are plain functions (private): checks of `m`
and of the learning rate, (de)serialization of `m`, and the bounded relaxation of hidden
weights (`MetaplasticAdam(relaxation=...)`, issue #18)."""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

from larq_meta._utils import check_float

__all__ = [
    "Schedule",
    "check_learning_rate",
    "check_m_value",
    "check_relaxation",
    "deserialize_m",
    "relax",
    "serialize_m",
]

Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


def check_m_value(value, argument: str = "m"):
    """`value` as a float >= 0 (or the schedule itself, checked at step 0), else ValueError."""
    if isinstance(value, Schedule):
        first = float(value(0))
        if not (math.isfinite(first) and first >= 0):
            raise ValueError(
                f"`{argument}` schedule must give finite values >= 0, but gives {first} at step 0."
            )
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"`{argument}` must be a finite float >= 0, a LearningRateSchedule of the step, "
            f"or a mapping from layer name to such values; got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{argument}` must be a finite float >= 0, got {value!r}.")
    return float(value)


def serialize_m(value):
    """A float as is, a schedule as its Keras config."""
    if isinstance(value, Schedule):
        return tf.keras.optimizers.schedules.serialize(value)
    return value


def deserialize_m(value):
    """The inverse of `serialize_m`."""
    if isinstance(value, dict) and "class_name" in value:
        return tf.keras.optimizers.schedules.deserialize(value)
    return value


def check_learning_rate(value) -> None:
    """ValueError unless `value` is a finite number >= 0, or a schedule whose value at step 0
    is one (a schedule is checked again at every step, see `MetaplasticAdam`)."""
    if isinstance(value, Schedule):
        first = float(value(0))
        if not (math.isfinite(first) and first >= 0):
            raise ValueError(
                "`learning_rate` schedule must give finite values >= 0, but gives "
                f"{first} at step 0."
            )
        return
    number = None
    if not isinstance(value, (bool, str)) and isinstance(
        value, (numbers.Real, tf.Tensor, tf.Variable)
    ):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not (math.isfinite(number) and number >= 0):
        raise ValueError(
            "`learning_rate` must be a finite float >= 0 or a LearningRateSchedule, got "
            f"{value!r}."
        )


def check_relaxation(relaxation, relaxation_bound) -> tuple[float, float]:
    """`(relaxation, relaxation_bound)` as floats in [0, 1] and >= 0, else ValueError."""
    rate = check_float(relaxation, "relaxation", minimum=0, maximum=1)
    bound = check_float(relaxation_bound, "relaxation_bound", minimum=0)
    return rate, bound


def relax(hidden: tf.Tensor, rate: float, bound: float) -> tf.Tensor:
    """The bounded relaxation of hidden weights, `v - rate * sign(v) * max(|v| - bound, 0)`.

    Only the part of `|v|` above `bound` shrinks, by the factor `1 - rate`; a weight never
    crosses `±bound` nor changes sign this way."""
    dtype = hidden.dtype
    excess = tf.maximum(tf.abs(hidden) - tf.cast(bound, dtype), tf.zeros_like(hidden))
    return hidden - tf.cast(rate, dtype) * tf.sign(hidden) * excess
