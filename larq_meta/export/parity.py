"""Parity: run the same inputs through Keras, LCE's interpreter and TFLite, and compare.

The stock `tf.lite.Interpreter` cannot run LCE's operators; LCE flatbuffers run with
`larq_compute_engine.testing.Interpreter`. Keras runs in inference mode.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf

from larq_meta.export.convert import lce_module
from larq_meta.export.errors import ExportError

__all__ = [
    "PARITY_TOLERANCE",
    "DEFAULT_MIN_ARGMAX_AGREEMENT",
    "RELATIVE_LOGIT_TOLERANCE",
    "RANDOM_PARITY",
    "logit_tolerance",
    "ParityResult",
    "parity_inputs",
    "lce_interpreter",
    "tflite_interpreter",
    "run_lce",
    "run_tflite",
    "keras_predict",
]

#: The logit difference `ParityResult.samples_over_tolerance` counts against.
PARITY_TOLERANCE = 1e-3
#: The random parity inputs used when no `parity_data` is given: uniform in [0, 1).
RANDOM_PARITY = "random uniform [0, 1)"
#: `to_lce` refuses to write below this argmax agreement unless `allow_mismatch=True`.
DEFAULT_MIN_ARGMAX_AGREEMENT = 0.999
#: `to_lce` refuses to write when a logit differs by more than this fraction of the range of
#: Keras' logits on the parity data (see `logit_tolerance`).
RELATIVE_LOGIT_TOLERANCE = 0.05


def logit_tolerance(reference: np.ndarray) -> float:
    """The default largest |logit difference| an export may have: `RELATIVE_LOGIT_TOLERANCE`
    times the range of the reference logits, at least `PARITY_TOLERANCE`:
    $\\tau = \\max(10^{-3},\\ 0.05\\,(\\max_{ij} r_{ij} - \\min_{ij} r_{ij}))$.

    Why this scale: where LCE runs a network exactly, the logits differ by float rounding
    only (below 1e-5 on every network of `benchmarks/export_benchmark.py`). A sign tie at a
    binary activation (a pre-activation within rounding of its threshold) flips one input of
    the next layer and moves a logit by about one weight times its BatchNorm scale (0.023 on
    the trained paper convnet of docs/export.md, with every argmax unchanged); such rare ties
    are not a defect. A layer LCE computes differently moves logits by a large part of their
    range: 27-36 % for the ternary test model (`tests/export_models.py`). Scaling by the
    range makes the check independent of how large the logits of a network are.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if not reference.size:
        return PARITY_TOLERANCE
    span = float(reference.max() - reference.min())
    return max(PARITY_TOLERANCE, RELATIVE_LOGIT_TOLERANCE * span)


