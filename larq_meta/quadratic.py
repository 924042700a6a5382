"""The quadratic binary task of Laborieux et al. (2021), Fig. 5a,b, in numpy.

Hidden weights `theta_h` (one per synapse) descend the quadratic loss

`L(theta) = 1/2 (theta - theta*)^T H (theta - theta*)`

evaluated at their binary weights `s = sign(theta_h)`, exactly as a BNN's hidden weights are
trained through the straight-through estimator. The importance of a synapse, the loss
increase of flipping its binary weight, is then known in closed form, so the paper's claim
that it grows with `|theta_h|` can be checked exactly: a weight whose sign the gradient keeps
confirming keeps growing, and its flip costs more. `larq_meta.hidden_weights` measures the
same relation on trained Keras models (Fig. 5c-e).

No TensorFlow is needed here.

!!! example
    ```python
    result = larq_meta.quadratic.quadratic_toy(d=500, steps=1000, seed=1)
    result.correlations["flip_cost"]["spearman"]  # close to 1
    larq_meta.plots.plot_quadratic_toy(result, "toy_500.png")
    ```

# References
    - [Synaptic metaplasticity in binarized neural networks (Laborieux et al., 2021),
      Fig. 5](https://www.nature.com/articles/s41467-021-22768-y)
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from larq_meta._utils import check_float, check_int, correlation

__all__ = [
    "QuadraticProblem",
    "quadratic_problem",
    "binary_quadratic_descent",
    "quadratic_flip_costs",
    "QuadraticToyResult",
    "quadratic_toy",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class QuadraticProblem:
    """`L(theta) = 1/2 (theta - theta*)^T H (theta - theta*)`, learned with binary weights.

    # Attributes
        hessian: `(d, d)` symmetric positive definite matrix `H`.
        theta_star: `(d,)` optimum `theta*` (generally not binary).
        theta_init: `(d,)` initial hidden weights.
    """

    hessian: np.ndarray
    theta_star: np.ndarray
    theta_init: np.ndarray

    @property
    def dim(self) -> int:
        """The dimension `d` (number of synapses)."""
        return len(self.theta_star)

    def loss(self, theta: np.ndarray) -> np.ndarray:
        """`L` at `theta` of shape `(d,)` or `(..., d)` (one value per row)."""
        diff = np.asarray(theta, np.float64) - self.theta_star
        return 0.5 * np.sum((diff @ self.hessian) * diff, axis=-1)


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal matrix, uniform (Haar) on O(d) (QR of a Gaussian matrix with
    the signs fixed; the reference notebook uses Shahshahani's subgroup algorithm)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _sign(theta: np.ndarray) -> np.ndarray:
    """`sign` with `sign(0) = +1`, as larq's `ste_sign`."""
    return np.where(np.asarray(theta) >= 0, 1.0, -1.0)


def quadratic_problem(
    d: int = 500,
    seed: int | None = 1,
    *,
    eigenvalues: tuple[float, float] | None = None,
    rotate: bool = True,
    target_scale: float | None = None,
    init_scale: float = 0.01,
) -> QuadraticProblem:
    """A random instance of the quadratic binary task, with the reference notebook's settings.

    `H = R^T diag(lambda) R` with eigenvalues `lambda_i ~ U(eigenvalues)` and `R` a random
    rotation (`rotate=False`: `H = diag(lambda)`). Defaults, as in `Fig-5ab.ipynb`:

    - `d = 2` (Fig. 5a): eigenvalues `U(0, 5)`, `theta* = (1.5, 0.5)`,
      `theta_init = (0.01, 0.02)`.
    - `d > 2` (Fig. 5b, `d = 500`): eigenvalues `U(10.5, 29.5)` (`20 + 19 (U - 1/2)`),
      `theta* ~ U(-4, 4)`, `theta_init ~ 0.01 N(0, 1)`.

    !!! example
        ```python
        problem = quadratic_problem(500, seed=1)
        problem.loss(np.sign(problem.theta_init))
        ```

    # Arguments
        d: Dimension (number of synapses).
        seed: Seed of `numpy.random.default_rng` (the notebook's torch draws differ).
        eigenvalues: `(low, high)` of the uniform eigenvalue distribution, `0 <= low < high`.
        rotate: Rotate the eigenbasis at random (True) or keep `H` diagonal.
        target_scale: `theta* ~ U(-target_scale, target_scale)` (default 4; for `d = 2` the
            default is the fixed point `(1.5, 0.5)`).
        init_scale: Standard deviation of the initial hidden weights (`d > 2`).

    # Returns
        A `QuadraticProblem`.
    """
    d = check_int(d, "d")
    init_scale = check_float(init_scale, "init_scale", minimum=0)
    if target_scale is not None:
        target_scale = check_float(target_scale, "target_scale", minimum=0)
    rng = np.random.default_rng(seed)
    low, high = eigenvalues if eigenvalues is not None else ((0.0, 5.0) if d == 2 else (10.5, 29.5))
    if not 0 <= low < high:
        raise ValueError(
            f"`eigenvalues` must be (low, high) with 0 <= low < high, got {eigenvalues!r}."
        )
    lam = rng.uniform(low, high, d)
    if rotate:
        r = _haar_orthogonal(d, rng)
        hessian = r.T @ (lam[:, None] * r)
        hessian = (hessian + hessian.T) / 2
    else:
        hessian = np.diag(lam)
    if d == 2 and target_scale is None:
        theta_star = np.array([1.5, 0.5])
        theta_init = np.array([0.01, 0.02])
    else:
        scale = 4.0 if target_scale is None else target_scale
        theta_star = rng.uniform(-scale, scale, d)
        theta_init = init_scale * rng.standard_normal(d)
    return QuadraticProblem(hessian, theta_star, theta_init)


