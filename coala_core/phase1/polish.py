"""Polish: an exact solve of the cone program on the neurons ADMM has found (issue 10 item 6).

ADMM finds which neurons are nonzero long before it converges: on small problems it then spends thousands of
iterations drifting along nearly flat directions while the set of tight cone rows settles (measured in
``benchmarks/RESULTS.md``, "Phase I rho (issue 10 item 6, 2026-11-30)"). Like OSQP's polish, this module
takes the iterate's active neurons and solves the program on them exactly:

- active groups J: the neurons j = (v_i or w_i) with z_j != 0 (on a warm start, the last polish's neurons,
  ``ADMMState.polish_hint``); the others stay 0;
- a feasible start: each z_j projected onto its cone {u: (2 D_i - I) X u >= 0} (one NNLS on the polar cone), or
  on a warm start the last polish's solution, which is feasible because the cones do not depend on beta;
- a primal active-set method (Nocedal and Wright, ch. 16.5) on the smooth problem in u_J (every group
  nonzero, so ||u_j|| is smooth): the working set W_j of tight rows starts as the rows the projection made
  tight, most negative ADMM dual nu first, while they leave u_j a direction (or the last polish's W_j); each
  step is a damped Newton step in the null space of the working rows (u_j = N_j t_j, ||u_j|| = ||t_j||; one
  Gram matrix of all groups, formed once), cut at the first row it would cross, which then joins W_j; near
  the working set's optimum each group's row with the most negative multiplier leaves, and the method stops
  when no multiplier is negative. Groups are separate constraints, so one row per group and step keeps the
  descent property of the one-row method;
- zero neurons: one whose optimality condition fails (||P_K(-g_j)|| > beta, with P_K(-g_j) = G_j' mu - g_j
  and mu = argmin_{mu >= 0} ||G_j' mu - g_j||) joins at its own optimal step along P_K(-g_j) (divided by the
  number joining, which by convexity still lowers the objective), and the active-set method continues; so a
  neuron the ADMM iterate has not found yet does not spoil the candidate. A cheaper certificate is tried
  first: any mu >= 0 with ||G_j' mu - g_j|| <= beta (0, or least squares on the last polish's support);
- the KKT multipliers: on W_j the active-set method's own least-squares multipliers, and for a zero group
  the certificate, xi_j = (G_j' mu_j - g_j) / beta;
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
#: a working row may leave once the Newton decrement is below this (relative to the gradient's scale) and its
#: multiplier estimate is below -DROP_MARGIN: the last Newton steps to rounding level are spent only on the
#: final working set (measured on ``benchmarks/solver.py --path-table``: a third of the steps were those)
DROP_DECREMENT = 1e-9
DROP_MARGIN = 1e-6
#: most rounds of adding zero neurons whose optimality condition fails (each round adds every such neuron)
MAX_GROUP_ROUNDS = 8
#: a zero neuron violates its optimality condition when ||P_K(-g)|| > (1 + this) beta
GROUP_ADD_MARGIN = 1e-6


def polish_applies(rows: Any) -> bool:
    """Whether the polish can run on these rows: resident in this process, at most ``POLISH_MAX_VARS`` unknowns
    2 P d (so P = 10 neurons of d = 576 features never polish), and the design of all 2P groups within
    ``POLISH_MAX_ENTRIES``. Where it runs, a warm start (the next beta of a path) carries
    the primal iterate only and restarts the duals at 0: measured on the small problems of
    ``benchmarks/solver.py --rho-table``, warm duals delayed the polish (path iterations 76, 1176, 776, 776
    against 76, 176, 76, 76 with the duals restarted); without the polish warm duals help, so they are kept."""
    return (rows.remote is None and rows.resident and 2 * rows.P * rows.d <= POLISH_MAX_VARS
            and rows.n_loss * 2 * rows.P * rows.d <= POLISH_MAX_ENTRIES)


def _null_basis(M: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis (d, r) of the null space of M (k, d), and the pseudo-inverse (k, d) of M' (least-squares
    multipliers m = pinv(M') g), both from one SVD."""
    if M.shape[0] == 0:
        return np.eye(d), np.zeros((0, d))
    Uo, sv, Vt = np.linalg.svd(M, full_matrices=True)
    tol = max(M.shape) * np.finfo(np.float64).eps * (sv[0] if sv.size else 0.0)
    r = int((sv > tol).sum())
    return Vt[r:].T, (Uo[:, :r] / sv[:r]) @ Vt[:r]


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


