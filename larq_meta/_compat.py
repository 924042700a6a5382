"""Every use of another package's private API, in one place, behind version checks.

larq-meta reaches into keras-tuner (distributed-search plumbing, the grid oracle's state)
and larq-compute-engine (the flatbuffer schema, the GraphDef conversion path) where their
public APIs stop short. Each such name is imported here and nowhere else; each package has a
range of versions it was tested with, and `check_version` raises an `ImportError` that names
the package, its installed version and that range before any private name is used.
`tests/test_compat.py` checks that the installed versions are in range.
"""

from __future__ import annotations

import importlib.metadata

#: Distribution name -> (lowest tested version, first version not tested), as tuples.
TESTED_VERSIONS = {
    "keras-tuner": ((1, 4, 8), (1, 5)),
    "larq-compute-engine": ((0, 16), (0, 17)),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def check_version(distribution: str) -> str:
    """The installed version of `distribution`; ImportError if it is outside the tested range
    (or not installed), naming this module, the package and the range."""
    low, high = TESTED_VERSIONS[distribution]
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"{distribution} is not installed.") from None
    if not low <= _version_tuple(installed) < high:
        span = f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        raise ImportError(
            f"larq_meta._compat: {distribution} {installed} is outside the range larq-meta uses "
            f"private parts of and was tested with ({span}); install {distribution}{span}."
        )
    return installed


# -- keras-tuner ----------------------------------------------------------------------------------
# Used by larq_meta.tuning: trial states, the grid oracle's queue, the oracle's lock and the
# chief's gRPC servicer (keras-tuner has no public API for these).

import functools as _functools  # noqa: E402


@_functools.cache
def keras_tuner_internals():
    """The private keras-tuner names `larq_meta.tuning` uses, as a namespace (cached).

    - `TrialStatus`: the trial states (`RUNNING`, `IDLE`, `STOPPED`, `COMPLETED`, ...);
    - `LinkedList`: the grid oracle's ordered queue of trial ids;
    - `oracle_lock(oracle)`: the lock of the oracle's `@synchronized` methods;
    - `is_chief_oracle()`: True in the chief process of a distributed search;
    - `chief_service()`: the chief's gRPC service, `(OracleServicer, exit_chief(oracle),
      add_OracleServicer_to_server(servicer, server))` (imports gRPC, hence a function).

    # Raises
        ImportError: keras-tuner is missing or outside `TESTED_VERSIONS` (see `check_version`).
    """
    import types

    check_version("keras-tuner")
    from keras_tuner.src.distribute import utils as dist_utils
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine.trial import TrialStatus
    from keras_tuner.src.tuners.gridsearch import LinkedList

    def oracle_lock(oracle):
        return oracle_module.LOCKS[oracle]

    def chief_service():
        # gRPC and the protos are imported only by a distributed search's chief.
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief

        return (
            oracle_chief.OracleServicer,
            oracle_chief.exit_chief,
            protos.get_service_grpc().add_OracleServicer_to_server,
        )

    return types.SimpleNamespace(
        TrialStatus=TrialStatus,
        LinkedList=LinkedList,
        oracle_lock=oracle_lock,
        is_chief_oracle=dist_utils.is_chief_oracle,
        chief_service=chief_service,
    )


# -- larq-compute-engine --------------------------------------------------------------------------
# Used by larq_meta.export: LCE's generated TFLite schema (op counts, int8 weight storage), its
# frozen-graph conversion path (the fallback inside `convert_keras_model`, called directly) and
# the TensorFlow / tf-keras internals that path and the dense rewrite need.


def lce_tflite_schema():
    """LCE's generated Python TFLite schema (`larq_compute_engine.mlir.python.tflite_schema`)."""
    check_version("larq-compute-engine")
    from larq_compute_engine.mlir.python import tflite_schema

    return tflite_schema


def lce_graphdef_path():
    """The pieces of LCE's frozen-graph conversion path, as attributes of one namespace:
    `convert_graphdef_to_tflite_flatbuffer`, `contains_training_quant_op`, `validate_options`,
    `concrete_function_from_keras_model`, `modify_integer_quantized_model_io_type` (LCE) and
    `get_tensor_name`, `convert_variables_to_constants_v2` (TensorFlow)."""
    check_version("larq-compute-engine")
    from types import SimpleNamespace

    from larq_compute_engine.mlir._tf_tfl_flatbuffer import convert_graphdef_to_tflite_flatbuffer
    from larq_compute_engine.mlir.python.converter import (
        _contains_training_quant_op,
        _validate_options,
        concrete_function_from_keras_model,
    )
    from larq_compute_engine.mlir.python.util import modify_integer_quantized_model_io_type
    from tensorflow.lite.python.util import get_tensor_name
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return SimpleNamespace(
        convert_graphdef_to_tflite_flatbuffer=convert_graphdef_to_tflite_flatbuffer,
        contains_training_quant_op=_contains_training_quant_op,
        validate_options=_validate_options,
        concrete_function_from_keras_model=concrete_function_from_keras_model,
        modify_integer_quantized_model_io_type=modify_integer_quantized_model_io_type,
        get_tensor_name=get_tensor_name,
        convert_variables_to_constants_v2=convert_variables_to_constants_v2,
    )


def keras_skips_first_node(layer) -> bool:
    """tf-keras' `functional._should_skip_first_node`: a nested model with an input layer does
    not serialize the node it was built with, so its config's node indices start at 1."""
    try:
        from tf_keras.src.engine.functional import _should_skip_first_node
    except ImportError:  # pragma: no cover - other tf-keras layouts: the same rule, spelled out
        import tensorflow as tf

        tracked = getattr(layer, "_self_tracked_trackables", None)
        return bool(
            isinstance(layer, tf.keras.Model)
            and tracked
            and isinstance(tracked[0], tf.keras.layers.InputLayer)
        )
    return bool(_should_skip_first_node(layer))
