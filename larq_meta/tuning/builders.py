"""`build_model(hp)` functions for `MetaplasticTuner`.

!!! example
    ```python
    build_model = paper_mlp_builder((256, 256), learning_rate=0.05)
    tuner = MetaplasticTuner(build_model, tasks, max_trials=12)
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_M_RANGE", "paper_mlp_builder"]

#: Range of `m` searched unless told otherwise (the paper's Fig. 2 uses m in [0, 3]).
DEFAULT_M_RANGE = (0.0, 3.0)


def paper_mlp_builder(
    hidden_units: Sequence[int] = (1024, 1024),
    num_classes: int = 10,
    input_shape: Sequence[int] = (784,),
    learning_rate: float = 0.005,
    epsilon: float = 1e-7,
    weight_decay: float = 0.0,
    *,
    compute_dtype: str = "float32",
    jit_compile: bool = True,
) -> Callable:
    """A `build_model(hp)` for `MetaplasticTuner`: the compiled paper model of
    `larq_meta.models.compiled_paper_mlp` with the trial's `m` (and learning rate).

    `m` is `hp.Float("m", 0.0, 3.0)` (the tuner declares the range it searches before the
    model is built, so its range wins); the learning rate is the searched `"learning_rate"` if
    the tuner searches it, else `learning_rate`. Loss: sparse cross-entropy on logits.

    !!! example
        ```python
        build_model = paper_mlp_builder((256, 256), learning_rate=0.05)
        model = build_model(keras_tuner.HyperParameters())   # m = 0.0, the range's low end
        ```

    # Arguments
        hidden_units, num_classes, input_shape, compute_dtype: As in `paper_mlp`.
        learning_rate: Learning rate when it is not searched.
        epsilon, weight_decay: As in `MetaplasticAdam`.
        jit_compile: Compile the training step with XLA (as in `compiled_paper_mlp`; False
            saves the compilation of tiny trials).

    # Returns
        `build_model(hp) -> tf.keras.Model`, compiled.
    """
    hidden_units = tuple(int(units) for units in hidden_units)
    input_shape = tuple(int(size) for size in input_shape)

    def build_model(hp):
        from larq_meta.models import compiled_paper_mlp

        return compiled_paper_mlp(
            hidden_units,
            m=hp.Float("m", *DEFAULT_M_RANGE),
            learning_rate=hp.values.get("learning_rate", learning_rate),
            epsilon=epsilon,
            weight_decay=weight_decay,
            num_classes=num_classes,
            input_shape=input_shape,
            compute_dtype=compute_dtype,
            jit_compile=jit_compile,
        )

    build_model.__name__ = f"paper_mlp_builder{hidden_units}"
    return build_model
