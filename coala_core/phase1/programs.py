"""The two Phase I programs, their objectives, and conversion of a solution to a ReLU network.

Cone-constrained convex ReLU program (method.md section 4), loss scaled by 1/n:

    min_{v, w}  (1/(2n)) || sum_i D_i X (v_i - w_i) - y ||^2 + beta * sum_i (||v_i||_2 + ||w_i||_2)
    s.t.        (2 D_i - I) X v_i >= 0,  (2 D_i - I) X w_i >= 0

Gated ReLU relaxation: the same loss over a_i = v_i - w_i with penalty beta * sum_i ||a_i||_2 and no cones.
Arrays: X (n, d), patterns as signs E = 2D - 1 (n, P), v and w (P, d) (stacked as u (2, P, d)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from coala_core.phase1.data import PreparedRows
from coala_core.phase1.source import get_xp, to_numpy


def group_soft_threshold(U: Any, t: float) -> Any:
    """Row-wise prox of t * ||.||_2 on the last axis: each d-vector shrunk by t towards 0."""
    xp = get_xp(U)
    norms = xp.linalg.norm(U, axis=-1, keepdims=True)
    factor = xp.maximum(0.0, 1.0 - t / xp.maximum(norms, 1e-300))
    return U * factor


def group_norm_sum(U: Any) -> float:
    xp = get_xp(U)
    return float(xp.linalg.norm(U, axis=-1).sum())


@dataclass
class Evaluation:
    """Objective and feasibility of (v, w) on the training rows (float64)."""

    loss: float
    penalty: float
    objective: float
    objective_unscaled: float
    cone_violation: float
    accuracy: float
    pred: Any


def evaluate(rows: PreparedRows, v: Any, w: Any, beta: float, program: str) -> Evaluation:
    """One pass: the scaled objective ``loss + beta * penalty``, the unscaled one ``n * objective``, the RMS
    cone violation sqrt(sum_i ||min(0, (2D_i - I) X u_i)||^2 / n) (0 for the gated program), and accuracy."""
    xp = rows.xp
    V = xp.asarray(v, dtype=rows.dtype)
    W = xp.asarray(w, dtype=rows.dtype)
    P = V.shape[0]
    UW = xp.concatenate([V, W], axis=0).T
    penalty = group_norm_sum(xp.asarray(v, dtype=xp.float64)) + group_norm_sum(xp.asarray(w, dtype=xp.float64))
    if rows.remote is not None:  # the same sums where the rows are (phase1/dask_source.py)
        r = rows.remote.evaluate_pass(UW, program == "relu", rows.pairwise)
        obj = r["sq"] / (2.0 * rows.n_loss) + beta * penalty
        return Evaluation(r["sq"] / (2.0 * rows.n_loss), penalty, obj, obj * rows.n_loss,
                          float(np.sqrt(r["viol"] / rows.n)), r["correct"] / int(rows.pairs[0].shape[0]), None)
    viol = 0.0
    preds = []
    for start, stop, Xb in rows.blocks():
        Eb = rows.E[start:stop]
        Q = (Xb @ UW).astype(xp.float64)
        Db = (Eb > 0).astype(xp.float64)
        pred = (Db * (Q[:, :P] - Q[:, P:])).sum(axis=1)
        preds.append(pred)
        if program == "relu":
            E64 = Eb.astype(xp.float64)
            neg = xp.minimum(0.0, xp.concatenate([E64, E64], axis=1) * Q)
            viol += float((neg * neg).sum())
    pred = xp.concatenate(preds)
    loss = rows.squared_loss_sum(pred) / (2.0 * rows.n_loss)
    obj = loss + beta * penalty
    return Evaluation(loss, penalty, obj, obj * rows.n_loss, float(np.sqrt(viol / rows.n)), rows.accuracy(pred),
                      pred)


def network_accuracy(rows: PreparedRows, theta1: np.ndarray, theta2: np.ndarray, pattern: np.ndarray,
                     program: str) -> float:
    """Accuracy on ``rows`` (pairwise when paired) of the recovered network that is shipped:
    ``relu``: r(x) = sum_j relu(x . theta1_j) theta2_j; ``gated``: r(x) = sum_j 1[x . g_j >= 0] (x . theta1_j).
    Off the training rows the cones need not hold, so this differs from the convex model's accuracy."""
    xp = rows.xp
    if theta2.shape[0] == 0:
        return rows.accuracy(xp.zeros(rows.n, dtype=xp.float64))
    T1 = xp.asarray(theta1, dtype=xp.float64)
    t2 = xp.asarray(theta2, dtype=xp.float64)
    G = xp.asarray(rows.gates[:, pattern], dtype=xp.float64) if program == "gated" else None
    if rows.remote is not None:  # pairs ranked right, counted where the rows are
        return rows.remote.network_pass(T1, t2, G) / int(rows.pairs[0].shape[0])
    preds = []
    for _, _, Xb in rows.blocks():
        X64 = Xb.astype(xp.float64)
        H = X64 @ T1
        H = xp.maximum(H, 0.0) if G is None else xp.where(X64 @ G >= 0, H, 0.0)
        preds.append(H @ t2)
    return rows.accuracy(xp.concatenate(preds))