class _Groups:
    """The neurons the polish works on (groups j = (v_i or w_i)): cone rows C_j (n, d) (the neuron is feasible
    when C_j u_j >= 0), loss rows B_j (n_loss, d) (sign included), working rows W_j and keys (k, i). The loss on
    them is f(U) = ||sum_j B_j u_j - target||^2 / (2 n_loss) + beta sum_j ||u_j||; its stacked forms (C as
    (J, n, d), B as (n_loss, J d) and the Gram matrix B'B / n_loss) are built once per set of groups, so a step
    of the active-set method costs a few dense products whatever the number of groups."""

    def __init__(self, target: np.ndarray, beta: float, n_loss: int, d: int) -> None:
        self.target, self.beta, self.n, self.d = target, beta, n_loss, d
        self.C: list[np.ndarray] = []
        self.B: list[np.ndarray] = []
        self.W: list[list[int]] = []
        self.keys: list[tuple[int, int]] = []
        self._bases: list[tuple[np.ndarray, np.ndarray] | None] = []  # per group, for its current working rows
        self._stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._free: np.ndarray | None = None  # (J, n): rows outside the working sets

    def add(self, key: tuple[int, int], Cj: np.ndarray, Bj: np.ndarray, Wj: list[int]) -> None:
        self.C.append(Cj)
        self.B.append(Bj)
        self.W.append(Wj)
        self.keys.append(key)
        self._bases.append(None)
        self._stacked = self._free = None

    def remove(self, j: int) -> None:
        for lst in (self.C, self.B, self.W, self.keys, self._bases):
            lst.pop(j)
        self._stacked = self._free = None

    def add_row(self, j: int, row: int) -> None:
        self.W[j].append(row)
        self._bases[j] = None
        if self._free is not None:
            self._free[j, row] = False

    def drop_rows(self, where: list[tuple[int, int]]) -> None:
        """The rows ``where`` (group index, position in W_j; at most one per group) leave their working sets."""
        for j, k in where:
            row = self.W[j].pop(k)
            self._bases[j] = None
            if self._free is not None:
                self._free[j, row] = True

    def basis(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Null basis of group j's working rows and the pseudo-inverse of their transpose (``_null_basis``)."""
        b = self._bases[j]
        if b is None:
            b = self._bases[j] = _null_basis(self.C[j][self.W[j]], self.d)
        return b

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._stacked is None:
            Bs = np.concatenate(self.B, axis=1)
            self._stacked = (np.stack(self.C), Bs, Bs.T @ Bs / self.n)
        return self._stacked

    def residual(self, U: np.ndarray) -> np.ndarray:
        return self.stacked()[1] @ U.ravel() - self.target

    def value(self, U: np.ndarray) -> float:
        r = self.residual(U)
        return float(r @ r) / (2.0 * self.n) + self.beta * float(np.linalg.norm(U, axis=1).sum())

    def line(self, U: np.ndarray, dU: np.ndarray) -> Any:
        """h -> f(U + h dU), each evaluation O(n_loss + groups d) (the residual's two parts formed once)."""
        r, rd = self.residual(U), self.stacked()[1] @ dU.ravel()

        def at(h: float) -> float:
            q = r + h * rd
            return float(q @ q) / (2.0 * self.n) + self.beta * float(np.linalg.norm(U + h * dU, axis=1).sum())

        return at

    def newton(self, U: np.ndarray, N: list[np.ndarray]) -> tuple[np.ndarray, float, np.ndarray]:
        """Newton direction (J, d) in the null spaces N_j, the decrement, and the full gradient (J, d)."""
        _, Bs, gram = self.stacked()
        J, d, beta = U.shape[0], self.d, self.beta
        norms = np.linalg.norm(U, axis=1)
        grads = (Bs.T @ self.residual(U) / self.n).reshape(J, d) + beta * U / norms[:, None]
        uh = U / norms[:, None]
        H = gram.copy()
        idx = np.arange(J)
        H.reshape(J, d, J, d)[idx, :, idx, :] += (beta / norms)[:, None, None] * (
            np.eye(d)[None] - uh[:, :, None] * uh[:, None, :])
        R = sum(Nj.shape[1] for Nj in N)
        Nfull = np.zeros((J * d, R))
        a = 0
        for j, Nj in enumerate(N):
            Nfull[j * d:(j + 1) * d, a:a + Nj.shape[1]] = Nj
            a += Nj.shape[1]
        Hm = Nfull.T @ H @ Nfull
        gt = Nfull.T @ grads.ravel()
        Hm += 1e-14 * max(float(np.trace(Hm)) / max(R, 1), 1e-300) * np.eye(R)
        step = np.linalg.solve(Hm, gt)
        return -(Nfull @ step).reshape(J, d), float(gt @ step), grads

    def ratio_test(self, U: np.ndarray, dU: np.ndarray) -> tuple[float, tuple[int, int] | None]:
        """The largest step h <= 1 along dU that keeps the rows outside the working sets feasible, and the row
        that blocks it (group index, row) or None."""
        both = self.stacked()[0] @ np.stack([U, dU], axis=-1)  # (J, n, 2): slack and slope of every cone row
        slack, slope = both[..., 0], both[..., 1]
        if self._free is None:
            self._free = np.ones(slope.shape, dtype=bool)
            for j, Wj in enumerate(self.W):
                self._free[j, Wj] = False
        free = self._free
        hit = free & (slope < 0)
        if not hit.any():
            return 1.0, None
        h = np.full(slope.shape, np.inf)
        h[hit] = np.maximum(slack[hit], 0.0) / -slope[hit]
        k = int(np.argmin(h))
        j, row = divmod(k, slope.shape[1])
        return (float(h[j, row]), (j, row)) if h[j, row] < 1.0 else (1.0, None)


def _worst_multipliers(pinvs: list[np.ndarray], grads: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """Per group, the most negative least-squares multiplier estimate of a working row (G_Wj' m = g_j, by the
    cached pseudo-inverse of G_Wj'), as (group index, position in W_j), and the most negative of all (0 and []
    when none is negative)."""
    worst, where = 0.0, []
    for j, Pj in enumerate(pinvs):
        if Pj.shape[0]:
            m = Pj @ grads[j]
            k = int(np.argmin(m))
            if m[k] < 0.0:
                where.append((j, k))
                worst = min(worst, float(m[k]))
    return worst, where


def _active_set(gr: _Groups, U: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """The primal active-set method from the feasible U (J, d) with working sets ``gr.W``; a group whose working
    rows leave it no direction, or whose norm collapses, leaves (``gr`` shrinks in place). Returns the solution
    (aligned with ``gr.keys``) and each group's multipliers on its working rows (>= 0; the method stops only when
    no estimate is below -1e-10 of the gradient's scale, so those are clipped at 0), or None."""
    scale = max(1.0, float(np.abs(gr.stacked()[1].T @ gr.target).max(initial=0.0)) / gr.n)
    fx = gr.value(U)
    for _ in range(MAX_STEPS):
        bases = [gr.basis(j) for j in range(len(gr.keys))]
        N = [b[0] for b in bases]
        norms = np.linalg.norm(U, axis=1)
        gone = [j for j, Nj in enumerate(N) if Nj.shape[1] == 0 or norms[j] <= 1e-9 * float(norms.max())]
        if gone:
            for j in reversed(gone):
                gr.remove(j)
            U = np.delete(U, gone, axis=0)
            if not gr.keys:
                return None
            fx = gr.value(U)
            continue
        try:
            dU, dec, grads = gr.newton(U, N)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(dec) or dec < 0:
            return None
        at_opt = dec <= 1e-18 * scale
        if not at_opt and dec <= DROP_DECREMENT * scale:
            # near the working set's optimum: a row whose multiplier is already clearly negative leaves now,
            # without the last Newton step to rounding level (the answer is only returned at ``at_opt``)
            worst, where = _worst_multipliers([b[1] for b in bases], grads)
            if worst < -DROP_MARGIN * scale:
                gr.drop_rows(where)
                continue
        if not at_opt:
            h_max, block = gr.ratio_test(U, dU)
            h = h_max
            line = gr.line(U, dU)
            while True:  # backtracking (Armijo) within the ratio test's step
                fc = line(h)
                if fc <= fx - 1e-4 * h * dec or h < 1e-12:
                    break
                h *= 0.5
            if h >= 1e-12 or block is not None:
                U, fx = U + h * dU, fc
                if block is not None and h == h_max:
                    gr.add_row(*block)
                continue
            if dec > 1e-14 * scale:  # no descent although the decrement is not at rounding level
                return None
        # the working set's optimum: the row with the most negative multiplier leaves, or U is the solution
        worst, where = _worst_multipliers([b[1] for b in bases], grads)
        if worst >= -1e-10 * scale:
            return U, [np.maximum(b[1] @ grads[j], 0.0) for j, b in enumerate(bases)]
        # each group's row of most negative multiplier leaves (one row per group: the groups' rows are separate
        # constraints, so the Newton step in the larger null spaces still descends, and a row that the step
        # would cross comes back through the ratio test)
        gr.drop_rows(where)
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

    def loss_rows(k: int, i: int) -> np.ndarray:
        """B_j of group j = (k, i): the loss rows (chosen minus rejected when pairwise), + for v, - for w."""
        B = (1.0 if k == 0 else -1.0) * D[:, i:i + 1] * X
        return B[c_idx] - B[r_idx] if rows.pairwise else B

    cones = [E[:, i:i + 1] * X for i in range(P)]  # G_i: the cone rows of pattern i, shared by v_i and w_i

    hint = st.polish_hint if isinstance(st.polish_hint, dict) else {}
    hint_active, hint_mu = hint.get("active", {}), hint.get("zero_mu", {})
    if hint_active:  # a warm start: the last polish's neurons; any other that should be nonzero joins below
        active = list(hint_active)
    gr = _Groups(target, beta, rows.n_loss, d)
    U0 = []
    for k, i in active:
        Cj = cones[i]
        if (k, i) in hint_active:  # the last polish's solution for this neuron: feasible (the cones do not move
            uj, Wj = hint_active[(k, i)]  # with beta), its working rows tight: the method starts near the optimum
            uj, Wj = uj.copy(), list(Wj)
        else:
            uj = _project(Cj, z[k, i])
            if float(np.linalg.norm(uj)) <= 1e-9 * float(norms.max()):
                continue  # projected to (nearly) zero: the neuron leaves
            Wj = _first_rows(Cj, uj, nu[:, k * P + i], d)
        gr.add((k, i), Cj, loss_rows(k, i), Wj)
        U0.append(uj)
    if not gr.keys:
        return None
    U = np.stack(U0)
    zero_kkt: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # zero neuron -> (mu, P_K(-g))

    def failing(U: np.ndarray) -> list[tuple[int, int, np.ndarray, float]]:
        """The zero neurons whose optimality condition fails at U; ``zero_kkt`` gets every zero neuron's mu."""
        # a zero neuron is optimal when ||P_K(-g)|| <= beta on its cone K = {u: G u >= 0}; P_K(-g) = G' mu - g
        # with mu = argmin_{mu >= 0} ||G' mu - g|| (Moreau)
        g = _loss_gradient(X, D, rows, gr.residual(U))
        zero_kkt.clear()
        out = []
        for k in range(2):
            for i in range(P):
                if (k, i) in gr.keys:
                    continue
                Cfull = cones[i]
                # any mu >= 0 with ||G' mu - g|| <= beta certifies the zero neuron (xi = (G' mu - g) / beta): mu = 0
                # when ||g|| <= beta, else least squares on the rows of the last polish's mu for it (clipped at
                # 0); the NNLS only when neither does
                for m in _certificates(Cfull, g[k, i], hint_mu.get((k, i))):
                    delta = Cfull.T @ m - g[k, i]
                    if float(np.linalg.norm(delta)) <= beta:
                        zero_kkt[(k, i)] = (m, delta)
                        break
                if (k, i) in zero_kkt:
                    continue
                m, _ = nnls(Cfull.T, g[k, i], maxiter=50 * max(rows.n, d))
                delta = Cfull.T @ m - g[k, i]
                zero_kkt[(k, i)] = (m, delta)
                nd = float(np.linalg.norm(delta))
                if nd > (1.0 + GROUP_ADD_MARGIN) * beta:
                    out.append((k, i, delta, nd))
        return out

    def join(U: np.ndarray, joining: list[tuple[int, int, np.ndarray, float]]) -> np.ndarray:
        """Every failing neuron joins at its own optimal step along P_K(-g) divided by their number, which by
        convexity lowers the objective and keeps every cone row feasible."""
        new_rows = []
        for k, i, delta, nd in joining:
            Bj = loss_rows(k, i)
            Bd = Bj @ delta
            curv = float(Bd @ Bd) / gr.n
            if curv <= 0.0:
                continue
            uj = ((nd * nd - beta * nd) / curv / len(joining)) * delta
            Cj = cones[i]
            gr.add((k, i), Cj, Bj, _first_rows(Cj, uj, nu[:, k * P + i], d))
            new_rows.append(uj)
            del zero_kkt[(k, i)]
        return np.vstack([U, np.stack(new_rows)]) if new_rows else U

    if hint_active:  # a warm start: the neurons the new beta needs join before the first solve, not after it
        U = join(U, failing(U))
    for rounds in range(MAX_GROUP_ROUNDS + 1):
        out = _active_set(gr, U)
        if out is None:
            return None
        U, mults = out
        joining = failing(U)  # neurons the ADMM iterate had not found yet; the active-set method continues
        if not joining or rounds == MAX_GROUP_ROUNDS:
            break
        U = join(U, joining)
    keep, W = gr.keys, gr.W
    u = np.zeros((2, P, d))
    for (k, i), uj in zip(keep, U, strict=True):
        u[k, i] = uj
    GU = np.concatenate([E * (X @ u[0].T), E * (X @ u[1].T)], axis=1)  # (n, 2P) cone rows G u (unscaled)
    xi = np.zeros((2, P, d))
    mu = np.zeros((rows.n, 2 * P))
    working = {j: Wj for j, Wj in zip(keep, W, strict=True)}
    multipliers = dict(zip(keep, mults, strict=True))
    for k in range(2):
        for i in range(P):
            col = k * P + i
            if (k, i) in working:
                xi[k, i] = u[k, i] / float(np.linalg.norm(u[k, i]))
                mu[working[(k, i)], col] = multipliers[(k, i)]
            else:
                m, delta = zero_kkt[(k, i)]
                mu[:, col] = m
                v = delta / beta
                nv = float(np.linalg.norm(v))
                xi[k, i] = v if nv <= 1.0 else v / nv
    lam = beta * xi / rho
    nu_new = -mu / (alpha * rho)
    s_new = np.where(mu > 0, 0.0, np.maximum(alpha * GU, 0.0))
    Wsn = s_new - nu_new
    acc = np.stack([(X.T @ (E * Wsn[:, :P])).T, (X.T @ (E * Wsn[:, P:])).T]) * alpha  # alpha G'(s - nu)
    u_x = xp.asarray(u)
    new_hint = {"active": {j: (uj.copy(), list(Wj)) for j, uj, Wj in zip(keep, U, W, strict=True)},
                "zero_mu": {j: mu_j for j, (mu_j, _) in zero_kkt.items()}}
    return replace(st, u=u_x, z=u_x.copy(), lam=xp.asarray(lam), s=xp.asarray(s_new, dtype=rows.dtype),
                   nu=xp.asarray(nu_new, dtype=rows.dtype), GtSnu=xp.asarray(acc), polish_hint=new_hint)


def _certificates(C: np.ndarray, g: np.ndarray, last: np.ndarray | None) -> Any:
    """Candidate multipliers mu >= 0 for a zero neuron, cheapest first: 0, then least squares G_S' m = g on the
    rows S where the last polish's mu was positive, clipped at 0."""
    yield np.zeros(C.shape[0])
    if last is not None:
        support = np.flatnonzero(last > 0)
        if support.size:
            m = np.zeros(C.shape[0])
            m[support] = np.maximum(np.linalg.lstsq(C[support].T, g, rcond=None)[0], 0.0)
            yield m


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
