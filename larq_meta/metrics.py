"""Continual-learning metrics computed from the accuracy matrix.

`R[i, j]` is the test accuracy on task `j` after training task `i` (T x T, tasks in training
order). Definitions follow Lopez-Paz & Ranzato (2017) and Chaudhry et al. (2018):

- average accuracy: `mean_j R[T-1, j]`, accuracy over all tasks at the end;
- backward transfer (BWT): `mean_{j<T-1} (R[T-1, j] - R[j, j])`; negative means forgetting;
- forgetting: `mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j])`, the drop from the best.

!!! example
    ```python
    R = np.array([[0.97, 0.10], [0.60, 0.96]])
    larq_meta.metrics.backward_transfer(R)   # -0.37
    ```

# References
    - [Lopez-Paz, D. & Ranzato, M. Gradient Episodic Memory for Continual Learning (2017)](
      https://arxiv.org/abs/1706.08840)
    - [Chaudhry, A. et al. Riemannian Walk for Incremental Learning (2018)](
      https://arxiv.org/abs/1801.10112)
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_accuracy", "backward_transfer", "forgetting", "summarize"]


def _check_matrix(accuracy_matrix) -> np.ndarray:
    R = np.asarray(accuracy_matrix, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"`accuracy_matrix` must be a non-empty square matrix, got shape {R.shape}.")
    if np.isnan(R).any():
        raise ValueError("`accuracy_matrix` has NaN entries: the sequence is not finished.")
    return R


def average_accuracy(accuracy_matrix) -> float:
    """Mean accuracy over all tasks after the last task."""
    return float(_check_matrix(accuracy_matrix)[-1].mean())


def backward_transfer(accuracy_matrix) -> float:
    """Mean change of each earlier task's accuracy from right after it was learned to the end
    (0.0 for a single task)."""
    R = _check_matrix(accuracy_matrix)
    T = len(R)
    if T == 1:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forgetting(accuracy_matrix) -> float:
    """Mean drop of each earlier task's accuracy from its best before the end (0.0 for one task)."""
    R = _check_matrix(accuracy_matrix)
    T = len(R)
    if T == 1:
        return 0.0
    return float(np.mean([R[: T - 1, j].max() - R[-1, j] for j in range(T - 1)]))


def summarize(accuracy_matrix) -> dict[str, float]:
    """All metrics of this module, plus the final accuracy on the last task."""
    R = _check_matrix(accuracy_matrix)
    return {
        "average_accuracy": average_accuracy(R),
        "backward_transfer": backward_transfer(R),
        "forgetting": forgetting(R),
        "last_task_accuracy": float(R[-1, -1]),
    }
