"""Tiny Phase I instances and the CVXPY/Clarabel oracle (imported by the phase1 tests)."""

from __future__ import annotations

import numpy as np
import pytest


def tiny(seed: int = 0, n: int = 30, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rows X (n, d) float32-representable and labels y in {+1, -1} with some signal."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32).astype(np.float64)
    w = rng.standard_normal(d)
    y = np.where(np.maximum(X @ w, 0) - 0.5 * np.maximum(-X @ w, 0) + 0.3 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


def cvxpy_oracle(Xs: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float, program: str) -> float:
    """Optimal value of the 1/n-scaled program on standardised rows Xs with patterns from ``gates``."""
    cp = pytest.importorskip("cvxpy")
    n, d = Xs.shape
    P = gates.shape[1]
    D = (Xs @ gates >= 0).astype(float)
    V = cp.Variable((P, d))
    W = cp.Variable((P, d))
    if program == "relu":
        pred = sum(cp.multiply(D[:, i], Xs @ (V[i] - W[i])) for i in range(P))
        pen = sum(cp.norm(V[i]) + cp.norm(W[i]) for i in range(P))
        cons = []
        for i in range(P):
            S = 2 * D[:, i] - 1
            cons += [cp.multiply(S, Xs @ V[i]) >= 0, cp.multiply(S, Xs @ W[i]) >= 0]
    else:
        pred = sum(cp.multiply(D[:, i], Xs @ V[i]) for i in range(P))
        pen = sum(cp.norm(V[i]) for i in range(P))
        cons = []
    prob = cp.Problem(cp.Minimize(cp.sum_squares(pred - y) / (2 * n) + beta * pen), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return float(prob.value)


def cvxpy_solution(Xs: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(V, W) (P, d) solving the 1/n-scaled cone program by CVXPY/Clarabel at its default tolerances."""
    cp = pytest.importorskip("cvxpy")
    n, d = Xs.shape
    P = gates.shape[1]
    D = (Xs @ gates >= 0).astype(float)
    V, W = cp.Variable((P, d)), cp.Variable((P, d))
    pred = sum(cp.multiply(D[:, i], Xs @ (V[i] - W[i])) for i in range(P))
    cons = []
    for i in range(P):
        S = 2 * D[:, i] - 1
        cons += [cp.multiply(S, Xs @ V[i]) >= 0, cp.multiply(S, Xs @ W[i]) >= 0]
    pen = sum(cp.norm(V[i]) + cp.norm(W[i]) for i in range(P))
    cp.Problem(cp.Minimize(cp.sum_squares(pred - y) / (2 * n) + beta * pen), cons).solve(solver=cp.CLARABEL)
    return np.asarray(V.value), np.asarray(W.value)


def pairwise_oracle(Xc: np.ndarray, Xr: np.ndarray, gates: np.ndarray, beta: float) -> float:
    """Optimal value of the pairwise program (1/(2k)) ||sum_i (D_i(Xc) Xc - D_i(Xr) Xr)(v_i - w_i) - 1||^2
    + beta sum_i (||v_i|| + ||w_i||) with the cone constraints on chosen and rejected rows (k pairs)."""
    cp = pytest.importorskip("cvxpy")
    k, d = Xc.shape
    P = gates.shape[1]
    Dc, Dr = (Xc @ gates >= 0).astype(float), (Xr @ gates >= 0).astype(float)
    V, W = cp.Variable((P, d)), cp.Variable((P, d))
    margin = sum(cp.multiply(Dc[:, i], Xc @ (V[i] - W[i])) - cp.multiply(Dr[:, i], Xr @ (V[i] - W[i]))
                 for i in range(P))
    cons = []
    for X, D in ((Xc, Dc), (Xr, Dr)):
        for i in range(P):
            S = 2 * D[:, i] - 1
            cons += [cp.multiply(S, X @ V[i]) >= 0, cp.multiply(S, X @ W[i]) >= 0]
    pen = sum(cp.norm(V[i]) + cp.norm(W[i]) for i in range(P))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(margin - 1) / (2 * k) + beta * pen), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return float(prob.value)


def standardized(X: np.ndarray, result) -> np.ndarray:  # noqa: ANN001
    Xs = (X.astype(np.float64) - result.mean) / result.scale
    if result.bias:
        Xs = np.concatenate([Xs, np.ones((Xs.shape[0], 1))], axis=1)
    return Xs


def cuda_available() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False