def critical_beta(Fty: Any, n: int) -> float:
    """beta_max = max_i ||X' D_i y||_2 / n: for beta >= beta_max the zero solution is optimal for the gated
    program exactly and for the cone-constrained program (cones only shrink the feasible set around 0,
    and 0 stays feasible), so the path starts here."""
    F = np.asarray(to_numpy(Fty), dtype=np.float64)
    return float(np.linalg.norm(F, axis=1).max() / n)


#: a neuron is active (kept in the network, counted in ``n_active``) when its group norm ||v_i|| (||w_i||, or
#: ||v_i - w_i|| for the gated program) exceeds NEURON_RTOL times the largest group norm of the solution. Its
#: contribution to a score scales with that norm, so the dropped ones change scores by < 1e-4 relative each.
NEURON_RTOL = 1e-4


#: the exact critical beta of the cone program needs one NNLS per neuron group on X (n, d); above this n * d
#: the gated program's beta_max (an upper bound) is used instead
NNLS_MAX_SIZE = 1_000_000


def relu_critical_beta(rows: PreparedRows, Fty: Any, XtX: Any = None) -> tuple[float, bool]:
    """The largest beta with a nonzero solution of the cone-constrained program (1/n-scaled), and whether it
    is exact.

    At u = 0 the optimality conditions split by neuron group: 0 is optimal iff for every i
    min_{mu >= 0} ||b_i + X'diag(e_i) mu|| <= beta (group v_i) and min_{mu >= 0} ||-b_i + X'diag(e_i) mu||
    <= beta (group w_i), with b_i = X'D_i y / n the negative loss gradient and e_i = 2 D_i - 1 (the cone
    multipliers mu are the constraint's duals). Each minimum is one NNLS problem. The cones make this smaller
    than the gated program's max_i ||b_i|| (measured: often half of it). Falls back to that bound (exact=False)
    when n * d > NNLS_MAX_SIZE. Streamed rows of at most that size are read once for it, so the path's grid
    does not depend on the memory budget.
    """
    upper = critical_beta(Fty, rows.n_loss)
    if rows.n * rows.d > NNLS_MAX_SIZE:
        if rows.X is None or rows.remote is not None:
            return upper, False
        return min(_cone_bound(rows, Fty, XtX), upper), False
    from scipy.optimize import nnls

    if rows.X is not None:
        X = np.asarray(to_numpy(rows.X), dtype=np.float64)
    else:
        X = np.concatenate([np.asarray(to_numpy(Xb), dtype=np.float64) for _, _, Xb in rows.blocks()])
    E = np.asarray(to_numpy(rows.E), dtype=np.float64)
    b = np.asarray(to_numpy(Fty), dtype=np.float64) / rows.n_loss
    best = 0.0
    for i in range(E.shape[1]):
        K = X.T * E[:, i]
        for sign in (1.0, -1.0):
            _, res = nnls(K, -sign * b[i], maxiter=50 * max(K.shape))
            best = max(best, float(res))
    return min(best, upper), True


