"""The quadratic binary toy problem (Fig. 5a,b): numpy references, exact flip costs and the
`larq-meta toy` command."""

import json
import math
import os
import warnings

import numpy as np
import pytest

from larq_meta.cli import main
from larq_meta.quadratic import (
    QuadraticProblem,
    binary_quadratic_descent,
    quadratic_flip_costs,
    quadratic_problem,
    quadratic_toy,
)


def test_quadratic_descent_matches_a_numpy_reference():
    problem = quadratic_problem(6, seed=3)
    H, star = problem.hessian, problem.theta_star
    for m in (0.0, 1.3):
        trajectory, loss = binary_quadratic_descent(problem, eta=0.05, steps=3, m=m)
        theta = problem.theta_init.copy()
        for t in range(3):
            s = np.where(theta >= 0, 1.0, -1.0)
            u = 0.05 * H @ (s - star)
            if m:
                u = np.where(s * u > 0, (1 - np.tanh(m * abs(theta)) ** 2) * u, u)
            theta = theta - u
            np.testing.assert_allclose(trajectory[t + 1], theta, rtol=1e-12)
            diff = np.where(theta >= 0, 1.0, -1.0) - star
            assert loss[t + 1] == pytest.approx(0.5 * diff @ H @ diff)
    assert np.allclose(H, H.T) and np.linalg.eigvalsh(H).min() >= 10.5 - 1e-9


