"""Polish: an exact solve of the cone program on the neurons ADMM has found (issue 10 item 6).

ADMM finds which neurons are nonzero long before it converges: on small problems it then spends thousands of
iterations drifting along nearly flat directions while the set of tight cone rows settles (measured in
``benchmarks/RESULTS.md``, "Phase I rho (issue 10 item 6, 2026-11-30)"). Like OSQP's polish, this module
takes the iterate's active neurons and solves the program on them exactly:

- active groups J: the neurons j = (v_i or w_i) with z_j != 0; the others stay 0;
- a feasible start: each z_j projected onto its cone {u: (2 D_i - I) X u >= 0} (one NNLS on the polar cone);
- a primal active-set method (Nocedal and Wright, ch. 16.5) on the smooth problem in u_J (every group
  nonzero, so ||u_j|| is smooth): the working set W_j of tight rows starts as the rows the projection made
  tight, most negative ADMM dual nu first, while they leave u_j a direction; each step is a damped Newton step
  in the null space of the working rows (u_j = N_j t_j, ||u_j|| = ||t_j||), cut at the first row it would
  cross, which then joins W_j; at the working set's optimum the row with the most negative multiplier leaves,
  and the method stops when none is negative. One row changes per step, so the working sets do not cycle;
- the KKT multipliers follow by NNLS per group: mu_j >= 0 on W_j with G_j' mu_j = g_j + beta u_j / ||u_j||
  (active), and for a zero group min ||G_j' mu - g_j|| over mu >= 0, xi_j = (G_j' mu_j - g_j) / beta;
- they map to ADMM's scaled duals (lam = beta xi / rho, nu = -mu / (alpha rho)), giving a full ADMM state at
  the candidate solution.

The candidate is never taken on trust: the caller runs one ADMM iteration from it and keeps it only when that
iteration meets the usual Boyd stopping rule (``admm.run_admm``); otherwise ADMM continues from its own
iterate. So polishing can end a solve early but never changes what "converged" means. Needs the rows
resident in this process and a small dense problem (``POLISH_MAX_ENTRIES``); otherwise it is skipped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from coala_core.phase1.source import to_numpy

#: largest n_loss x (active columns) design the polish forms densely (float64: 64 MiB)
POLISH_MAX_ENTRIES = 8_000_000
#: largest number of unknowns 2 P d: each Newton step solves a dense system of up to that size (512: ~2 ms)
POLISH_MAX_VARS = 512
#: most steps of the active-set method (each a Newton step or a change of one working row)
MAX_STEPS = 150


def polish_applies(rows: Any) -> bool:
    """Whether the polish can run on these rows: resident in this process, at most ``POLISH_MAX_VARS`` unknowns
    2 P d (so P = 10 neurons of d = 576 features never polish), and the design of all 2P groups within
    ``POLISH_MAX_ENTRIES``. Where it runs, a warm start (the next beta of a path) carries
    the primal iterate only and restarts the duals at 0: measured on the small problems of
    ``benchmarks/solver.py --rho-table``, warm duals delayed the polish (path iterations 76, 1176, 776, 776
    against 76, 176, 76, 76 with the duals restarted); without the polish warm duals help, so they are kept."""
    return (rows.remote is None and rows.resident and 2 * rows.P * rows.d <= POLISH_MAX_VARS
            and rows.n_loss * 2 * rows.P * rows.d <= POLISH_MAX_ENTRIES)


def _null_basis(M: np.ndarray, d: int) -> np.ndarray:
    """Orthonormal basis (d, r) of the null space of M (k, d)."""
    if M.shape[0] == 0:
        return np.eye(d)
    _, sv, Vt = np.linalg.svd(M, full_matrices=True)
    tol = max(M.shape) * np.finfo(np.float64).eps * (sv[0] if sv.size else 0.0)
    return Vt[int((sv > tol).sum()):].T


def _project(C: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Projection of z onto the cone {u: C u >= 0}: z + C' mu with mu = argmin_{mu >= 0} ||z + C' mu||."""
    from scipy.optimize import nnls

    mu, _ = nnls(C.T, -z, maxiter=50 * max(C.shape))
    return z + C.T @ mu


