"""The exact structured u-step of ADMM (method.md section 4) and small dense linear algebra helpers.

The u-system is  (I + F'F/(n rho) + alpha^2 G'G) u = b,  u = (v_1..v_P, w_1..w_P), each block of size d.
Because (2 D_i - I)^2 = I, G'G = I_2P (x) X'X, and in a = v - w, c = v + w it splits exactly into

    (I + alpha^2 X'X) c_i = (b_v + b_w)_i                         (P right-hand sides, one d x d factor)
    (I + alpha^2 I_P (x) X'X + (2/(n rho)) H) a = b_v - b_w       (H_ij = X' D_i D_j X, size dP)

The c-factor never changes; the a-factor is built once per rho and cached. When dP exceeds
``factor_max_dim`` the a-system is solved by CG with the block-diagonal preconditioner
(I + alpha^2 X'X + (2/(n rho)) H_ii)^-1, warm-started from the previous a. Arrays: b, u are (2, P, d).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np


class Cholesky:
    """Cholesky factor of a symmetric positive definite float64 matrix on numpy or cupy."""

    def __init__(self, A: Any, xp: ModuleType) -> None:
        self.xp = xp
        if xp is np:
            import scipy.linalg as sla

            self._f = sla.cho_factor(np.asarray(A, dtype=np.float64), lower=True, check_finite=False)
            self._solve = lambda B: sla.cho_solve(self._f, B, check_finite=False)
        else:
            from cupyx.scipy.linalg import solve_triangular

            L = xp.linalg.cholesky(xp.asarray(A, dtype=xp.float64))

            def solve(B: Any) -> Any:
                t = solve_triangular(L, B, lower=True)
                return solve_triangular(L, t, lower=True, trans="T")

            self._solve = solve

    def solve(self, B: Any) -> Any:
        return self._solve(B)


def pcg(matvec: Callable[[Any], Any], b: Any, precond: Callable[[Any], Any], x0: Any, tol: float,
        max_iter: int) -> tuple[Any, int, float]:
    """Preconditioned conjugate gradients for SPD ``matvec``; stops at ||r|| <= tol * ||b||.

    Returns (x, iterations, relative residual)."""
    xp = np if isinstance(b, np.ndarray) else __import__("cupy")
    x = x0.copy()
    r = b - matvec(x)
    bnorm = float(xp.linalg.norm(b)) or 1.0
    rel = float(xp.linalg.norm(r)) / bnorm
    if rel <= tol:
        return x, 0, rel
    zv = precond(r)
    p = zv.copy()
    rz = float(xp.vdot(r, zv))
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (returned)
        Ap = matvec(p)
        alpha = rz / float(xp.vdot(p, Ap))
        x = x + alpha * p
        r = r - alpha * Ap
        rel = float(xp.linalg.norm(r)) / bnorm
        if rel <= tol:
            break
        zv = precond(r)
        rz_new = float(xp.vdot(r, zv))
        p = zv + (rz_new / rz) * p
        rz = rz_new
    return x, it, rel


class StructuredUStep:
    """Exact u-step from ``XtX`` (d, d), ``H`` (Pd, Pd) or None, ``Fty`` (P, d); loss scaled by 1/n.

    ``solve(b, rho, u0)`` returns u (2, P, d) solving the u-system for right-hand side b (2, P, d).
    """

    def __init__(self, XtX: Any, H: Any, Fty: Any, n: int, alpha: float, xp: ModuleType,
                 factor_max_dim: int = 8192, pcg_tol: float = 1e-10, pcg_max_iter: int = 200) -> None:
        self.xp, self.n, self.alpha = xp, n, alpha
        self.P, self.d = int(Fty.shape[0]), int(Fty.shape[1])
        self.XtX = xp.asarray(XtX, dtype=xp.float64)
        self.H = None if H is None else xp.asarray(H, dtype=xp.float64)
        self.Fty = xp.asarray(Fty, dtype=xp.float64)
        self.factor_max_dim = factor_max_dim
        self.pcg_tol, self.pcg_max_iter = pcg_tol, pcg_max_iter
        eye = xp.eye(self.d)
        self.c_factor = Cholesky(eye + alpha**2 * self.XtX, xp)
        self._a_cache: dict[float, Any] = {}
        self.cg_iters = 0

    @property
    def exact_factor(self) -> bool:
        return self.P * self.d <= self.factor_max_dim and self.H is not None

    def _a_matrix(self, rho: float) -> Any:
        xp, P, d = self.xp, self.P, self.d
        if self.H is None:
            raise ValueError("the exact u-step factor needs the Gram H (built when solver == 'admm')")
        M = (2.0 / (self.n * rho)) * self.H
        blk = xp.eye(d) + self.alpha**2 * self.XtX
        for i in range(P):
            M[i * d:(i + 1) * d, i * d:(i + 1) * d] += blk
        return M

    def _a_solver(self, rho: float) -> Any:
        key = float(rho)
        if key not in self._a_cache:
            if len(self._a_cache) > 4:
                self._a_cache.pop(next(iter(self._a_cache)))
            if self.exact_factor:
                self._a_cache[key] = Cholesky(self._a_matrix(rho), self.xp)
            else:
                self._a_cache[key] = self._block_preconditioner(rho)
        return self._a_cache[key]

    def _block_preconditioner(self, rho: float) -> list[Cholesky]:
        xp, d = self.xp, self.d
        out = []
        for i in range(self.P):
            Hii = self.H[i * d:(i + 1) * d, i * d:(i + 1) * d] if self.H is not None else None
            if Hii is None:
                raise ValueError("block preconditioner needs the diagonal blocks of H")
            out.append(Cholesky(xp.eye(d) + self.alpha**2 * self.XtX + (2.0 / (self.n * rho)) * Hii, xp))
        return out

    def a_matvec(self, a: Any, rho: float) -> Any:
        """(I + alpha^2 I (x) X'X + (2/(n rho)) H) a for a (P, d)."""
        flat = a.reshape(-1)
        out = flat + (2.0 / (self.n * rho)) * (self.H @ flat)
        out = out.reshape(self.P, self.d) + self.alpha**2 * (a @ self.XtX)
        return out

    def solve(self, b: Any, rho: float, u0: Any | None = None) -> Any:
        xp = self.xp
        bv, bw = b[0], b[1]
        c = self.c_factor.solve((bv + bw).T).T
        rhs_a = bv - bw
        solver = self._a_solver(rho)
        if isinstance(solver, Cholesky):
            a = solver.solve(rhs_a.reshape(-1)).reshape(self.P, self.d)
        else:
            blocks = solver

            def precond(r: Any) -> Any:
                R = r.reshape(self.P, self.d)
                return xp.stack([blocks[i].solve(R[i]) for i in range(self.P)]).reshape(-1)

            x0 = (u0[0] - u0[1]).reshape(-1) if u0 is not None else xp.zeros(self.P * self.d)
            flat, it, _ = pcg(lambda x: self.a_matvec(x.reshape(self.P, self.d), rho).reshape(-1),
                              rhs_a.reshape(-1), precond, x0, self.pcg_tol, self.pcg_max_iter)
            self.cg_iters += it
            a = flat.reshape(self.P, self.d)
        return xp.stack([(c + a) / 2.0, (c - a) / 2.0])

    def full_matvec(self, u: Any, rho: float) -> Any:
        """(I + F'F/(n rho) + alpha^2 G'G) u from the Gram matrices (used to verify the split)."""
        a = u[0] - u[1]
        Ha = (self.H @ a.reshape(-1)).reshape(self.P, self.d) / (self.n * rho)
        GG = self.alpha**2 * (u @ self.XtX)
        return u + GG + self.xp.stack([Ha, -Ha])

    def rhs_loss(self, rho: float) -> Any:
        """F'y/(n rho) in (2, P, d) layout: +X'D_i y for v_i, -X'D_i y for w_i."""
        return self.xp.stack([self.Fty, -self.Fty]) / (self.n * rho)


class WoodburyUStep:
    """The same exact u-step, solved in the space of the loss rows when they are fewer than P d.

    With B = I_P (x) K, K = I + alpha^2 X'X, and c = 2 / (n rho), the a-system matrix is B + c F'F. By the
    Woodbury identity

        (B + c F'F)^-1 = B^-1 - B^-1 F' (I / c + F B^-1 F')^-1 F B^-1,

    and F B^-1 F' = A (S o D D') A' with S = X K^-1 X' (rows x rows), D the 0/1 patterns and A the identity
    (pointwise) or the chosen-minus-rejected selector (pairwise). That n_loss x n_loss matrix does not depend on
    rho: one eigendecomposition serves every rho of a path, and the (Pd)^2 Gram H is never formed. K is
    well conditioned (eigenvalues in [1, 1 + alpha^2 ||X||^2]), so K^-1 and X K^-1 are formed once and every
    solve is matrix products: O(n d P + n^2 + d^2 P) against O((Pd)^2) for :class:`StructuredUStep`, whose
    set-up costs n (Pd)^2 for H and (Pd)^3 per rho. Needs the rows resident (``rows.X``).
    """

    exact_factor = True

    def __init__(self, rows: Any, XtX: Any, Fty: Any, alpha: float) -> None:
        xp = rows.xp
        self.xp, self.n, self.alpha = xp, int(rows.n_loss), alpha
        self.P, self.d = int(Fty.shape[0]), int(Fty.shape[1])
        self.Fty = xp.asarray(Fty, dtype=xp.float64)
        self.XtX = xp.asarray(XtX, dtype=xp.float64)
        X = xp.asarray(rows.X, dtype=xp.float64)
        self.X = X
        self.D = (rows.E > 0).astype(xp.float64)
        self.pairs = rows.pairs if rows.pairwise else None
        m = int(X.shape[0])
        #: with fewer rows than features, K^-1 = I - alpha^2 X' (I + alpha^2 X X')^-1 X is applied in row space
        self.low_rank = m < self.d
        if self.low_rank:
            Minv = Cholesky(xp.eye(m) + alpha**2 * (X @ X.T), xp).solve(xp.eye(m))
            self.Minv = (Minv + Minv.T) / 2.0
            self.XK = self.Minv @ X  # X K^-1 = (I + alpha^2 X X')^-1 X  (m, d)
        else:
            Kinv = Cholesky(xp.eye(self.d) + alpha**2 * self.XtX, xp).solve(xp.eye(self.d))
            self.Kinv = (Kinv + Kinv.T) / 2.0
            self.XK = X @ self.Kinv  # X K^-1 (n, d)
        G = (self.XK @ X.T) * (self.D @ self.D.T)  # S o D D'
        if self.pairs is not None:
            c, r = self.pairs
            G = G[c][:, c] - G[c][:, r] - G[r][:, c] + G[r][:, r]
        G = (G + G.T) / 2.0
        lam, self.V = xp.linalg.eigh(G)
        self.lam = xp.maximum(lam, 0.0)  # PSD up to rounding
        self.cg_iters = 0

    def _kinv(self, R: Any) -> Any:
        """R K^-1 for R (k, d)."""
        if self.low_rank:
            return R - self.alpha**2 * ((R @ self.X.T) @ self.XK)
        return R @ self.Kinv

    def _rows(self, f: Any) -> Any:
        """A f: per-row values to per-loss-row values (chosen minus rejected when pairwise)."""
        if self.pairs is None:
            return f
        c, r = self.pairs
        return f[c] - f[r]

    def _rows_t(self, s: Any) -> Any:
        """A' s: per-loss-row values back to rows."""
        if self.pairs is None:
            return s
        c, r = self.pairs
        g = self.xp.zeros(self.X.shape[0], dtype=self.xp.float64)
        g[c] += s
        g[r] -= s
        return g

    def _FtF(self, a: Any) -> Any:
        """F'F a for a (P, d), from the rows (H is never formed)."""
        f = self._rows_t(self._rows((self.D * (self.X @ a.T)).sum(axis=1)))
        return (self.D * f[:, None]).T @ self.X

    def solve_a(self, R: Any, rho: float, RK: Any = None) -> Any:
        """a = (B + c F'F)^-1 R for R (P, d) (``RK`` = R K^-1 when already known)."""
        c = 2.0 / (self.n * rho)
        t = self.V.T @ self._rows((self.D * (self.XK @ R.T)).sum(axis=1))  # V' F B^-1 R
        s = self._rows_t(self.V @ (t / (1.0 / c + self.lam)))
        return (self._kinv(R) if RK is None else RK) - (self.D * s[:, None]).T @ self.XK

    def a_matvec(self, a: Any, rho: float) -> Any:
        """(B + c F'F) a for a (P, d), without H."""
        return a + self.alpha**2 * (a @ self.XtX) + (2.0 / (self.n * rho)) * self._FtF(a)

    def solve(self, b: Any, rho: float, u0: Any | None = None) -> Any:
        xp = self.xp
        bv, bw = b[0], b[1]
        both = self._kinv(xp.concatenate([bv + bw, bv - bw]))  # one K^-1 product for c and a
        c = both[:self.P]
        a = self.solve_a(bv - bw, rho, RK=both[self.P:])
        return xp.stack([(c + a) / 2.0, (c - a) / 2.0])

    def full_matvec(self, u: Any, rho: float) -> Any:
        """(I + F'F/(n rho) + alpha^2 G'G) u (used to verify the split)."""
        Fa = self._FtF(u[0] - u[1]) / (self.n * rho)
        return u + self.alpha**2 * (u @ self.XtX) + self.xp.stack([Fa, -Fa])

    def rhs_loss(self, rho: float) -> Any:
        return self.xp.stack([self.Fty, -self.Fty]) / (self.n * rho)


def woodbury_pays(n_rows: int, n_loss: int, P: int, d: int, resident: bool, memory_budget_mb: float) -> bool:
    """Whether :class:`WoodburyUStep` is cheaper than the Pd-space factor: rows resident, fewer loss rows than
    P d, and the rows x rows matrices (about three of them, float64) within the memory budget."""
    return resident and n_loss < P * d and 3 * n_rows * n_rows * 8 <= max(memory_budget_mb, 64.0) * 2**20