@dataclasses.dataclass
class ParityResult:
    """LCE flatbuffer vs Keras (inference mode) on `samples` inputs."""

    samples: int
    #: "given" or RANDOM_PARITY
    data: str
    argmax_agreement: float
    max_abs_diff: float
    #: Samples whose largest |logit difference| exceeds `PARITY_TOLERANCE` (in a large binary
    #: network one activation that float rounding puts on the other side of its sign
    #: threshold shifts a sample's logits; this counts how often that happens).
    samples_over_tolerance: int = 0
    #: Only with labels.
    keras_accuracy: Optional[float] = None
    lce_accuracy: Optional[float] = None
    #: Keras before vs after the QuantDense rewrite (0.0 / True expected).
    rewrite_max_abs_diff: Optional[float] = None
    rewrite_identical: Optional[bool] = None
    #: The plain float TFLite file vs Keras (informative: see docs/export.md).
    float_tflite_argmax_agreement: Optional[float] = None
    float_tflite_max_abs_diff: Optional[float] = None
    #: Layers LCE may not compute exactly as Keras (e.g. a ternary input quantizer): an
    #: agreement below 100 % is expected from them, and the report warns.
    inexact_layers: list[str] = dataclasses.field(default_factory=list)
    #: Range (max - min) of Keras' logits on the parity data.
    logit_range: Optional[float] = None
    #: The thresholds the export was held to, and whether it met them (None: not judged).
    min_argmax_agreement: Optional[float] = None
    max_abs_diff_allowed: Optional[float] = None
    passed: Optional[bool] = None

    def failures(self) -> list[str]:
        """Each threshold this result misses, as text (empty: it passes or was not judged)."""
        out = []
        if self.min_argmax_agreement is not None and (
            self.argmax_agreement < self.min_argmax_agreement
        ):
            out.append(
                f"argmax agreement {self.argmax_agreement:.4f} < {self.min_argmax_agreement:g}"
            )
        if self.max_abs_diff_allowed is not None and self.max_abs_diff > self.max_abs_diff_allowed:
            out.append(f"max |diff| {self.max_abs_diff:.3g} > {self.max_abs_diff_allowed:.3g}")
        return out

    def judge(self, min_argmax_agreement: Optional[float], max_abs_diff: Optional[float]):
        """Record the thresholds and set `passed`; returns `failures()`."""
        self.min_argmax_agreement = min_argmax_agreement
        self.max_abs_diff_allowed = max_abs_diff
        failures = self.failures()
        self.passed = not failures
        return failures

    @classmethod
    def from_outputs(
        cls,
        reference: np.ndarray,
        candidate: np.ndarray,
        labels: Optional[np.ndarray] = None,
        *,
        data: str = "given",
    ) -> "ParityResult":
        """Compare `candidate` outputs (e.g. LCE's) with `reference` outputs (Keras').

        With $d_i = \\max_j |c_{ij} - r_{ij}|$ for sample $i$: `max_abs_diff` $= \\max_i d_i$,
        `samples_over_tolerance` $= \\#\\{i : d_i > $ `PARITY_TOLERANCE` $\\}$,
        `argmax_agreement` $= \\frac{1}{n} \\#\\{i : \\arg\\max_j c_{ij} = \\arg\\max_j r_{ij}\\}$.

        # Arguments
            reference: `(n, ...)` outputs.
            candidate: `(n, ...)` outputs of the same shape.
            labels: Optional `(n,)` integer labels (or one-hot): accuracies of both.
            data: Where the inputs came from ("given" or `RANDOM_PARITY`).

        # Returns
            A `ParityResult`.
        """
        reference = np.asarray(reference, dtype=np.float64)
        candidate = np.asarray(candidate, dtype=np.float64)
        if reference.shape != candidate.shape:
            raise ValueError(
                f"Outputs of shapes {reference.shape} and {candidate.shape} cannot be compared."
            )
        n = len(reference)
        reference, candidate = reference.reshape(n, -1), candidate.reshape(n, -1)
        per_sample = np.abs(candidate - reference).max(axis=1) if reference.size else np.zeros(n)
        result = cls(
            samples=n,
            data=data,
            argmax_agreement=float(np.mean(candidate.argmax(1) == reference.argmax(1)))
            if n else 1.0,
            max_abs_diff=float(per_sample.max()) if n else 0.0,
            samples_over_tolerance=int(np.sum(per_sample > PARITY_TOLERANCE)),
            logit_range=float(reference.max() - reference.min()) if reference.size else 0.0,
        )
        if labels is not None:
            labels = np.asarray(labels)
            labels = labels.argmax(-1) if labels.ndim > 1 else labels
            result.keras_accuracy = float(np.mean(reference.argmax(1) == labels))
            result.lce_accuracy = float(np.mean(candidate.argmax(1) == labels))
        return result


