"""Gated ReLU program by accelerated proximal gradient (FISTA with adaptive restart).

    min_a  (1/(2n)) || sum_i D_i X a_i - y ||^2 + beta * sum_i ||a_i||_2,     a (P, d)

The smooth part is quadratic, so its gradient (H a - F'y)/n needs only the Gram H (Pd, Pd) when it is held;
otherwise each gradient is one streamed pass (forward and transpose on the same block). Step 1/L with
L = lambda_max(H)/n. Stops when the prox-gradient step ||a+ - y|| * L <= tol * max(1, ||F'y||/n).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from coala_core.phase1.data import PreparedRows
from coala_core.phase1.programs import group_soft_threshold


def _grad_from_data(rows: PreparedRows, Fty: Any) -> Callable[[Any], Any]:
    xp = rows.xp

    def grad(a: Any) -> Any:
        A = a.T.astype(rows.dtype)  # (d, P)
        out = xp.zeros((rows.P, rows.d), dtype=xp.float64)
        for start, stop, Xb in rows.blocks():
            Db = (rows.E[start:stop] > 0).astype(rows.dtype)
            pred = (Db * (Xb @ A)).sum(axis=1)
            out += ((Db * (pred - rows.y[start:stop])[:, None]).T @ Xb).astype(xp.float64)
        return out / rows.n_loss

    return grad


def _lipschitz(rows: PreparedRows, H: Any, grad0: Callable[[Any], Any], Fty: Any, seed: int) -> float:
    xp = rows.xp
    if H is not None and H.shape[0] <= 4096:
        return float(xp.linalg.eigvalsh(xp.asarray(H))[-1]) / rows.n_loss
    x = xp.asarray(np.random.default_rng(seed).standard_normal((rows.P, rows.d)))
    x /= xp.linalg.norm(x)
    g0 = grad0(xp.zeros_like(x))
    lam = 0.0
    for _ in range(50):
        y = grad0(x) - g0
        lam_new = float(xp.linalg.norm(y))
        x = y / max(lam_new, 1e-300)
        if abs(lam_new - lam) <= 1e-4 * lam_new:
            break
        lam = lam_new
    return 1.05 * lam_new


def solve_gated(rows: PreparedRows, H: Any, Fty: Any, beta: float, tol: float, max_iter: int,
                a0: Any | None = None, seed: int = 0) -> tuple[Any, bool, dict[str, list[float]]]:
    """FISTA with gradient-based restart; returns a (P, d), converged flag, history."""
    xp = rows.xp
    b = xp.asarray(Fty, dtype=xp.float64)
    grad: Callable[[Any], Any]
    if H is not None:
        Hx = xp.asarray(H, dtype=xp.float64)

        def grad_from_gram(a: Any) -> Any:
            return ((Hx @ a.reshape(-1)).reshape(rows.P, rows.d) - b) / rows.n_loss

        grad = grad_from_gram
    else:
        grad = _grad_from_data(rows, Fty)
    L = _lipschitz(rows, H, grad, Fty, seed)
    a = xp.zeros((rows.P, rows.d)) if a0 is None else xp.asarray(a0, dtype=xp.float64)
    yk, t = a.copy(), 1.0
    scale = max(1.0, float(xp.linalg.norm(b)) / rows.n_loss)
    hist: dict[str, list[float]] = {"step": [], "seconds": []}
    t0, converged = time.perf_counter(), False
    for _ in range(max_iter):
        a_new = group_soft_threshold(yk - grad(yk) / L, beta / L)
        step = float(xp.linalg.norm(a_new - yk)) * L
        hist["step"].append(step)
        hist["seconds"].append(time.perf_counter() - t0)
        if step <= tol * scale:
            a, converged = a_new, True
            break
        if float(xp.sum((yk - a_new) * (a_new - a))) > 0:  # restart (O'Donoghue and Candes 2015)
            t = 1.0
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        yk = a_new + ((t - 1.0) / t_new) * (a_new - a)
        a, t = a_new, t_new
    return a, converged, hist
