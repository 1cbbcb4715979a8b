"""ADMM and FISTA against CVXPY + Clarabel on tiny instances."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import cvxpy_oracle, standardized, tiny

from coala_core.phase1 import fit_phase1

TIGHT = dict(tol=1e-11, max_iter=30000, gated_max_iter=50000, compute_dtype="float64", drop_degenerate=False)


@pytest.mark.parametrize("program", ["relu", "gated"])
@pytest.mark.parametrize("seed,n,P,bias", [(0, 30, 3, False), (1, 40, 3, True), (2, 20, 2, False)])
def test_matches_cvxpy(program: str, seed: int, n: int, P: int, bias: bool) -> None:
    X, y = tiny(seed, n=n)
    beta = 0.02
    res = fit_phase1(X, y, n_patterns=P, beta=beta, program=program, bias=bias, **TIGHT)
    ref = cvxpy_oracle(standardized(X, res), y, res.gates, beta, program)
    assert res.converged
    assert abs(res.objective - ref) <= 1e-6 * abs(ref)
    assert res.cone_violation <= 1e-6
    assert res.objective_unscaled == pytest.approx(res.objective * n, rel=1e-12)


def test_float32_close_to_oracle() -> None:
    X, y = tiny(3, n=40)
    res = fit_phase1(X, y, n_patterns=3, beta=0.02, tol=1e-7, max_iter=20000, drop_degenerate=False)
    ref = cvxpy_oracle(standardized(X, res), y, res.gates, 0.02, "relu")
    assert abs(res.objective - ref) <= 1e-4 * ref
    assert res.cone_violation <= 1e-4


def test_sum_loss_is_the_scaled_problem() -> None:
    """loss='sum' with beta_sum = n * beta solves the same problem as loss='mean' with beta."""
    X, y = tiny(4, n=30)
    a = fit_phase1(X, y, n_patterns=3, beta=0.02, **TIGHT)
    b = fit_phase1(X, y, n_patterns=3, beta=0.02 * 30, loss="sum", rho=30.0, **TIGHT)
    assert b.objective == pytest.approx(a.objective, rel=1e-7)
    np.testing.assert_allclose(b.v, a.v, atol=1e-5)


@pytest.mark.parametrize("program", ["relu", "gated"])
@pytest.mark.parametrize("seed,n,P,beta", [(0, 60, 3, 0.02), (1, 200, 6, 0.01), (2, 300, 8, 3e-3)])
def test_default_settings_close_to_cvxpy(program: str, seed: int, n: int, P: int, beta: float) -> None:
    """The solver at its default settings (tol, max_iter, rho, float32, ...): what users get."""
    X, y = tiny(seed, n=n, d=8)
    res = fit_phase1(X, y, n_patterns=P, beta=beta, program=program)
    ref = cvxpy_oracle(standardized(X, res), y, res.gates, beta, program)
    assert res.converged
    assert abs(res.objective - ref) <= 1e-3 * abs(ref)
    assert res.cone_violation <= 1e-3
