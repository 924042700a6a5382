"""Deprecated: `larq_meta.analysis` was split into `larq_meta.hidden_weights`,
`larq_meta.quadratic` and `larq_meta.plots`; its command lines are `larq-meta analyze` and
`larq-meta toy` (`larq_meta.cli`).

Every old name still resolves here for one release, with a `DeprecationWarning` naming its
new home:

- `binarized_layers` -> `larq_meta.hidden_weights.binarized_variables`;
- `hidden_weights`, `correlation`, `ImportanceTable`, `flip_importance`,
  `fisher_correlation`, `train_mnist_bnn` -> `larq_meta.hidden_weights` (same names);
- `QuadraticProblem`, `QuadraticToyResult`, `quadratic_problem`, `binary_quadratic_descent`,
  `quadratic_flip_costs`, `quadratic_toy` -> `larq_meta.quadratic` (same names);
- `plot_flip_importance`, `plot_quadratic_toy` -> `larq_meta.plots` (same names);
- `analysis_main(argv)`, `toy_main(argv)` -> `larq_meta.cli.main(["analyze", *argv])`,
  `larq_meta.cli.main(["toy", *argv])`.
"""

from __future__ import annotations

import importlib
import warnings

#: Old name -> (new module, new name).
_MOVED = {
    "binarized_layers": ("larq_meta.hidden_weights", "binarized_variables"),
    **{
        name: ("larq_meta.hidden_weights", name)
        for name in (
            "hidden_weights", "correlation", "ImportanceTable", "flip_importance",
            "fisher_correlation", "train_mnist_bnn",
        )
    },
    **{
        name: ("larq_meta.quadratic", name)
        for name in (
            "QuadraticProblem", "QuadraticToyResult", "quadratic_problem",
            "binary_quadratic_descent", "quadratic_flip_costs", "quadratic_toy",
        )
    },
    "plot_flip_importance": ("larq_meta.plots", "plot_flip_importance"),
    "plot_quadratic_toy": ("larq_meta.plots", "plot_quadratic_toy"),
}

__all__ = [*_MOVED, "analysis_main", "toy_main"]


def _command(name: str):
    def forward(argv=None) -> int:
        warnings.warn(
            f"`larq_meta.analysis.{name}_main` is deprecated; use "
            f"`larq_meta.cli.main([{name!r}, ...])` or the `larq-meta {name}` command.",
            DeprecationWarning, stacklevel=2,
        )
        import sys

        from larq_meta.cli import main

        return main([name, *(sys.argv[1:] if argv is None else argv)])

    forward.__name__ = forward.__qualname__ = f"{name}_main"
    forward.__doc__ = f"Deprecated: `larq_meta.cli.main([{name!r}, *argv])`."
    return forward


def __getattr__(name):
    if name in ("analysis_main", "toy_main"):
        return _command("analyze" if name == "analysis_main" else "toy")
    if name in _MOVED:
        module, new = _MOVED[name]
        warnings.warn(
            f"`larq_meta.analysis.{name}` is deprecated; use `{module}.{new}`.",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(importlib.import_module(module), new)
    raise AttributeError(f"module 'larq_meta.analysis' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