def _first_rows(C: np.ndarray, u: np.ndarray, nu_col: np.ndarray, d: int) -> list[int]:
    """The starting working set: rows tight at u (to rounding), most negative nu first, each kept while the
    kept rows have rank below d (so the neuron keeps a direction)."""
    slack = C @ u
    tight = np.flatnonzero(slack <= 1e-12 * max(1.0, float(np.abs(slack).max(initial=0.0))))
    tight = tight[np.argsort(nu_col[tight], kind="stable")]
    kept: list[int] = []
    for r in tight:
        if int(np.linalg.matrix_rank(C[[*kept, int(r)]])) < d:
            kept.append(int(r))
    return kept


class _Restricted:
    """The loss on the active groups: f(u) = ||sum_j B_j u_j - target||^2 / (2 n) + beta sum_j ||u_j||, with
    B_j (n_loss, d) the loss rows of group j (sign included)."""

    def __init__(self, B: list[np.ndarray], target: np.ndarray, beta: float, n_loss: int) -> None:
        self.B, self.target, self.beta, self.n = B, target, beta, n_loss

    def value(self, U: list[np.ndarray]) -> float:
        r = sum(Bj @ uj for Bj, uj in zip(self.B, U, strict=True)) - self.target
        return float(r @ r) / (2.0 * self.n) + self.beta * sum(float(np.linalg.norm(uj)) for uj in U)

    def line(self, U: list[np.ndarray], dU: list[np.ndarray]) -> Any:
        """h -> f(U + h dU), each evaluation O(n_loss + groups d) (the residual's two parts formed once)."""
        r = sum(Bj @ uj for Bj, uj in zip(self.B, U, strict=True)) - self.target
        rd = sum(Bj @ dj for Bj, dj in zip(self.B, dU, strict=True))
        Us, dUs = np.stack(U), np.stack(dU)

        def at(h: float) -> float:
            q = r + h * rd
            return float(q @ q) / (2.0 * self.n) + self.beta * float(np.linalg.norm(Us + h * dUs, axis=1).sum())

        return at

    def newton(self, U: list[np.ndarray], N: list[np.ndarray]) -> tuple[list[np.ndarray], float, list[np.ndarray]]:
        """Newton direction (in u) in the null spaces N_j, the decrement, and the full gradient per group."""
        r = sum(Bj @ uj for Bj, uj in zip(self.B, U, strict=True)) - self.target
        BN = [Bj @ Nj for Bj, Nj in zip(self.B, N, strict=True)]
        Phi = np.concatenate(BN, axis=1)
        Hm = Phi.T @ Phi / self.n
        grads = [Bj.T @ r / self.n + self.beta * uj / np.linalg.norm(uj) for Bj, uj in zip(self.B, U, strict=True)]
        gt = np.concatenate([Nj.T @ gj for Nj, gj in zip(N, grads, strict=True)])
        a = 0
        for Nj, uj in zip(N, U, strict=True):
            b = a + Nj.shape[1]
            tj = Nj.T @ uj
            nj = float(np.linalg.norm(uj))
            Hm[a:b, a:b] += (self.beta / nj) * (np.eye(b - a) - np.outer(tj, tj) / nj**2)
            a = b
        Hm += 1e-14 * max(float(np.trace(Hm)) / max(Hm.shape[0], 1), 1e-300) * np.eye(Hm.shape[0])
        step = np.linalg.solve(Hm, gt)
        out, a = [], 0
        for Nj in N:
            b = a + Nj.shape[1]
            out.append(-(Nj @ step[a:b]))
            a = b
        return out, float(gt @ step), grads


def _ratio_test(C: list[np.ndarray], W: list[list[int]], U: list[np.ndarray], dU: list[np.ndarray]
                ) -> tuple[float, tuple[int, int] | None]:
    """The largest step h <= 1 along dU that keeps the rows outside the working sets feasible, and the row that
    blocks it (group index, row) or None."""
    h_max, block = 1.0, None
    for j, (Cj, Wj) in enumerate(zip(C, W, strict=True)):
        slope = Cj @ dU[j]
        out = np.ones(Cj.shape[0], dtype=bool)
        out[Wj] = False
        hit = np.flatnonzero(out & (slope < 0))
        if hit.size:
            h = np.maximum(Cj[hit] @ U[j], 0.0) / -slope[hit]
            k = int(np.argmin(h))
            if h[k] < h_max:
                h_max, block = float(h[k]), (j, int(hit[k]))
    return h_max, block


