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
        optimizer=MetaplasticAdam(0.005, m=1.3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    ```
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Union

import tensorflow as tf

from larq_meta._metaplastic import (
    Schedule,
    check_learning_rate,
    check_m_value,
    check_relaxation,
    deserialize_m,
    relax,
    serialize_m,
)
from larq_meta._utils import check_float

__all__ = [
    "MetaplasticAdam",
    "CheckOptimizer",
    "is_binarized",
    "is_kernel",
    "latent",
    "layer_name",
]

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


# The rule's plain functions live in `_metaplastic` (kept under these names here).
_check_m_value = check_m_value
_serialize_m = serialize_m
_deserialize_m = deserialize_m
_check_learning_rate = check_learning_rate


_LR_FAULT, _M_FAULT, _NAN_FAULT = 1, 2, 3
_FAULTS = {
    _LR_FAULT: "MetaplasticAdam: the `learning_rate` schedule must give finite values >= 0",
    _M_FAULT: "MetaplasticAdam: the `m` schedule must give finite values >= 0",
    _NAN_FAULT: "MetaplasticAdam (check_numerics): non-finite weight after the update of",
}


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
    ±1 clip would cap consolidation at `1 - tanh²(m)`.

    **Bounded relaxation** (`relaxation=r > 0`, off by default; issue #18). On a long task
    sequence the paper's rule freezes: `|v|` only grows, so more and more binarized weights
    reach `1 - tanh²(m·|v|) ≈ 0` and later tasks are learned less and less. With `r > 0`,
    every binarized kernel (every damped variable) is then relaxed towards the bound `b`
    (`relaxation_bound`) after each update:
    `v <- v - r * sign(v) * max(|v| - b, 0)`.
    The part of `|v|` above `b` decays by `1 - r` per step unless the gradient keeps
    growing it, so consolidation is kept while it is used and released over `~1/r` steps
    when it is not; no weight changes sign or crosses `±b` by relaxation. `r=0` is the
    paper's rule exactly (the relaxation is not computed). Measured on 100 permuted-MNIST
    tasks (see the "Long task sequences" page), it keeps new tasks learnable, but it trades
    old tasks for new ones along the same frontier as `m`; it does not beat the best `m`.

    With `m=0` (and no relaxation) the optimizer is exactly `tf.keras.optimizers.Adam` with
    the same arguments, bit for bit, for dense and sparse gradients alike. The relaxation
    acts on the whole variable at every step, also after a sparse gradient.

    **Sparse gradients** (`tf.IndexedSlices`, e.g. from an `Embedding`) take Keras Adam's
    sparse branch: Keras first sums the values of repeated indices, then both moments decay
    everywhere and the slices are scatter-added (`m1 += (1-b1)*values`,
    `m2 += (1-b2)*values²` at their indices), and the whole variable moves by `U`. That is
    the dense rule with the rows outside the slices at `g = 0`, computed in another order, so
    `m=0` rounds exactly as Keras Adam. For a binarized variable the damping is then applied
    to that `U` exactly as above (it needs only `v` and `m1`, which exist everywhere): the
    rule is the same, with no sparse approximation. With `weight_decay > 0` the effective
    gradient `g + wd*v` is dense, so a sparse gradient is densified first (Keras Adam has no
    coupled decay to match).

    A variable is binarized when it is a larq `QuantizedVariable` whose quantizer has
    precision 1 (e.g. `kernel_quantizer="ste_sign"`); the selection never looks at shapes.

    **Per-step checks.** A schedule (for `m` or the learning rate) is checked at every step
    (numbered as `iterations`, from 0): a negative or non-finite value stops training with a
    `tf.errors.InvalidArgumentError` naming the schedule, the variable, the value and the
    step, and that step does not move the variables it governs (learning rate and `m` taken
    as 0; the moments still advance). With `check_numerics=True` every variable is checked
    after its update and the first non-finite one stops training, named with the step.
    Under XLA (`model.compile(jit_compile=True)`, the default of `compiled_paper_mlp`)
    TensorFlow drops assertions, so there the checks *clamp and flag*: the bad step is
    clamped as above and the first fault is recorded (`fault`); `check()` raises it, and the
    `CheckOptimizer` callback calls `check()` after every batch. Constant values are checked
    once, when set (also through the `learning_rate` setter).

    !!! example
        ```python
        model = larq_meta.models.paper_mlp(hidden_units=(1024, 1024))
        model.compile(
            optimizer=MetaplasticAdam(0.005, m=1.35, epsilon=1e-8),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        # One m per layer, as the reference code allows ("*" covers all other layers):
        MetaplasticAdam(m={"dense_1": 0.5, "*": 1.35})
        # m as a function of the step:
        schedules = tf.keras.optimizers.schedules
        MetaplasticAdam(m=schedules.PiecewiseConstantDecay([1000], [0.0, 1.3]))
        # Long sequences: hidden weights relaxed towards 0 at 0.3 % per step (issue #18):
        MetaplasticAdam(0.005, m=6.0, relaxation=0.003)
        ```

    # Arguments
        learning_rate: A float >= 0 or a `LearningRateSchedule`, the first argument as in
            every Keras optimizer (`MetaplasticAdam(0.005)`). The paper uses 0.005.
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
        relaxation: Rate `r` in [0, 1] of the bounded relaxation (see above) per step;
            0 (default) is the paper's rule.
        relaxation_bound: The bound `b >= 0` towards which `|v|` relaxes (0: towards zero).
        check_numerics: Check every variable after each update and stop at the first
            non-finite one, naming it (costs one reduction per variable and step).
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
            ema_overwrite_frequency, jit_compile, name: As in `tf.keras.optimizers.Adam`.

    # Raises
        ValueError: A hyperparameter out of range (the message names it), or, when first
            built, a per-layer `m` mapping that does not fit the model's layers.

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
        relaxation: float = 0.0,
        relaxation_bound: float = 0.0,
        check_numerics: bool = False,
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
        resolved_m = kwargs.pop("resolved_m", None)
        if resolved_m is not None:
            warnings.warn(
                "`resolved_m` is a serialization detail, no longer a constructor argument; "
                "rebuild a saved optimizer with `MetaplasticAdam.from_config(config)`.",
                DeprecationWarning,
                stacklevel=2,
            )
        _check_learning_rate(learning_rate)
        if not isinstance(check_numerics, bool):
            raise ValueError(f"`check_numerics` must be a bool, got {check_numerics!r}.")
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
            if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 <= value < 1):
                raise ValueError(f"`{argument}` must be a float in [0, 1), got {value!r}.")
        check_float(epsilon, "epsilon", positive=True)
        check_float(0.0 if weight_decay is None else weight_decay, "weight_decay", minimum=0)
        if apply_to not in _TARGETS:
            raise ValueError(f"`apply_to` must be one of {sorted(_TARGETS)}, got {apply_to!r}.")
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.coupled_weight_decay = float(weight_decay or 0.0)
        self.apply_to = apply_to
        self.relaxation, self.relaxation_bound = check_relaxation(relaxation, relaxation_bound)
        self.check_numerics = check_numerics
        # Per-variable `m` of a per-layer mapping, as resolved when first built (see build).
        self._resolved_m = None
        if resolved_m is not None:
            self._set_resolved_m(resolved_m)
        self._fault = None  # [step, code] of the first fault seen under XLA (see build)

    def _set_resolved_m(self, resolved_m) -> None:
        self._resolved_m = [
            None if v is None else _check_m_value(_deserialize_m(v), "resolved_m")
            for v in resolved_m
        ]

    # -- learning rate ---------------------------------------------------------------------------

    @property
    def learning_rate(self):
        """The current learning rate (a variable; a schedule's value at the current step)."""
        return tf.keras.optimizers.Optimizer.learning_rate.fget(self)

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        _check_learning_rate(learning_rate)
        tf.keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)

    # -- building --------------------------------------------------------------------------------

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
        self._variable_names = [var.name for var in var_list]
        if self._checks_per_step():
            # Not an optimizer variable and not tracked: a transient flag, never saved, so
            # checkpoints and `.keras` files are the same with and without checks.
            with tf.init_scope():
                fault = tf.Variable([-1, -1], dtype=tf.int64, trainable=False, name="fault")
            self._fault = self._no_dependency(fault)

    def _checks_per_step(self) -> bool:
        return (
            self.check_numerics
            or isinstance(self._learning_rate, Schedule)
            or any(isinstance(m, Schedule) for m in self._m_by_index)
        )

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

    # -- the update ------------------------------------------------------------------------------

    def _m_value(self, m: MValue, dtype) -> tf.Tensor:
        if isinstance(m, Schedule):
            return tf.cast(m(self.iterations), dtype)
        return tf.constant(m, dtype)

    def _guard(self, index: int, lr: tf.Tensor, m_t: tf.Tensor | None, m: MValue | None):
        """Per-step checks of scheduled values: assert (raises outside XLA), flag the first
        fault, and clamp (under XLA, where asserts are dropped): a bad step gets learning rate
        0 and `m` 0, so the variable does not move. Returns the `(lr, m_t)` to use."""
        step = self.iterations
        name = self._variable_names[index]
        ok = tf.constant(True)
        if isinstance(self._learning_rate, Schedule):
            lr_ok = tf.math.is_finite(lr) & (lr >= 0)
            tf.debugging.Assert(
                lr_ok, [f"{_FAULTS[_LR_FAULT]} (variable {name}): got", lr, "at step", step]
            )
            self._flag(step, index, _LR_FAULT, lr_ok)
            ok = ok & lr_ok
        if isinstance(m, Schedule):
            m_ok = tf.math.is_finite(m_t) & (m_t >= 0)
            tf.debugging.Assert(
                m_ok, [f"{_FAULTS[_M_FAULT]} (variable {name}): got", m_t, "at step", step]
            )
            self._flag(step, index, _M_FAULT, m_ok)
            ok = ok & m_ok
            m_t = tf.where(m_ok, m_t, tf.zeros_like(m_t))  # a NaN m would give NaN * 0
        return tf.where(ok, lr, tf.zeros_like(lr)), m_t

    def _flag(self, step, index: int, kind: int, ok) -> None:
        code = tf.constant(kind * len(self._variable_names) + index, tf.int64)
        record = tf.logical_and(tf.logical_not(ok), self._fault[0] < 0)
        self._fault.assign(
            tf.where(record, tf.stack([tf.cast(step, tf.int64), code]), self._fault)
        )

    def update_step(self, gradient, variable):
        """One Adam step, damped by `1 - tanh²(m·|v|)` where it moves a target towards zero."""
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
        index = self._index_dict[self._var_key(variable)]
        m1 = self._momentums[index]
        m2 = self._velocities[index]
        m = self._m_by_index[index]
        relaxed = m is not None and self.relaxation > 0
        if m is not None and not isinstance(m, Schedule) and m == 0:
            m = None  # f_meta = 1 everywhere: plain Adam, without computing it
        m_t = None if m is None else self._m_value(m, dtype)
        if self._fault is not None:
            lr, m_t = self._guard(index, lr, m_t, m)

        if isinstance(gradient, tf.IndexedSlices) and self.coupled_weight_decay:
            gradient = tf.convert_to_tensor(gradient)  # g + wd*v is dense
        if self.coupled_weight_decay:
            gradient = gradient + tf.cast(self.coupled_weight_decay, dtype) * variable
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        # Same expressions as tf.keras.optimizers.Adam, so that m=0 matches it bit for bit.
        if isinstance(gradient, tf.IndexedSlices):
            m1.assign_add(-m1 * (1 - self.beta_1))
            m1.scatter_add(tf.IndexedSlices(gradient.values * (1 - self.beta_1), gradient.indices))
            m2.assign_add(-m2 * (1 - self.beta_2))
            m2.scatter_add(
                tf.IndexedSlices(tf.square(gradient.values) * (1 - self.beta_2), gradient.indices)
            )
        else:
            m1.assign_add((gradient - m1) * (1 - self.beta_1))
            m2.assign_add((tf.square(gradient) - m2) * (1 - self.beta_2))
        update = (m1 * alpha) / (tf.sqrt(m2) + self.epsilon)

        if m_t is not None:
            hidden = tf.convert_to_tensor(variable)  # latent value: outside larq's quantized scope
            f_meta = 1 - tf.square(tf.tanh(m_t * tf.abs(hidden)))
            towards_zero = tf.sign(hidden) * m1 > 0
            update = tf.where(towards_zero, f_meta * update, update)
        variable.assign_sub(update)
        if relaxed:  # on the whole variable, also after a sparse gradient
            hidden = tf.convert_to_tensor(variable)
            variable.assign(relax(hidden, self.relaxation, self.relaxation_bound))
        if self.check_numerics:
            finite = tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(variable)))
            name = self._variable_names[index]
            tf.debugging.Assert(
                finite, [f"{_FAULTS[_NAN_FAULT]}: {name} at step", self.iterations]
            )
            self._flag(self.iterations, index, _NAN_FAULT, finite)

    # -- faults seen under XLA -------------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """The first fault flagged by the per-step checks (see the class docstring), as a
        message naming the step and the variable, or None."""
        if self._fault is None:
            return None
        step, code = (int(x) for x in self._fault.numpy())
        if step < 0:
            return None
        kind, index = divmod(code, len(self._variable_names))
        name = self._variable_names[index]
        if kind == _NAN_FAULT:
            return f"{_FAULTS[kind]}: {name} at step {step}."
        return (
            f"{_FAULTS[kind]} (variable {name}): got a bad value at step {step}; that step "
            "did not move the variable."
        )

    def check(self) -> None:
        """Raise `tf.errors.InvalidArgumentError` if a per-step check flagged a fault (under
        XLA, where the check cannot raise inside the step); the message names the step."""
        message = self.fault
        if message is not None:
            raise tf.errors.InvalidArgumentError(None, None, message)

    # -- serialization ---------------------------------------------------------------------------

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
        if self.relaxation:  # absent when off: the paper rule's config is unchanged
            config["relaxation"] = self.relaxation
            config["relaxation_bound"] = self.relaxation_bound
        if self.check_numerics:
            config["check_numerics"] = True
        if isinstance(self.m, dict) and getattr(self, "_m_by_index", None) is not None:
            config["resolved_m"] = [
                None if v is None else _serialize_m(v) for v in self._m_by_index
            ]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config()` (also configs saved by earlier versions)."""
        config = dict(config)
        resolved_m = config.pop("resolved_m", None)
        m = config.get("m", 1.3)
        if isinstance(m, dict) and "class_name" not in m:
            config["m"] = {key: _deserialize_m(value) for key, value in m.items()}
        else:
            config["m"] = _deserialize_m(m)
        optimizer = super().from_config(config, custom_objects=custom_objects)
        if resolved_m is not None:
            optimizer._set_resolved_m(resolved_m)
        return optimizer


class CheckOptimizer(tf.keras.callbacks.Callback):
    """Stop `fit` at the first fault flagged by `MetaplasticAdam`'s per-step checks.

    Outside XLA the checks raise inside the step; under XLA (`jit_compile=True`) they can
    only flag it, and this callback raises it after the batch (`MetaplasticAdam.check`).
    Without per-step checks (constant `m` and learning rate, `check_numerics=False`) it
    does nothing.

    !!! example
        ```python
        model.fit(x, y, callbacks=[larq_meta.optimizers.CheckOptimizer()])
        ```
    """

    def on_train_batch_end(self, batch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        if isinstance(optimizer, MetaplasticAdam):
            optimizer.check()
