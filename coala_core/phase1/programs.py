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
    sq, viol = 0.0, 0.0
    preds = []
    for start, stop, Xb in rows.blocks():
        Eb = rows.E[start:stop]
        Q = (Xb @ UW).astype(xp.float64)
        Db = (Eb > 0).astype(xp.float64)
        pred = (Db * (Q[:, :P] - Q[:, P:])).sum(axis=1)
        preds.append(pred)
        r = pred - rows.y[start:stop].astype(xp.float64)
        sq += float(r @ r)
        if program == "relu":
            E64 = Eb.astype(xp.float64)
            neg = xp.minimum(0.0, xp.concatenate([E64, E64], axis=1) * Q)
            viol += float((neg * neg).sum())
    pred = xp.concatenate(preds)
    loss = sq / (2.0 * rows.n)
    penalty = group_norm_sum(xp.asarray(v, dtype=xp.float64)) + group_norm_sum(xp.asarray(w, dtype=xp.float64))
    obj = loss + beta * penalty
    return Evaluation(loss, penalty, obj, obj * rows.n, float(np.sqrt(viol / rows.n)), rows.accuracy(pred), pred)


def critical_beta(Fty: Any, n: int) -> float:
    """beta_max = max_i ||X' D_i y||_2 / n: for beta >= beta_max the zero solution is optimal for the gated
    program exactly and for the cone-constrained program (cones only shrink the feasible set around 0,
    and 0 stays feasible), so the path starts here."""
    F = np.asarray(to_numpy(Fty), dtype=np.float64)
    return float(np.linalg.norm(F, axis=1).max() / n)


def recover_network(v: np.ndarray, w: np.ndarray, program: str, zero_tol: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neurons from the convex solution.

    ``relu``: v_i -> (v_i / sqrt||v_i||, +sqrt||v_i||), w_i -> (w_i / sqrt||w_i||, -sqrt||w_i||), zero groups
    dropped; f(x) = sum_j relu(x . theta1_j) theta2_j equals the convex model where the cones hold.
    ``gated``: theta1_j = a_j = v_j - w_j with theta2_j = 1 and the gate of pattern j kept
    (f(x) = sum_j 1[x . g_j >= 0] (x . theta1_j)). Returns theta1 (d, m), theta2 (m,), and the pattern index
    of each neuron (m,).
    """
    cols, outs, idx = [], [], []
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