def _active_set(C: list[np.ndarray], f: _Restricted, U: list[np.ndarray], W: list[list[int]], d: int,
                keep: list[tuple[int, int]]) -> list[np.ndarray] | None:
    """The primal active-set method from the feasible U with working sets W; a group whose working rows leave
    it no direction, or whose norm collapses, leaves (``C``, ``U``, ``W``, ``f.B`` and ``keep`` shrink in place)."""
    scale = max(1.0, max(float(np.abs(Bj.T @ f.target).max(initial=0.0)) / f.n for Bj in f.B))
    fx = f.value(U)
    cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}  # null bases by (group's matrix, working rows)

    def basis(Cj: np.ndarray, Wj: list[int]) -> np.ndarray:
        key = (id(Cj), tuple(sorted(Wj)))
        if key not in cache:
            cache[key] = _null_basis(Cj[Wj], d)
        return cache[key]

    for _ in range(MAX_STEPS):
        N = [basis(Cj, Wj) for Cj, Wj in zip(C, W, strict=True)]
        biggest = max(float(np.linalg.norm(uj)) for uj in U)
        gone = [j for j, (Nj, uj) in enumerate(zip(N, U, strict=True))
                if Nj.shape[1] == 0 or float(np.linalg.norm(uj)) <= 1e-9 * biggest]
        if gone:
            for j in reversed(gone):
                for lst in (C, U, W, f.B, keep):
                    lst.pop(j)
            if not U:
                return None
            fx = f.value(U)
            continue
        try:
            dU, dec, grads = f.newton(U, N)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(dec) or dec < 0:
            return None
        at_opt = dec <= 1e-18 * scale
        if not at_opt:
            h_max, block = _ratio_test(C, W, U, dU)
            h = h_max
            line = f.line(U, dU)
            while True:  # backtracking (Armijo) within the ratio test's step
                fc = line(h)
                if fc <= fx - 1e-4 * h * dec or h < 1e-12:
                    break
                h *= 0.5
            if h >= 1e-12 or block is not None:
                cand = [uj + h * dj for uj, dj in zip(U, dU, strict=True)]
                U, fx = cand, fc
                if block is not None and h == h_max:
                    W[block[0]].append(block[1])
                continue
            if dec > 1e-14 * scale:  # no descent although the decrement is not at rounding level
                return None
        # the working set's optimum: the row with the most negative multiplier leaves, or U is the solution
        worst, where = 0.0, None
        for j, (Cj, Wj) in enumerate(zip(C, W, strict=True)):
            if Wj:
                m = np.linalg.lstsq(Cj[Wj].T, grads[j], rcond=None)[0]
                k = int(np.argmin(m))
                if m[k] < worst:
                    worst, where = float(m[k]), (j, k)
        if where is None or worst >= -1e-10 * scale:
            return U
        W[where[0]].pop(where[1])
    return None


