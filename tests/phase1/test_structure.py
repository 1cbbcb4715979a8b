"""The structured u-step equals a dense solve of the full u-system (method.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import tiny

from coala_core.phase1.config import Phase1Config
from coala_core.phase1.data import PreparedRows
from coala_core.phase1.linalg import StructuredUStep
from coala_core.phase1.source import ArrayRows


def dense_operators(rows: PreparedRows) -> tuple[np.ndarray, np.ndarray]:
    """Explicit F (n, 2Pd) and G (2Pn, 2Pd) in the (v_1..v_P, w_1..w_P) ordering."""
    X = np.asarray(rows.X, dtype=np.float64)
    E = np.asarray(rows.E, dtype=np.float64)
    n, d, P = X.shape[0], X.shape[1], E.shape[1]
    D = (E > 0).astype(float)
    F = np.zeros((n, 2 * P * d))
    G = np.zeros((2 * P * n, 2 * P * d))
    for i in range(P):
        F[:, i * d:(i + 1) * d] = D[:, i:i + 1] * X
        F[:, (P + i) * d:(P + i + 1) * d] = -D[:, i:i + 1] * X
        G[i * n:(i + 1) * n, i * d:(i + 1) * d] = E[:, i:i + 1] * X
        G[(P + i) * n:(P + i + 1) * n, (P + i) * d:(P + i + 1) * d] = E[:, i:i + 1] * X
    return F, G


@pytest.mark.parametrize("factor_max_dim", [8192, 1])
@pytest.mark.parametrize("rho,alpha", [(1.0, 1.0), (0.03, 0.2), (50.0, 3.0)])
def test_structured_ustep_is_exact(rho: float, alpha: float, factor_max_dim: int) -> None:
    X, y = tiny(5, n=25, d=4)
    cfg = Phase1Config(n_patterns=3, compute_dtype="float64", drop_degenerate=False)
    rows = PreparedRows(ArrayRows(X, y), cfg)
    XtX, H, Fty = rows.grams(with_H=True)
    F, G = dense_operators(rows)
    n, P, d = rows.n, rows.P, rows.d
    np.testing.assert_allclose(G.T @ G, np.kron(np.eye(2 * P), XtX), atol=1e-10)  # G'G = I_2P (x) X'X
    np.testing.assert_allclose(F.T @ y, np.concatenate([Fty.ravel(), -Fty.ravel()]), atol=1e-10)
    M = np.eye(2 * P * d) + F.T @ F / (n * rho) + alpha**2 * G.T @ G
    b = np.random.default_rng(0).standard_normal((2, P, d))
    u_dense = np.linalg.solve(M, b.ravel()).reshape(2, P, d)
    step = StructuredUStep(XtX, H, Fty, n, alpha, np, factor_max_dim=factor_max_dim, pcg_tol=1e-13,
                           pcg_max_iter=500)
    u = step.solve(b, rho, np.zeros_like(b))
    np.testing.assert_allclose(u, u_dense, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(step.full_matvec(u, rho).ravel(), M @ u.ravel(), atol=1e-9)
    if factor_max_dim == 1:
        assert step.cg_iters > 0


def _dense_a_system(rows: PreparedRows, XtX: np.ndarray, H: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    P, d = rows.P, rows.d
    return np.kron(np.eye(P), np.eye(d) + alpha**2 * XtX) + (2.0 / (rows.n_loss * rho)) * H


@pytest.mark.parametrize("d", [6, 30])
@pytest.mark.parametrize("objective", ["pointwise", "pairwise"])
@pytest.mark.parametrize("rho,alpha", [(1.0, 1.0), (0.03, 0.2), (50.0, 3.0), (1e4, 0.1)])
def test_woodbury_ustep_solves_the_same_system(objective: str, rho: float, alpha: float, d: int) -> None:
    """The rows-space u-step equals an explicit dense solve of the Pd-space a-system and the full u-system,
    for the pointwise loss and for pair differences (rows fewer than P d, so auto would pick it); with d = 30
    the rows are also fewer than d, and K^-1 itself is applied in row space."""
    from coala_core.phase1.linalg import WoodburyUStep
    from coala_core.phase1.source import PairArrays, PairRows

    rng = np.random.default_rng(3)
    cfg = Phase1Config(n_patterns=4, compute_dtype="float64", drop_degenerate=False, objective=objective)
    if objective == "pairwise":
        source = PairRows(PairArrays(rng.standard_normal((9, d)), rng.standard_normal((9, d)), chunk_rows=4))
    else:
        X, y = tiny(7, n=14, d=d)
        source = ArrayRows(X, y, chunk_rows=4)
    rows = PreparedRows(source, cfg)
    XtX, H, Fty = rows.grams(with_H=True)
    assert rows.n_loss < rows.P * rows.d
    step = WoodburyUStep(rows, XtX, Fty, alpha)
    assert step.low_rank == (d == 30)
    R = rng.standard_normal((rows.P, rows.d))
    M = _dense_a_system(rows, XtX, H, alpha, rho)
    np.testing.assert_allclose(step.solve_a(R, rho).ravel(), np.linalg.solve(M, R.ravel()), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(step.a_matvec(R, rho).ravel(), M @ R.ravel(), rtol=1e-10, atol=1e-10)
    dense = StructuredUStep(XtX, H, Fty, rows.n_loss, alpha, np)
    b = rng.standard_normal((2, rows.P, rows.d))
    np.testing.assert_allclose(step.solve(b, rho), dense.solve(b, rho), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(step.full_matvec(b, rho), dense.full_matvec(b, rho), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(step.rhs_loss(rho), dense.rhs_loss(rho))


def test_auto_takes_woodbury_only_where_it_pays() -> None:
    """Defaults: few resident rows -> rows space, no Gram H; many rows -> the Pd factor; the two solvers give
    the same Phase I solution at default settings."""
    from coala_core.phase1.solver import Phase1Solver

    X, y = tiny(11, n=40, d=6)
    few = Phase1Solver(PreparedRows(ArrayRows(X, y), Phase1Config(n_patterns=8)), Phase1Config(n_patterns=8))
    assert few.ustep_kind == "woodbury" and few.H is None
    Xm, ym = tiny(11, n=200, d=3)
    many = Phase1Solver(PreparedRows(ArrayRows(Xm, ym), Phase1Config(n_patterns=4)), Phase1Config(n_patterns=4))
    assert many.ustep_kind == "dense" and many.H is not None
    dense_cfg = Phase1Config(n_patterns=8, ustep="dense")
    dense = Phase1Solver(PreparedRows(ArrayRows(X, y), dense_cfg), dense_cfg)
    (r_w, _), (r_d, _) = few.solve(0.01), dense.solve(0.01)
    assert r_w.converged and r_d.converged
    assert abs(r_w.objective - r_d.objective) <= 1e-4 * max(1.0, abs(r_d.objective))
    np.testing.assert_allclose(r_w.v, r_d.v, atol=2e-3)
