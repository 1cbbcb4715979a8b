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
