"""ADMM for the cone-constrained convex ReLU program (method.md section 4), with an explicit state.

Splitting: u = z (group lasso on z) and alpha * G u = s >= 0, scaled duals lam (like u) and nu (like s):
  1. u-step: (I + F'F/(n rho) + alpha^2 G'G) u = F'y/(n rho) + z - lam + alpha G'(s - nu)
  2. z-step: z = group soft-threshold of u + lam at beta / rho
  3. s-step: s = max(0, alpha G u + nu);  4. duals: lam += u - z;  nu += alpha G u - s
(method.md calls z "v"; here v, w name the neuron blocks of u (2, P, d).) alpha = ``constraint_scale``
(default 1/sqrt(n)) rescales the cone rows, which leaves the feasible set unchanged. Steps 3-4, the
objective at z and alpha G'(s - nu) for the next u-step come from ONE streamed pass over X. Stopping: Boyd
et al. (2011, section 3.3) primal/dual residuals with absolute and relative tolerances; residual balancing
of rho every ``rho_adapt_every`` iterations (a new rho costs one factorisation, cached per rho).
Over-relaxation with parameter r in (0, 2) replaces u by r u + (1 - r) z_old in steps 2 and 4 and
alpha G u by r alpha G u + (1 - r) s_old in steps 3 and 4.
``admm_step`` maps state to state; ``run_admm`` owns stopping and checkpoints.

The penalty: rho = max(100 beta, 0.1) per beta (``Phase1Config.rho_rule``), fixed within a solve (residual
balancing is available but off: measured, it did not help). What ends the small problems' long tails is the
polish (``polish_every``, :mod:`.polish`): an exact solve on the neurons ADMM has found, accepted only through
this module's own stopping rule (benchmarks/RESULTS.md, "Phase I rho (issue 10 item 6, 2026-11-30)").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coala_core.phase1.anderson import Anderson
from coala_core.phase1.data import PreparedRows
from coala_core.phase1.polish import polish_state
from coala_core.phase1.programs import group_norm_sum, group_soft_threshold
from coala_core.phase1.source import get_xp

#: the longest wait, in ADMM iterations, between two polish attempts (the wait doubles after each failure)
POLISH_MAX_WAIT = 400


@dataclass
class ADMMState:
    """Everything ADMM carries between iterations: u, z, lam (2, P, d) float64; s, nu (n, 2P) compute dtype;
    ``GtSnu`` = alpha G'(s - nu) (2, P, d); ``rho``; iteration ``k``; ergodic sum ``z_sum`` of the reported
    iterate (z, or u in cronos mode) over ``n_avg`` iterations; ``polish_hint``: the last polish's neurons
    and working sets, kept or not (:func:`.polish.polish_state`), a feasible start for the next polish (the cones
    do not depend on beta, so it stays feasible along a path); not checkpointed (a hint, never needed)."""

    u: Any
    z: Any
    lam: Any
    s: Any
    nu: Any
    GtSnu: Any
    rho: float
    k: int = 0
    z_sum: Any = None
    n_avg: int = 0
    polish_hint: Any = None


@dataclass
class StepInfo:
    """Diagnostics of one iteration (at the z iterate): objective (scaled), residuals, tolerances."""

    objective: float
    loss: float
    r_primal: float
    r_dual: float
    eps_primal: float
    eps_dual: float
    cone_violation: float
    accuracy: float
    rho: float
    pred: Any = None


def init_state(rows: PreparedRows, rho: float) -> ADMMState:
    xp, P, d = rows.xp, rows.P, rows.d
    zeros = xp.zeros((2, P, d), dtype=xp.float64)
    # rows on a cluster keep s and nu there (phase1/dask_source.py RemoteBlocks)
    s = rows.remote.zeros(2 * P) if rows.remote is not None else xp.zeros((rows.n, 2 * P), dtype=rows.dtype)
    return ADMMState(zeros, zeros.copy(), zeros.copy(), s, s.copy(), zeros.copy(), float(rho), 0,
                     zeros.copy(), 0)


@dataclass
class ADMMProblem:
    """Fixed data of one ADMM solve: prepared rows, u-step solver, beta, alpha, tolerances."""

    rows: PreparedRows
    ustep: Any  # object with solve(b, rho, u0) and rhs_loss(rho)
    beta: float
    alpha: float
    eps_abs: float
    eps_rel: float
    adaptive_rho: bool = True
    rho_mu: float = 5.0
    rho_tau: float = 100.0
    rho_adapt_until: int = 1000
    rho_adapt_every: int = 25
    relaxation: float = 1.0  # over-relaxation (Boyd et al. 2011, 3.4.3); 1.0 = plain ADMM
    report: str = "z"  # the iterate whose objective, cone violation and ergodic sum are kept ("u" for cronos)
    extra: dict[str, Any] = field(default_factory=dict)


def _pass(prob: ADMMProblem, st: ADMMState, u: Any, z: Any) -> tuple[Any, Any, Any, dict[str, float], Any]:
    """The one streamed pass: new s, nu; alpha G'(s-nu), alpha G'(s - s_old), alpha G'nu; norms; pred and
    cone violation at the reported iterate (z, or u when ``prob.report == "u"``)."""
    rows, xp, a = prob.rows, prob.rows.xp, prob.alpha
    P, dt = rows.P, rows.dtype
    UZ = xp.concatenate([u[0], u[1], z[0], z[1]], axis=0).T.astype(dt)  # (d, 4P)
    if rows.remote is not None:  # the same pass, map-reduced where the rows are; pred stays there (None)
        s_new, nu_new, acc, sums = rows.remote.admm_pass(st.s, st.nu, UZ, a, prob.relaxation, prob.report,
                                                         rows.pairwise)
        return s_new, nu_new, _gt_blocks(acc, a, P), sums, None
    acc = xp.zeros((rows.d, 6 * P), dtype=xp.float64)
    s_new, nu_new = xp.empty_like(st.s), xp.empty_like(st.nu)
    sums = {"Gu": 0.0, "s": 0.0, "res": 0.0, "sq": 0.0, "viol": 0.0}
    preds = []
    for start, stop, Xb in rows.blocks():
        Eb = rows.E[start:stop]
        E2 = xp.concatenate([Eb, Eb], axis=1)
        Q = Xb @ UZ
        Gu = a * (E2 * Q[:, :2 * P])
        s_old = st.s[start:stop]
        Gh = Gu if prob.relaxation == 1.0 else prob.relaxation * Gu + (1.0 - prob.relaxation) * s_old
        sb = xp.maximum(Gh + st.nu[start:stop], 0)
        nb = st.nu[start:stop] + Gh - sb
        s_new[start:stop], nu_new[start:stop] = sb, nb
        W = xp.concatenate([E2 * (sb - nb), E2 * (sb - s_old), E2 * nb], axis=1)
        acc += (Xb.T @ W).astype(xp.float64)
        Gu64, sb64 = Gu.astype(xp.float64), sb.astype(xp.float64)
        sums["Gu"] += float((Gu64 * Gu64).sum())
        sums["s"] += float((sb64 * sb64).sum())
        sums["res"] += float(((Gu64 - sb64) ** 2).sum())
        Qz = (Q[:, :2 * P] if prob.report == "u" else Q[:, 2 * P:]).astype(xp.float64)
        Db = (Eb > 0).astype(xp.float64)
        pred = (Db * (Qz[:, :P] - Qz[:, P:])).sum(axis=1)
        preds.append(pred)
        neg = xp.minimum(0.0, E2.astype(xp.float64) * Qz)
        sums["viol"] += float((neg * neg).sum())
    pred = xp.concatenate(preds)
    sums["sq"] = rows.squared_loss_sum(pred)
    return s_new, nu_new, _gt_blocks(acc, a, P), sums, pred


def _gt_blocks(acc: Any, a: float, P: int) -> list[Any]:
    """alpha G'(s - nu), alpha G'(s - s_old), alpha G'nu, each (2, P, d), from the pass's sums (d, 6P)."""
    xp = get_xp(acc)
    blocks = [a * acc[:, j * P:(j + 1) * P].T for j in range(6)]
    return [xp.stack([blocks[2 * j], blocks[2 * j + 1]]) for j in range(3)]


def admm_step(prob: ADMMProblem, st: ADMMState) -> tuple[ADMMState, StepInfo]:
    """One ADMM iteration (u, z, s, duals) and its diagnostics; returns a new state."""
    rows, xp = prob.rows, prob.rows.xp
    rho = st.rho
    b = prob.ustep.rhs_loss(rho) + st.z - st.lam + st.GtSnu
    u = prob.ustep.solve(b, rho, st.u)
    u_hat = u if prob.relaxation == 1.0 else prob.relaxation * u + (1.0 - prob.relaxation) * st.z
    z = group_soft_threshold(u_hat + st.lam, prob.beta / rho)
    lam = st.lam + u_hat - z
    s, nu, (GtSnu, GtDs, Gtnu), sums, pred = _pass(prob, st, u, z)
    n_u = u.size
    r_pri = float(np.sqrt(float(xp.sum((u - z) ** 2)) + sums["res"]))
    r_dual = rho * float(xp.linalg.norm((z - st.z) + GtDs))
    Ax = np.sqrt(float(xp.sum(u * u)) + sums["Gu"])
    Bz = np.sqrt(float(xp.sum(z * z)) + sums["s"])
    eps_pri = np.sqrt(n_u + s.size) * prob.eps_abs + prob.eps_rel * max(Ax, Bz)
    eps_dual = np.sqrt(n_u) * prob.eps_abs + prob.eps_rel * rho * float(xp.linalg.norm(lam + Gtnu))
    loss = sums["sq"] / (2.0 * rows.n_loss)
    rep = u if prob.report == "u" else z
    obj = loss + prob.beta * (group_norm_sum(rep[0]) + group_norm_sum(rep[1]))
    accuracy = rows.accuracy(pred) if pred is not None else sums["correct"] / int(rows.pairs[0].shape[0])
    info = StepInfo(obj, loss, r_pri, r_dual, float(eps_pri), float(eps_dual),
                    float(np.sqrt(sums["viol"] / rows.n)), accuracy, rho, pred)
    new = ADMMState(u, z, lam, s, nu, GtSnu, rho, st.k + 1, st.z_sum + rep, st.n_avg + 1, st.polish_hint)
    if prob.adaptive_rho and new.k <= prob.rho_adapt_until and new.k % prob.rho_adapt_every == 0:
        rel_pri = r_pri / max(Ax, Bz, 1e-30)
        rel_dual = r_dual / max(rho * float(xp.linalg.norm(lam + Gtnu)), 1e-30)
        new = _balance_rho(prob, new, rel_pri, rel_dual, Gtnu)
    return new, info


def _balance_rho(prob: ADMMProblem, st: ADMMState, rel_pri: float, rel_dual: float, Gtnu: Any) -> ADMMState:
    """Residual balancing on normalised residuals (Boyd et al. 2011, 3.4.1; the OSQP rule): with
    rel_pri = r_pri / max(|Ax|, |Bz|) and rel_dual = r_dual / |rho (lam, G'nu)|, set rho *= f with
    f = sqrt(rel_pri / rel_dual) clipped to [1/rho_tau, rho_tau], when f leaves [1/rho_mu, rho_mu]. The
    changes stop after ``rho_adapt_until`` iterations, so the convergence theory (fixed rho) applies from there."""
    f = float(np.sqrt(rel_pri / max(rel_dual, 1e-30)))
    if 1.0 / prob.rho_mu <= f <= prob.rho_mu:
        return st
    f = float(np.clip(f, 1.0 / prob.rho_tau, prob.rho_tau))
    # scaled duals are y / rho: divide by f; alpha G'(s - nu) = alpha G's - alpha G'nu with G'nu scaled too
    GtSnu = st.GtSnu + Gtnu - Gtnu / f
    return replace(st, rho=st.rho * f, lam=st.lam / f, nu=st.nu / f, GtSnu=GtSnu)


def rescale_state(rows: PreparedRows, st: ADMMState, rho: float, alpha: float) -> ADMMState:
    """A warm-start state for a new rho: scaled duals lam, nu times rho_old / rho and alpha G'(s - nu)
    recomputed (one pass over X; where the rows are for a remote source)."""
    xp, P = rows.xp, rows.P
    f = rho / st.rho
    nu = st.nu / f
    if rows.remote is not None:
        acc = rows.remote.gt_pass(st.s, nu)
    else:
        acc = xp.zeros((rows.d, 2 * P), dtype=xp.float64)
        for start, stop, Xb in rows.blocks():
            Eb = rows.E[start:stop]
            E2 = xp.concatenate([Eb, Eb], axis=1)
            acc += (Xb.T @ (E2 * (st.s[start:stop] - nu[start:stop]))).astype(xp.float64)
    G = alpha * acc.T
    return replace(st, rho=rho, lam=st.lam / f, nu=nu, GtSnu=xp.stack([G[:P], G[P:]]))


def run_admm(prob: ADMMProblem, st: ADMMState, max_iter: int, *, fixed_iters: bool = False,
             history: dict[str, list[float]] | None = None,
             on_iteration: Callable[[ADMMState, StepInfo], None] | None = None, anderson: int = 0,
             polish_every: int = 0, polish_first: int | None = None
             ) -> tuple[ADMMState, StepInfo | None, bool, dict[str, list[float]]]:
    """Iterate ``admm_step`` until the Boyd criterion holds (unless ``fixed_iters``) or ``max_iter`` total
    iterations; ``on_iteration`` is called after each step (validation, checkpoints). ``anderson`` > 0
    accelerates the iteration (safeguarded Anderson acceleration with that memory, :mod:`.anderson`).
    ``polish_every`` > 0: after that many iterations, the exact solve on the current active set
    (:func:`.polish.polish_state`) is tried; one ADMM iteration from it is kept, as the last iteration, only
    when it meets the Boyd criterion. The first attempt comes after ``polish_first`` iterations (default
    ``polish_every``; a warm start passes fewer). After a failed attempt the wait to the next one doubles (at most
    ``POLISH_MAX_WAIT``), so attempts cost a bounded share of the iterations' time; the iterations at which
    attempts were made are in ``hist["polish_attempts"]``."""
    hist = history if history is not None else {}
    t0 = time.perf_counter() - (hist["seconds"][-1] if hist.get("seconds") else 0.0)
    converged, info = False, None
    aa = Anderson(anderson) if anderson > 0 else None
    cur = st

    def done(i: StepInfo) -> bool:
        return i.r_primal <= i.eps_primal and i.r_dual <= i.eps_dual

    def record(s: ADMMState, i: StepInfo) -> None:
        for key, val in (("objective", i.objective), ("r_primal", i.r_primal), ("r_dual", i.r_dual),
                         ("eps_primal", i.eps_primal), ("eps_dual", i.eps_dual),
                         ("cone_violation", i.cone_violation), ("train_accuracy", i.accuracy),
                         ("rho", i.rho), ("seconds", time.perf_counter() - t0)):
            hist.setdefault(key, []).append(float(val))
        if on_iteration is not None:
            on_iteration(s, i)

    wait = max(polish_every // 2, 1)  # doubled at each miss: the second attempt comes polish_every later
    next_polish = st.k + (polish_every if polish_first is None else polish_first)
    while cur.k < max_iter:
        st, info = admm_step(prob, cur)
        record(st, info)
        if not fixed_iters and done(info):
            converged = True
            break
        if not fixed_iters and polish_every and st.k >= next_polish and st.k < max_iter:
            cand = polish_state(prob, st)
            hist.setdefault("polish_attempts", []).append(float(st.k))
            if cand is not None:
                pst, pinfo = admm_step(prob, cand)
                if done(pinfo):
                    st, info, converged = pst, pinfo, True
                    hist.setdefault("polished_at", []).append(float(st.k))
                    record(st, info)
                    break
                st = replace(st, polish_hint=cand.polish_hint)  # a feasible start for the next attempt
            wait = min(2 * wait, POLISH_MAX_WAIT)
            next_polish = st.k + wait
        cur = st if aa is None else aa.next(cur, st)[0]
    return st, info, converged, hist