def binary_quadratic_descent(
    problem: QuadraticProblem,
    eta: float,
    steps: int,
    m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on hidden weights, with the gradient taken at their signs.

    `theta_h <- theta_h - f * u`, `u = eta H (sign(theta_h) - theta*)`,

    with `f = 1` (the reference notebook, `m = 0`) or, for `m > 0`, the metaplastic damping
    of `MetaplasticAdam`: `f = 1 - tanh²(m |theta_h|)` where the update moves `theta_h`
    towards zero (`sign(theta_h) u > 0`), `f = 1` elsewhere. `sign(0)` is taken as +1.

    !!! example
        ```python
        trajectory, loss = binary_quadratic_descent(quadratic_problem(2), 0.35, 500)
        ```

    # Arguments
        problem: A `QuadraticProblem`.
        eta: Learning rate, > 0.
        steps: Number of steps, >= 0.
        m: Metaplastic damping strength, >= 0.

    # Returns
        `(trajectory, loss)`: hidden weights after each step, shape `(steps + 1, d)` (row 0
        is `theta_init`), and the loss of the binary weights `L(sign(theta_h))` at each row.
    """
    steps = check_int(steps, "steps", 0)
    eta = check_float(eta, "eta", positive=True)
    m = check_float(m, "m", minimum=0)
    theta = np.array(problem.theta_init, np.float64)
    trajectory = np.empty((steps + 1, problem.dim))
    trajectory[0] = theta
    for t in range(steps):
        update = eta * problem.hessian @ (_sign(theta) - problem.theta_star)
        if m > 0:
            towards_zero = _sign(theta) * update > 0
            update = np.where(towards_zero, (1 - np.tanh(m * np.abs(theta)) ** 2) * update, update)
        theta = theta - update
        trajectory[t + 1] = theta
    return trajectory, problem.loss(_sign(trajectory))


def quadratic_flip_costs(problem: QuadraticProblem, theta_h: np.ndarray) -> np.ndarray:
    """Exact loss increase of flipping each binary weight, at `s = sign(theta_h)`.

    `c_i = L(s with s_i -> -s_i) - L(s) = 2 H_ii - 2 s_i [H (s - theta*)]_i`:
    the curvature of the synapse plus how much the current gradient disagrees with flipping
    it.

    # Arguments
        problem: A `QuadraticProblem`.
        theta_h: `(d,)` hidden weights.

    # Returns
        The `(d,)` costs `c`.
    """
    s = _sign(theta_h)
    gradient = problem.hessian @ (s - problem.theta_star)
    return 2 * np.diag(problem.hessian) - 2 * s * gradient


@dataclasses.dataclass
class QuadraticToyResult:
    """What `quadratic_toy` computed.

    # Attributes
        problem: The `QuadraticProblem`.
        eta, steps, m: The descent settings.
        trajectory: Hidden weights after each step, `(steps + 1, d)`.
        loss: `L(sign(theta_h))` at each step.
        theta_h: Final hidden weights.
        flip_cost: Exact loss increase of flipping each final binary weight.
        hessian_diagonal: `diag(H)`.
        correlations: `{"flip_cost": {...}, "hessian_diagonal": {...}}`, Pearson and
            Spearman correlations of `|theta_h|` with each.
        binned: Fig. 5b: bins of `|theta_h| / max |theta_h|` (equal width, empty bins
            dropped) with `relative_magnitude`, `flip_cost_mean`, `flip_cost_std`, `count`.
    """

    problem: QuadraticProblem
    eta: float
    steps: int
    m: float
    trajectory: np.ndarray
    loss: np.ndarray
    theta_h: np.ndarray
    flip_cost: np.ndarray
    hessian_diagonal: np.ndarray
    correlations: dict
    binned: dict

    def to_dict(self, trajectory: bool = False) -> dict:
        """JSON-friendly summary (the trajectory only if asked: it can be large)."""
        out = {
            "d": self.problem.dim, "eta": self.eta, "steps": self.steps, "m": self.m,
            "final_loss": float(self.loss[-1]),
            "best_loss": float(self.loss.min()),
            "correlations": self.correlations,
            "binned": {k: np.asarray(v).tolist() for k, v in self.binned.items()},
        }
        if trajectory:
            out["trajectory"] = self.trajectory.tolist()
        return out


def quadratic_toy(
    d: int = 500,
    eta: float | None = None,
    steps: int | None = None,
    m: float = 0.0,
    seed: int | None = 1,
    *,
    bins: int = 15,
    problem: QuadraticProblem | None = None,
    **problem_kwargs,
) -> QuadraticToyResult:
    """Run the quadratic binary task (Fig. 5a,b) and relate `|theta_h|` to importance.

    Hidden weights follow `binary_quadratic_descent` on a random `quadratic_problem`. At
    the end, the importance of each synapse is the exact loss increase of flipping its
    binary weight (`quadratic_flip_costs`); the paper's point is that it grows with
    `|theta_h|` (strong positive correlation), because a weight whose sign the gradient
    keeps confirming keeps growing. The Hessian diagonal `H_ii` (the synapse's own
    curvature) is reported too.

    !!! example
        ```python
        result = quadratic_toy(d=500, eta=0.01, steps=1000, seed=1)
        result.correlations["flip_cost"]["spearman"]     # close to 1
        larq_meta.plots.plot_quadratic_toy(result, "toy.png")
        ```

    # Arguments
        d: Dimension (2 for Fig. 5a's trajectory, 500 for Fig. 5b).
        eta: Learning rate (default: 0.35 for `d = 2`, 0.01 otherwise, as the notebook).
        steps: Number of steps (default: 500 for `d = 2`, 1000 otherwise).
        m: Metaplastic damping strength (0, the notebook's setting: plain descent).
        seed: Seed of the problem.
        bins: Bins of `|theta_h|` for the Fig. 5b summary, >= 1.
        problem: A `QuadraticProblem` to use instead of drawing one.
        **problem_kwargs: Passed to `quadratic_problem` (`eigenvalues`, `rotate`,
            `target_scale`, `init_scale`).

    # Returns
        A `QuadraticToyResult`.

    # Raises
        ValueError: for an argument out of range (the message names it).
    """
    bins = check_int(bins, "bins")
    if problem is None:
        problem = quadratic_problem(d, seed, **problem_kwargs)
    eta = (0.35 if problem.dim == 2 else 0.01) if eta is None else eta
    steps = (500 if problem.dim == 2 else 1000) if steps is None else steps
    trajectory, loss = binary_quadratic_descent(problem, eta, steps, m)
    theta_h = trajectory[-1]
    costs = quadratic_flip_costs(problem, theta_h)
    diagonal = np.diag(problem.hessian).copy()
    magnitude = np.abs(theta_h)
    relative = magnitude / magnitude.max() if magnitude.max() > 0 else magnitude
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, relative, side="right") - 1, 0, bins - 1)
    binned = {"relative_magnitude": [], "flip_cost_mean": [], "flip_cost_std": [], "count": []}
    for k in range(bins):
        members = which == k
        if members.any():
            binned["relative_magnitude"].append(float(relative[members].mean()))
            binned["flip_cost_mean"].append(float(costs[members].mean()))
            binned["flip_cost_std"].append(float(costs[members].std()))
            binned["count"].append(int(members.sum()))
    constant_diagonal = np.ptp(diagonal) == 0
    result = QuadraticToyResult(
        problem=problem, eta=float(eta), steps=int(steps), m=float(m),
        trajectory=trajectory, loss=loss, theta_h=theta_h, flip_cost=costs,
        hessian_diagonal=diagonal,
        correlations={
            "flip_cost": correlation(magnitude, costs),
            "hessian_diagonal": (
                {"pearson": float("nan"), "spearman": float("nan"), "n": problem.dim}
                if constant_diagonal else correlation(magnitude, diagonal)
            ),
        },
        binned={k: np.asarray(v) for k, v in binned.items()},
    )
    logger.debug("quadratic_toy d=%d: loss %.4g -> %.4g", problem.dim, loss[0], loss[-1])
    return result
