"""The metaplastic update rule of Laborieux et al. (2021) as a Keras optimizer.

A binarized neural network keeps a real-valued hidden weight `W_h` per synapse and uses
`sign(W_h)` in the forward pass. Metaplasticity reads `|W_h|` as a consolidation state:
updates that would move a hidden weight towards zero (and so, eventually, flip its sign)
are damped by `f_meta = 1 - tanh²(m·|W_h|)`, while updates that grow `|W_h|` pass
unchanged. Everything else is Adam.

!!! example
    ```python
    import larq_meta
    from larq_meta import MetaplasticAdam

    model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
    model.compile(
        optimizer=MetaplasticAdam(m=1.3, learning_rate=0.005),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    ```
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Union

import tensorflow as tf

__all__ = ["MetaplasticAdam", "is_binarized", "is_kernel", "latent"]

Schedule = tf.keras.optimizers.schedules.LearningRateSchedule
MValue = Union[float, Schedule]

#: Key of a per-layer `m` mapping that gives `m` for every layer the mapping does not name.
DEFAULT_LAYER_KEY = "*"


def is_binarized(variable: tf.Variable) -> bool:
    """True for a larq `QuantizedVariable` whose quantizer has precision 1 (a binarized weight)."""
    return getattr(variable, "precision", None) == 1


def is_kernel(variable: tf.Variable) -> bool:
    """True for a layer's kernel (binarized or float), e.g. to apply the rule to a float MLP."""
    return variable.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")


def latent(variable: tf.Variable) -> tf.Variable:
    """The variable that stores a weight's value: a larq `QuantizedVariable`'s latent
    (hidden) variable, or the variable itself."""
    return getattr(variable, "latent_variable", variable)


_TARGETS: dict[str, Callable[[tf.Variable], bool]] = {
    "binarized": is_binarized,
    "kernels": is_kernel,
}


def layer_name(variable: tf.Variable) -> str:
    """The name of the layer that owns `variable` (`"dense_1/kernel:0"` -> `"dense_1"`)."""
    parts = variable.name.split(":")[0].split("/")
    return parts[-2] if len(parts) > 1 else parts[0]


def _check_m_value(value, argument: str = "m") -> MValue:
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


def _serialize_m(value):
    if isinstance(value, Schedule):
        return tf.keras.optimizers.schedules.serialize(value)
    return value


def _deserialize_m(value):
    if isinstance(value, dict) and "class_name" in value:
        return tf.keras.optimizers.schedules.deserialize(value)
    return value