def parity_inputs(model: tf.keras.Model, parity_data=None, samples: int = 256, seed: int = 1):
    """The inputs (and labels) a parity check runs on.

    # Arguments
        model: A single-input single-output Keras model.
        parity_data: `(x, y)`, `x`, or None for `samples` random inputs uniform in [0, 1)
            (drawn from `np.random.default_rng(seed)`). `x` may be one sample or flattened
            samples of the model's input size.
        samples: Number of random inputs.
        seed: Seed of the random inputs.

    # Returns
        `(x, y or None, source)` with `x` float32 of shape `(n,) + input shape` and source
        "given" or `RANDOM_PARITY`.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"Parity checking supports single-input single-output models; '{model.name}' has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs (pass parity=False)."
        )
    shape = tuple(model.input_shape[1:])
    if parity_data is None:
        if None in shape:
            raise ExportError(f"Model '{model.name}' has input shape {shape}: pass `parity_data`.")
        x = np.random.default_rng(seed).random((samples,) + shape, dtype=np.float32)
        return x, None, RANDOM_PARITY
    if isinstance(parity_data, (tuple, list)) and len(parity_data) == 2:
        x, y = parity_data
    else:
        x, y = parity_data, None
    x = np.asarray(x, dtype=np.float32)
    if x.shape == shape:  # one sample
        x = x[None]
    if x.ndim >= 1 and len(x) and int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        x = x.reshape((len(x),) + shape)  # e.g. (n, 28, 28) for a (28, 28, 1) input
    if not len(x):
        raise ExportError("`parity_data` holds no sample.")
    if tuple(x.shape[1:]) != shape:
        raise ExportError(
            f"`parity_data` has sample shape {x.shape[1:]}, model '{model.name}' expects {shape}."
        )
    if y is not None:
        y = np.asarray(y)
        y = y.argmax(-1) if y.ndim > 1 else y
        if len(y) != len(x):
            raise ExportError(f"`parity_data` has {len(x)} inputs but {len(y)} labels.")
    return x, y, "given"


def lce_interpreter(flatbuffer: bytes, num_threads: int = 1, **options):
    """`larq_compute_engine.testing.Interpreter` on `flatbuffer` (ExportError if it cannot
    load it); `options` such as `use_indirect_bgemm=True` are passed on."""
    lce = lce_module()
    try:
        return lce.testing.Interpreter(flatbuffer, num_threads=num_threads, **options)
    except RuntimeError as error:
        raise ExportError(f"LCE's interpreter cannot load the flatbuffer: {error}") from error


def tflite_interpreter(flatbuffer: bytes, num_threads: int = 1, xnnpack: bool = True):
    """`tf.lite.Interpreter` on a float flatbuffer, with the XNNPack delegate unless
    `xnnpack=False`."""
    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(
            model_content=flatbuffer,
            num_threads=num_threads,
            experimental_op_resolver_type=(
                resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )


def run_lce(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of an LCE flatbuffer (batch size 1, as LCE converts) for every sample of `x`,
    as `(len(x), -1)` float32."""
    interpreter = lce_interpreter(flatbuffer)
    batch = interpreter.input_shapes[0][0]
    if batch not in (1, -1):
        raise ExportError(f"The flatbuffer has a fixed batch size {batch}; parity needs 1.")
    try:
        out = interpreter.predict(np.asarray(x, dtype=np.float32))
    except RuntimeError as error:
        raise ExportError(f"LCE's interpreter failed to run the flatbuffer: {error}") from error
    return np.asarray(out).reshape(len(x), -1)


def run_tflite(flatbuffer: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of a float TFLite flatbuffer for every sample of `x`, in batches of
    `batch_size` (one batch of 10k images of a convnet would need gigabytes of activations),
    as `(len(x), -1)`."""
    interpreter = tflite_interpreter(flatbuffer, xnnpack=False)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    x = np.asarray(x, dtype=np.float32)
    outs, shape = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if chunk.shape != shape:
            interpreter.resize_tensor_input(index, list(chunk.shape))
            interpreter.allocate_tensors()
            shape = chunk.shape
        interpreter.set_tensor(index, chunk)
        interpreter.invoke()
        outs.append(interpreter.get_tensor(output).reshape(len(chunk), -1))
    return np.concatenate(outs)


def keras_predict(model: tf.keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """`model(x, training=False)` in batches, as `(len(x), -1)`."""
    out = [
        np.asarray(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).reshape(len(x), -1)