def polish_state(prob: Any, st: Any) -> Any | None:
    """A full ADMM state at the exact solution on the active groups of ``st`` (see the module docstring), or
    None when the polish does not apply (rows not resident, too large, the method did not finish)."""
    from scipy.optimize import nnls

    rows = prob.rows
    if rows.remote is not None or not rows.resident:
        return None
    xp, P, d = rows.xp, rows.P, rows.d
    z = to_numpy(st.z).astype(np.float64)
    norms = np.linalg.norm(z, axis=-1)  # (2, P)
    active = [(k, i) for k in range(2) for i in range(P) if norms[k, i] > 0.0]
    if not active or not polish_applies(rows):
        return None
    X = np.asarray(to_numpy(rows.X), dtype=np.float64)
    E = np.asarray(to_numpy(rows.E), dtype=np.float64)
    D = (E > 0).astype(np.float64)
    nu = np.asarray(to_numpy(st.nu), dtype=np.float64)
    beta, alpha, rho = float(prob.beta), float(prob.alpha), float(st.rho)
    if rows.pairwise:
        c_idx, r_idx = (np.asarray(to_numpy(a)) for a in rows.pairs)
        target = np.ones(c_idx.shape[0])
    else:
        target = np.asarray(to_numpy(rows.y), dtype=np.float64)

    def loss_rows(B: np.ndarray) -> np.ndarray:
        return B[c_idx] - B[r_idx] if rows.pairwise else B

    hint = st.polish_hint if isinstance(st.polish_hint, dict) else {}
    C, U, W, keep = [], [], [], []
    for k, i in active:
        Cj = E[:, i:i + 1] * X
        if (k, i) in hint:  # the last polish's solution for this neuron: feasible (the cones do not move with
            uj, Wj = hint[(k, i)]  # beta) with its working rows tight, so the method starts next to the optimum
            uj, Wj = uj.copy(), list(Wj)
        else:
            uj = _project(Cj, z[k, i])
            if float(np.linalg.norm(uj)) <= 1e-9 * float(norms.max()):
                continue  # projected to (nearly) zero: the neuron leaves
            Wj = _first_rows(Cj, uj, nu[:, k * P + i], d)
        C.append(Cj)
        U.append(uj)
        W.append(Wj)
        keep.append((k, i))
    if not keep:
        return None
    f = _Restricted([loss_rows((1.0 if k == 0 else -1.0) * D[:, i:i + 1] * X) for k, i in keep], target, beta,
                    rows.n_loss)
    sol = _active_set(C, f, U, W, d, keep)
    if sol is None:
        return None
    u = np.zeros((2, P, d))
    for (k, i), uj in zip(keep, sol, strict=True):
        u[k, i] = uj
    GU = np.concatenate([E * (X @ u[0].T), E * (X @ u[1].T)], axis=1)  # (n, 2P) cone rows G u (unscaled)
    r_loss = sum(Bj @ uj for Bj, uj in zip(f.B, sol, strict=True)) - target
    g = _loss_gradient(X, D, rows, r_loss)
    xi = np.zeros((2, P, d))
    mu = np.zeros((rows.n, 2 * P))
    working = {j: Wj for j, Wj in zip(keep, W, strict=True)}
    for k in range(2):
        for i in range(P):
            col = k * P + i
            Cfull = E[:, i:i + 1] * X
            if (k, i) in working:
                xi[k, i] = u[k, i] / float(np.linalg.norm(u[k, i]))
                idx = np.asarray(working[(k, i)], dtype=np.int64)
                if idx.size:
                    m, _ = nnls(Cfull[idx].T, g[k, i] + beta * xi[k, i], maxiter=50 * max(idx.size, d))
                    mu[idx, col] = m
            else:
                m, _ = nnls(Cfull.T, g[k, i], maxiter=50 * max(rows.n, d))
                mu[:, col] = m
                v = (Cfull.T @ m - g[k, i]) / beta
                nv = float(np.linalg.norm(v))
                xi[k, i] = v if nv <= 1.0 else v / nv
    lam = beta * xi / rho
    nu_new = -mu / (alpha * rho)
    s_new = np.where(mu > 0, 0.0, np.maximum(alpha * GU, 0.0))
    Wsn = s_new - nu_new
    acc = np.stack([(X.T @ (E * Wsn[:, :P])).T, (X.T @ (E * Wsn[:, P:])).T]) * alpha  # alpha G'(s - nu)
    u_x = xp.asarray(u)
    new_hint = {j: (uj.copy(), list(Wj)) for j, uj, Wj in zip(keep, sol, W, strict=True)}
    return replace(st, u=u_x, z=u_x.copy(), lam=xp.asarray(lam), s=xp.asarray(s_new, dtype=rows.dtype),
                   nu=xp.asarray(nu_new, dtype=rows.dtype), GtSnu=xp.asarray(acc), polish_hint=new_hint)


def _loss_gradient(X: np.ndarray, D: np.ndarray, rows: Any, r_loss: np.ndarray) -> np.ndarray:
    """g (2, P, d): the gradient of the loss at the residual ``r_loss`` of the loss rows (+ for v, - for w)."""
    if rows.pairwise:
        c_idx, r_idx = (np.asarray(to_numpy(a)) for a in rows.pairs)
        r = np.zeros(rows.n)
        np.add.at(r, c_idx, r_loss)
        np.add.at(r, r_idx, -r_loss)
    else:
        r = r_loss
    base = X.T @ (D * r[:, None]) / rows.n_loss  # (d, P)
    return np.stack([base.T, -base.T])