@tf.keras.utils.register_keras_serializable(package="larq_meta")
class MetaplasticAdam(tf.keras.optimizers.Optimizer):
    r"""Adam with the metaplastic damping of Laborieux et al. (2021) on binarized weights.

    For every trainable variable `v` with gradient `g`, first and second moments `m1`, `m2`
    and step `t`:

    ```
    g  <- g + weight_decay * v                      (coupled L2, as the reference code)
    m1 <- b1*m1 + (1-b1)*g ;   m2 <- b2*m2 + (1-b2)*g²
    U  = lr * sqrt(1-b2^t)/(1-b1^t) * m1 / (sqrt(m2) + epsilon)
    binarized kernel:  v <- v - where(sign(v)*m1 > 0, (1 - tanh²(m*|v|)) * U, U)
    anything else:     v <- v - U
    ```

    The condition `sign(v)*m1 > 0` selects exactly the updates that move `v` towards zero;
    those are multiplied by `f_meta = 1 - tanh²(m·|v|)`, so a hidden weight that has grown
    large becomes hard to flip. Updates that grow `|v|` are left alone. BatchNorm
    parameters, biases and float layers get plain Adam. Hidden weights are not clipped: a
    ±1 clip would cap consolidation at `1 - tanh²(m)`. With `m=0` the optimizer is exactly
    `tf.keras.optimizers.Adam` with the same arguments (bit for bit).

    A variable is binarized when it is a larq `QuantizedVariable` whose quantizer has
    precision 1 (e.g. `kernel_quantizer="ste_sign"`); the selection never looks at shapes.

    !!! example
        ```python
        model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
        model.compile(
            optimizer=MetaplasticAdam(m=1.35, learning_rate=0.005, epsilon=1e-8),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        # One m per layer, as the reference code allows ("*" covers all other layers):
        MetaplasticAdam(m={"quant_dense": 0.5, "*": 1.35})
        ```

    # Arguments
        learning_rate: A float or a `LearningRateSchedule`, the first argument as in every
            Keras optimizer (`MetaplasticAdam(0.005)`). The paper uses 0.005.
        m: Metaplasticity strength (keyword-only, like every argument after the learning
            rate), a finite float >= 0. Also accepted: a
            `tf.keras.optimizers.schedules.LearningRateSchedule` giving `m` as a function of
            the step, or a mapping from layer name to such a value (the key `"*"` gives the
            value for layers the mapping does not name). The paper uses 1.3 to 1.5 for
            permuted MNIST and 2.5 for stream learning. `m=0` is plain Adam.
        beta_1: Exponential decay rate of the first moment, in [0, 1).
        beta_2: Exponential decay rate of the second moment, in [0, 1).
        epsilon: Constant for numerical stability, > 0. Keras' default 1e-7; the paper 1e-8.
        weight_decay: Coupled L2 coefficient (>= 0) added to the gradient, `g + wd * v`,
            as the reference implementation (PyTorch Adam) does. Not AdamW's decoupled decay.
        apply_to: Which variables get the metaplastic damping: `"binarized"` (default, the
            paper's rule) or `"kernels"` (every layer kernel, binarized or float, as in the
            paper's Fig. 2f experiment on a full-precision network).
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
            ema_overwrite_frequency, jit_compile, name: As in `tf.keras.optimizers.Adam`.

    # References
        - [Laborieux, A., Ernoult, M., Hirtzlin, T. & Querlioz, D. Synaptic metaplasticity in
          binarized neural networks. Nat. Commun. 12, 2549 (2021)](
          https://doi.org/10.1038/s41467-021-22768-y)
        - [Reference implementation](https://github.com/Laborieux-Axel/SynapticMetaplasticityBNN)
        - [Kingma, D. P. & Ba, J. Adam: A Method for Stochastic Optimization (2014)](
          https://arxiv.org/abs/1412.6980)
    """

    def __init__(
        self,
        learning_rate: float | Schedule = 0.001,
        *,
        m: MValue | Mapping[str, MValue] = 1.3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float = 0.0,
        apply_to: str = "binarized",
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        jit_compile: bool = True,
        name: str = "MetaplasticAdam",
        **kwargs,
    ):
        # Per-variable `m` of a per-layer mapping as first resolved (a serialization detail:
        # `from_config` passes it back; see `build`).
        resolved_m = kwargs.pop("resolved_m", None)
        if isinstance(learning_rate, bool) or (
            isinstance(learning_rate, numbers.Real)
            and not (math.isfinite(learning_rate) and learning_rate >= 0)
        ):
            raise ValueError(f"`learning_rate` must be a finite float >= 0, got {learning_rate!r}.")
        # Keras' `weight_decay` is decoupled (AdamW); ours is coupled, so the base class never
        # sees it.
        super().__init__(
            name=name,
            weight_decay=None,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            jit_compile=jit_compile,
            **kwargs,
        )
        if isinstance(m, Mapping):
            if not m:
                raise ValueError("`m` mapping is empty: name at least one layer, or pass a float.")
            for key in m:
                if not isinstance(key, str):
                    raise ValueError(f"`m` mapping keys must be layer names (str), got {key!r}.")
            self.m = {key: _check_m_value(value, f"m[{key!r}]") for key, value in m.items()}
        else:
            self.m = _check_m_value(m)
        for argument, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not (isinstance(value, numbers.Real) and 0 <= value < 1):
                raise ValueError(f"`{argument}` must be a float in [0, 1), got {value!r}.")
        if not (isinstance(epsilon, numbers.Real) and math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"`epsilon` must be a finite float > 0, got {epsilon!r}.")
        if weight_decay is None:
            weight_decay = 0.0
        if not (
            isinstance(weight_decay, numbers.Real)
            and math.isfinite(weight_decay)
            and weight_decay >= 0
        ):
            raise ValueError(f"`weight_decay` must be a finite float >= 0, got {weight_decay!r}.")
        if apply_to not in _TARGETS:
            raise ValueError(f"`apply_to` must be one of {sorted(_TARGETS)}, got {apply_to!r}.")
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.coupled_weight_decay = float(weight_decay)
        self.apply_to = apply_to
        # Per-variable `m` of a per-layer mapping, as resolved when first built (see build).
        self._resolved_m = None
        if resolved_m is not None:
            self._resolved_m = [
                None if v is None else _check_m_value(_deserialize_m(v), "resolved_m")
                for v in resolved_m
            ]

    def _m_for(self, variable: tf.Variable) -> MValue | None:
        """The `m` of a variable, or None if it gets plain Adam."""
        if not _TARGETS[self.apply_to](variable):
            return None
        if not isinstance(self.m, dict):
            return self.m
        return self.m.get(layer_name(variable), self.m.get(DEFAULT_LAYER_KEY))

    def build(self, var_list):
        """Create the Adam slots `m` and `v` and resolve each variable's `m`."""
        if getattr(self, "_built", False):
            return
        # Check `m` against the variables before marking anything built, so that a failed
        # build raises again on the next call instead of leaving a half-built optimizer.
        targets = [var for var in var_list if _TARGETS[self.apply_to](var)]
        if not targets:
            warnings.warn(
                f"MetaplasticAdam found no {self.apply_to} variable among the "
                f"{len(var_list)} it trains, so metaplasticity has no effect and it behaves as "
                "Adam. Binarized kernels come from larq layers with a precision-1 quantizer, "
                'e.g. `kernel_quantizer="ste_sign"`.',
                UserWarning,
                stacklevel=2,
            )
        m_by_index = None
        if isinstance(self.m, dict):
            m_by_index = self._resolve_layer_mapping(var_list, targets)
        super().build(var_list)
        self._built = True
        self._momentums = []
        self._velocities = []
        for var in var_list:
            self._momentums.append(self.add_variable_from_reference(var, "m"))
            self._velocities.append(self.add_variable_from_reference(var, "v"))
        self._m_by_index = m_by_index or [self._m_for(var) for var in var_list]

    def _resolve_layer_mapping(self, var_list, targets) -> list | None:
        """Check a per-layer `m` against the model's layers; None: resolve by layer name.

        tf-keras rebuilds larq layers from their config outside their name scope, so after
        `load_model` a kernel is named `kernel:0`, not `dense_1/kernel:0`. The resolution
        made when the optimizer was first built is saved in its config (`resolved_m`, one entry
        per variable, in order) and used then.
        """
        if any("/" not in var.name for var in targets):
            if self._resolved_m is not None and len(self._resolved_m) == len(var_list):
                return list(self._resolved_m)
            raise ValueError(
                "`m` is a per-layer mapping, but these variables carry no layer name: "
                f"{sorted(var.name for var in targets if '/' not in var.name)} (tf-keras names "
                "larq kernels built outside their layer, e.g. by `Model.from_config`). Build the "
                "model with its builder and `load_weights`, or give `m` as one value."
            )
        names = {layer_name(var) for var in targets}
        unknown = sorted(set(self.m) - names - {DEFAULT_LAYER_KEY})
        if unknown:
            raise ValueError(
                f"`m` names layer(s) {unknown} that have no {self.apply_to} variable in "
                f"this model; layers with one: {sorted(names)}."
            )
        missing = sorted(names - set(self.m)) if DEFAULT_LAYER_KEY not in self.m else []
        if missing:
            raise ValueError(
                f"`m` gives no value for layer(s) {missing}; name them or add a "
                f'"{DEFAULT_LAYER_KEY}" entry for all other layers.'
            )
        return None

    def _m_value(self, m: MValue, dtype) -> tf.Tensor:
        if isinstance(m, Schedule):
            return tf.cast(m(self.iterations), dtype)
        return tf.constant(m, dtype)

    def update_step(self, gradient, variable):
        """One Adam step, damped by `1 - tanh²(m·|v|)` where it moves a target towards zero."""
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
        index = self._index_dict[self._var_key(variable)]
        m1 = self._momentums[index]
        m2 = self._velocities[index]

        if self.coupled_weight_decay:
            gradient = gradient + tf.cast(self.coupled_weight_decay, dtype) * variable
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        # Same expressions as tf.keras.optimizers.Adam, so that m=0 matches it bit for bit.
        m1.assign_add((gradient - m1) * (1 - self.beta_1))
        m2.assign_add((tf.square(gradient) - m2) * (1 - self.beta_2))
        update = (m1 * alpha) / (tf.sqrt(m2) + self.epsilon)

        m = self._m_by_index[index]
        if m is not None:
            hidden = tf.convert_to_tensor(variable)  # latent value: outside larq's quantized scope
            f_meta = 1 - tf.square(tf.tanh(self._m_value(m, dtype) * tf.abs(hidden)))
            towards_zero = tf.sign(hidden) * m1 > 0
            update = tf.where(towards_zero, f_meta * update, update)
        variable.assign_sub(update)

    def get_config(self):
        config = super().get_config()
        if isinstance(self.m, dict):
            m = {key: _serialize_m(value) for key, value in self.m.items()}
        else:
            m = _serialize_m(self.m)
        config.update(
            {
                "m": m,
                "learning_rate": self._serialize_hyperparameter(self._learning_rate),
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "weight_decay": self.coupled_weight_decay,
                "apply_to": self.apply_to,
            }
        )
        if isinstance(self.m, dict) and getattr(self, "_m_by_index", None) is not None:
            config["resolved_m"] = [
                None if v is None else _serialize_m(v) for v in self._m_by_index
            ]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        m = config.get("m", 1.3)
        if isinstance(m, dict) and "class_name" not in m:
            config["m"] = {key: _deserialize_m(value) for key, value in m.items()}
        else:
            config["m"] = _deserialize_m(m)
        return super().from_config(config, custom_objects=custom_objects)