#: most FISTA iterations of the critical-beta bound on large resident rows, and the relative decrease over
#: ``BOUND_WINDOW`` iterations below which it stops (measured on 3,884 x 576 SmolLM2 rows, P = 10: the bound 0.360
#: in 23 s on the 2-core CPU at load 5, against the exact 0.331 (NNLS, 86 s) and the gated bound 1.378)
BOUND_MAX_ITER = 150
BOUND_WINDOW, BOUND_RTOL = 10, 5e-3


def _cone_bound(rows: PreparedRows, Fty: Any, XtX: Any = None) -> float:
    """An upper bound on the cone program's critical beta for rows too large for the exact NNLS: accelerated
    projected gradient (FISTA) on every group's min_{mu >= 0} ||s b_i + X'diag(e_i) mu||^2 at once, stopped
    early; any feasible mu gives a norm at least the group's minimum, so the largest norm bounds the critical
    beta from above (the path's grid then starts at most one step too high, rather than at the gated bound, often
    4x too high, where the first betas have zero solutions)."""
    xp, X, P = rows.xp, rows.X, rows.P
    b = xp.asarray(to_numpy(Fty), dtype=xp.float64) / rows.n_loss  # (P, d)
    B = xp.concatenate([b, -b]).T.astype(X.dtype)  # (d, 2P): v groups then w groups
    EE = xp.concatenate([rows.E, rows.E], axis=1).astype(X.dtype)  # (n, 2P)
    G = to_numpy(XtX) if XtX is not None else to_numpy((X.T @ X).astype(xp.float64))
    L = float(np.linalg.eigvalsh(np.asarray(G, dtype=np.float64))[-1]) * (1.0 + 1e-6)  # >= ||X'diag(e)||^2
    M = xp.zeros((rows.n, 2 * P), dtype=X.dtype)
    Y, t, best, window = M, 1.0, np.inf, []
    for _ in range(BOUND_MAX_ITER):
        Mn = xp.maximum(Y - (EE * (X @ (B + X.T @ (EE * Y)))) / L, 0)
        tn = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y, M, t = Mn + ((t - 1.0) / tn) * (Mn - M), Mn, tn
        R = (B + X.T @ (EE * M)).astype(xp.float64)
        best = min(best, float(xp.sqrt((R * R).sum(axis=0)).max()))
        window.append(best)
        if len(window) > BOUND_WINDOW and window[-BOUND_WINDOW - 1] - best <= BOUND_RTOL * best:
            break
    return best


def recover_network(v: np.ndarray, w: np.ndarray, program: str, rtol: float = NEURON_RTOL
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neurons from the convex solution (groups below ``rtol`` times the largest group norm are dropped).

    ``relu``: v_i -> (v_i / sqrt||v_i||, +sqrt||v_i||), w_i -> (w_i / sqrt||w_i||, -sqrt||w_i||), zero groups
    dropped; f(x) = sum_j relu(x . theta1_j) theta2_j equals the convex model where the cones hold.
    ``gated``: theta1_j = a_j = v_j - w_j with theta2_j = 1 and the gate of pattern j kept
    (f(x) = sum_j 1[x . g_j >= 0] (x . theta1_j)). Returns theta1 (d, m), theta2 (m,), and the pattern index
    of each neuron (m,).
    """
    cols, outs, idx = [], [], []
    groups = [v, w] if program == "relu" else [v - w]
    biggest = max(float(np.linalg.norm(U, axis=1).max(initial=0.0)) for U in groups)
    zero_tol = rtol * biggest
    if program == "relu":
        for sign, U in ((1.0, v), (-1.0, w)):
            for i, ui in enumerate(U):
                nrm = float(np.linalg.norm(ui))
                if nrm > zero_tol and nrm > 0.0:
                    cols.append(ui / np.sqrt(nrm))
                    outs.append(sign * np.sqrt(nrm))
                    idx.append(i)
    else:
        for i, ai in enumerate(v - w):
            if float(np.linalg.norm(ai)) > zero_tol and np.any(ai != 0):
                cols.append(ai)
                outs.append(1.0)
                idx.append(i)
    d = v.shape[1]
    theta1 = np.stack(cols, axis=1) if cols else np.zeros((d, 0))
    return theta1, np.asarray(outs, dtype=np.float64), np.asarray(idx, dtype=np.int64)