def test_problem_is_a_function_of_its_seed_and_its_hessian_has_the_drawn_spectrum():
    a, b = quadratic_problem(40, seed=7), quadratic_problem(40, seed=7)
    for field in ("hessian", "theta_star", "theta_init"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.allclose(quadratic_problem(40, seed=8).theta_star, a.theta_star)
    # rotate=False: H is the diagonal of the eigenvalues, which the rotated H shares
    diagonal = quadratic_problem(40, seed=7, rotate=False, eigenvalues=(2, 3))
    np.testing.assert_array_equal(diagonal.hessian, np.diag(np.diag(diagonal.hessian)))
    assert 2 <= np.diag(diagonal.hessian).min() and np.diag(diagonal.hessian).max() <= 3
    rotated = quadratic_problem(40, seed=7, eigenvalues=(2, 3))
    np.testing.assert_allclose(np.linalg.eigvalsh(rotated.hessian),
                               np.sort(np.diag(diagonal.hessian)), rtol=1e-10)
    assert np.abs(rotated.hessian - np.diag(np.diag(rotated.hessian))).max() > 1e-3
    scaled = quadratic_problem(40, seed=7, target_scale=0.5, init_scale=0.0)
    assert np.abs(scaled.theta_star).max() <= 0.5 and not scaled.theta_init.any()
    # the loss: one value per row, equal to the quadratic form
    rows = np.random.default_rng(0).normal(size=(3, 40))
    expected = [0.5 * (r - a.theta_star) @ a.hessian @ (r - a.theta_star) for r in rows]
    np.testing.assert_allclose(a.loss(rows), expected, rtol=1e-12)


def test_flip_costs_are_exact():
    problem = quadratic_problem(8, seed=4)
    theta = np.random.default_rng(0).normal(size=8)
    s = np.where(theta >= 0, 1.0, -1.0)
    costs = quadratic_flip_costs(problem, theta)
    for i in range(8):
        flipped = s.copy()
        flipped[i] = -flipped[i]
        assert costs[i] == pytest.approx(problem.loss(flipped) - problem.loss(s), rel=1e-9)


def test_toy_hidden_weight_magnitude_tracks_the_cost_of_a_flip():
    result = quadratic_toy(d=200, eta=0.01, steps=300, seed=2)
    assert result.trajectory.shape == (301, 200) and result.loss.shape == (301,)
    assert result.loss[-1] < 0.6 * result.loss[0]  # it learns
    assert result.correlations["flip_cost"]["spearman"] > 0.9
    assert result.correlations["flip_cost"]["pearson"] > 0.85
    # a rotated H has an almost constant diagonal: no relation there
    assert abs(result.correlations["hessian_diagonal"]["spearman"]) < 0.3
    means = result.binned["flip_cost_mean"]
    assert means[-1] > means[0] and sum(result.binned["count"]) == 200
    # with a diagonal H whose curvatures differ, the curvature shows up as well
    diagonal = quadratic_toy(d=200, eta=0.01, steps=300, seed=2, rotate=False, eigenvalues=(1, 40))
    assert diagonal.correlations["hessian_diagonal"]["spearman"] > 0.2
    # metaplastic damping changes the trajectory but keeps the relation
    meta = quadratic_toy(d=200, eta=0.01, steps=300, seed=2, m=1.0)
    assert not np.allclose(meta.theta_h, result.theta_h)
    assert meta.correlations["flip_cost"]["spearman"] > 0.9


def test_toy_result_against_its_own_parts():
    """Every field is what the building blocks give, recomputed here with numpy."""
    problem = quadratic_problem(50, seed=5)
    result = quadratic_toy(problem=problem, eta=0.02, steps=40, bins=4)
    trajectory, loss = binary_quadratic_descent(problem, 0.02, 40)
    np.testing.assert_array_equal(result.trajectory, trajectory)
    np.testing.assert_array_equal(result.theta_h, trajectory[-1])
    np.testing.assert_array_equal(result.flip_cost, quadratic_flip_costs(problem, trajectory[-1]))
    magnitude = np.abs(trajectory[-1])
    np.testing.assert_allclose(
        result.correlations["flip_cost"]["pearson"],
        np.corrcoef(magnitude, result.flip_cost)[0, 1], rtol=1e-10)
    relative = magnitude / magnitude.max()
    which = np.minimum((relative * 4).astype(int), 3)  # equal-width bins of [0, 1]
    expected = [result.flip_cost[which == k].mean() for k in range(4) if (which == k).any()]
    np.testing.assert_allclose(result.binned["flip_cost_mean"], expected, rtol=1e-12)
    assert list(result.binned["count"]) == [int((which == k).sum()) for k in range(4)
                                            if (which == k).any()]
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["final_loss"] == pytest.approx(loss[-1]) and "trajectory" not in summary
    assert summary["best_loss"] == pytest.approx(loss.min())
    assert len(result.to_dict(trajectory=True)["trajectory"]) == 41
    # a constant Hessian diagonal has no correlation to report
    flat = quadratic_toy(problem=QuadraticProblem(3 * np.eye(10), problem.theta_star[:10],
                                                  problem.theta_init[:10]), steps=5)
    assert math.isnan(flat.correlations["hessian_diagonal"]["spearman"])


def test_toy_defaults_follow_the_notebook():
    result = quadratic_toy(d=2)
    assert (result.eta, result.steps) == (0.35, 500)
    np.testing.assert_array_equal(result.problem.theta_star, [1.5, 0.5])
    np.testing.assert_array_equal(result.trajectory[0], [0.01, 0.02])
    big = quadratic_problem(500, seed=1)
    eig = np.linalg.eigvalsh(big.hessian)
    assert 10.5 <= eig.min() and eig.max() <= 29.5 and np.abs(big.theta_star).max() <= 4


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"bins": 0}, "bins"),
        ({"bins": 2.5}, "bins"),
        ({"eta": 0.0}, "eta"),
        ({"eta": float("nan")}, "eta"),
        ({"m": -1.0}, "m"),
        ({"steps": -1}, "steps"),
        ({"d": 0}, "d"),
        ({"eigenvalues": (3, 1)}, "eigenvalues"),
    ],
)
def test_toy_refuses_bad_values_by_name(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        quadratic_toy(**{"d": 4, "steps": 2, **kwargs})


# -- `larq-meta toy` ------------------------------------------------------------------------------


def test_toy_command_writes_what_the_library_computes(tmp_path, capsys):
    out = tmp_path / "toy"
    argv = ["toy", "--d", "2", "20", "--steps", "30", "--bins", "5", "--output", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "toy.json").read_text())
    assert set(summary) == {"d=2", "d=20"} and "trajectory" in summary["d=2"]
    for d in (2, 20):
        expected = json.loads(json.dumps(quadratic_toy(d=d, steps=30, seed=1, bins=5).to_dict(
            trajectory=d <= 2)))
        assert summary[f"d={d}"] == expected
        assert (out / f"toy_d{d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "d=20: eta 0.01, 30 steps" in printed and f"Results: {out}/" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bins", "0"], "--bins: must be a positive integer"),
        (["--d", "0"], "--d: must be a positive integer"),
        (["--eta", "0"], "--eta: must be a finite number > 0, got 0"),
        (["--eta", "nan"], "--eta: must be a finite number"),
        (["--steps", "-1"], "--steps: must be an integer >= 0"),
        (["--m", "-0.5"], "--m: must be a finite number >= 0"),
        (["--seed", "-1"], "--seed: must be an integer >= 0"),
        (["--seed", "x"], "--seed: must be an integer >= 0"),
    ],
)
def test_toy_command_refuses_bad_values(tmp_path, capsys, argv, message):
    assert main(["toy", *argv, "--output", str(tmp_path / "toy")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "toy").exists()  # refused before any work


def test_toy_command_refuses_an_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["toy", "--d", "3", "--steps", "1", "--output", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output" in err[0] and "not a folder" in err[0]
    assert target.read_text() == "not a folder"


def test_deprecated_toy_main_forwards_to_the_command(tmp_path):
    from larq_meta import analysis

    with pytest.warns(DeprecationWarning, match="larq_meta.analysis.quadratic_toy"):
        assert analysis.quadratic_toy is quadratic_toy
    with pytest.warns(DeprecationWarning, match="larq-meta toy"):
        code = analysis.toy_main(["--d", "3", "--steps", "2", "--output", str(tmp_path)])
    assert code == 0 and os.path.exists(tmp_path / "toy_d3.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            analysis.no_such_name  # noqa: B018
