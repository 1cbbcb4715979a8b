"""``cronos`` mode: the authors' u-step, CG on the full u-system with a rank-r Nystrom preconditioner.

The operator  M u = u + F'F u/(n rho) + alpha^2 G'G u  (u (2, P, d)) is applied by streaming X (one read
per matvec, the way CRONOS does it, without the Kronecker structure). The Nystrom sketch of
A = F'F/(n rho) + alpha^2 G'G (Frangella, Tropp and Udell 2023) uses r Gaussian probes (one read), and CG runs
at most ``cg_max_iter`` iterations to relative tolerance ``cg_tol``, warm-started from the previous u.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coala_core.phase1.data import PreparedRows
from coala_core.phase1.linalg import pcg


def data_matvec(rows: PreparedRows, U: Any, rho: float, alpha: float) -> Any:
    """A U for a batch U (r, 2, P, d): F'F U/(n rho) + alpha^2 G'G U, in one read of X."""
    xp, P, d = rows.xp, rows.P, rows.d
    r = U.shape[0]
    # columns: for each probe j, [v_1..v_P, w_1..w_P]
    cols = U.reshape(r * 2 * P, d).T.astype(rows.dtype)  # (d, 2Pr)
    out = xp.zeros((d, r * 2 * P), dtype=xp.float64)
    for start, stop, Xb in rows.blocks():
        Db = (rows.E[start:stop] > 0).astype(rows.dtype)
        Q = (Xb @ cols).reshape(Xb.shape[0], r, 2, P)
        Fu = (Db[:, None, :] * (Q[:, :, 0, :] - Q[:, :, 1, :])).sum(axis=2)  # (m, r)
        DF = Db[:, None, :] * Fu[:, :, None]  # (m, r, P)
        back = xp.stack([DF, -DF], axis=2) / (rows.n * rho) + alpha**2 * Q  # (m, r, 2, P)
        out += (Xb.T @ back.reshape(Xb.shape[0], r * 2 * P)).astype(xp.float64)
    return out.T.reshape(r, 2, P, d)


class NystromCGUStep:
    """u-step by Nystrom-preconditioned CG (the authors' solver); ``solve(b, rho, u0)`` like the exact one."""

    def __init__(self, rows: PreparedRows, Fty: Any, alpha: float, rank: int, cg_max_iter: int, cg_tol: float,
                 seed: int) -> None:
        self.rows, self.alpha = rows, alpha
        self.xp = rows.xp
        self.Fty = self.xp.asarray(Fty, dtype=self.xp.float64)
        self.rank, self.cg_max_iter, self.cg_tol = rank, cg_max_iter, cg_tol
        self.rng = np.random.default_rng(seed + 7919)
        self._cache: dict[float, tuple[Any, Any, float]] = {}
        self.cg_iters = 0
        self.matvecs = 0

    def _sketch(self, rho: float) -> tuple[Any, Any, float]:
        key = float(rho)
        if key in self._cache:
            return self._cache[key]
        xp, rows = self.xp, self.rows
        N = 2 * rows.P * rows.d
        r = min(self.rank, N)
        Omega = xp.asarray(self.rng.standard_normal((N, r)))
        Omega, _ = xp.linalg.qr(Omega)
        Y = data_matvec(rows, Omega.T.reshape(r, 2, rows.P, rows.d), rho, self.alpha).reshape(r, N).T
        self.matvecs += 1
        shift = float(np.finfo(np.float64).eps * xp.linalg.norm(Y))
        Y = Y + shift * Omega
        C = xp.linalg.cholesky(Omega.T @ Y)
        B = xp.linalg.solve(C, Y.T).T  # Y C^{-T}
        Uh, S, _ = xp.linalg.svd(B, full_matrices=False)
        lam = xp.maximum(S**2 - shift, 0.0)
        self._cache = {key: (Uh, lam, float(lam[-1]))}
        return self._cache[key]

    def solve(self, b: Any, rho: float, u0: Any | None = None) -> Any:
        xp, rows = self.xp, self.rows
        U, lam, lam_r = self._sketch(rho)
        shape = (2, rows.P, rows.d)
        mu = 1.0  # the identity term of the u-system

        def matvec(x: Any) -> Any:
            self.matvecs += 1
            return x + data_matvec(rows, x.reshape(1, *shape), rho, self.alpha).reshape(-1)

        def precond(r: Any) -> Any:
            Ur = U.T @ r
            return (lam_r + mu) * (U @ (Ur / (lam + mu))) + (r - U @ Ur)

        x0 = u0.reshape(-1) if u0 is not None else xp.zeros(int(np.prod(shape)))
        x, it, _ = pcg(matvec, b.reshape(-1), precond, x0, self.cg_tol, self.cg_max_iter)
        self.cg_iters += it
        return x.reshape(shape)

    def rhs_loss(self, rho: float) -> Any:
        return self.xp.stack([self.Fty, -self.Fty]) / (self.rows.n * rho)
