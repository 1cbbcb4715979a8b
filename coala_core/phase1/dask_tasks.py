"""Worker side of Phase I on Dask: per-range row state and the passes over it (used by :mod:`.dask_source`).

Each map task owns the store pairs ``[a, b)`` as rows ``[chosen; rejected]`` (labels ``[+1; -1]``). After the
patterns are fixed, :func:`prepare_range` builds a :class:`RangeData` on a worker: the standardised rows in the
compute dtype (kept when ``cache_rows``, else re-read from the store on every pass) and the pattern signs E.
It stays there as a future; the ADMM iterations chain per-range states ``(s, nu, partial)`` from iteration to
iteration (:func:`admm_partial`), so neither rows nor per-row state travel to the driver: only the (d, 6P)
partial sums and a few scalars are added up (pairwise on the workers, :func:`add_partials`).

The arithmetic of :func:`admm_partial` is that of the in-process pass (``coala_core.phase1.admm._pass``) on one
block: the same compute dtype, the same operations in the same order, float64 accumulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from coala_core.errors import DimensionMismatchError, NonFiniteError
from coala_core.phase1.patterns import gate_signs, standardize_block

#: the scalar sums of one ADMM pass (see :func:`admm_partial`)
SUM_KEYS = ("Gu", "s", "res", "viol", "sq", "correct")


def read_rows(store: Any, uri: str, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Store pairs [a, b) as rows ``[chosen; rejected]`` (2k, d) and labels ``[+1; -1]`` (PairRows' layout)."""
    chosen, rejected = store.read_rows(np.arange(a, b))
    k, d = b - a, int(store.dim)
    if chosen.shape != (k, d) or rejected.shape != (k, d):
        raise DimensionMismatchError(f"{uri}: rows {a}:{b}: expected chosen/rejected of shape ({k}, {d}), "
                                     f"got {tuple(chosen.shape)} and {tuple(rejected.shape)}")
    X = np.concatenate([chosen, rejected], axis=0)
    if not np.isfinite(X).all():
        raise NonFiniteError(f"{uri}: rows {a}:{b}: non-finite feature values")
    y = np.concatenate([np.ones(k, dtype=X.dtype), -np.ones(k, dtype=X.dtype)])
    return X, y


@dataclass
class RangeData:
    """What a worker keeps for the pairs [a, b): standardised rows ``X`` (2k, d') or None (re-read on each
    pass), pattern signs ``E`` (2k, P) in the compute dtype, and how to re-read the rows."""

    opener: Callable[[str], Any]
    uri: str
    a: int
    b: int
    std: tuple[Any, Any, bool, str]  # mean, scale, bias, compute dtype name
    E: np.ndarray
    X: np.ndarray | None = None

    @property
    def k(self) -> int:
        return self.b - self.a

    def rows(self) -> np.ndarray:
        if self.X is not None:
            return self.X
        return standardized(self.opener, self.uri, self.a, self.b, self.std)


def standardized(opener: Callable[[str], Any], uri: str, a: int, b: int, std: tuple) -> np.ndarray:
    mean, scale, bias, dtype = std
    X, _ = read_rows(opener(uri), uri, a, b)
    return standardize_block(X, mean, scale, bias, np.dtype(dtype))


def sign_bits(opener: Callable[[str], Any], uri: str, a: int, b: int, std: tuple, gates: np.ndarray) -> np.ndarray:
    """Activation bits (2k, P) bool of the standardised rows for ``gates`` (the gate-selection pass)."""
    return gate_signs(standardized(opener, uri, a, b, std), gates) > 0


def prepare_range(opener: Callable[[str], Any], uri: str, a: int, b: int, std: tuple, gates: np.ndarray,
                  cache_rows: bool) -> RangeData:
    X = standardized(opener, uri, a, b, std)
    return RangeData(opener, uri, a, b, std, gate_signs(X, gates), X if cache_rows else None)


def active_counts(data: RangeData) -> tuple[int, np.ndarray]:
    """(rows, active rows per pattern (P,)) of a range."""
    return int(data.E.shape[0]), (data.E > 0).sum(axis=0).astype(np.int64)


def add_counts(p: tuple[int, np.ndarray], q: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    return p[0] + q[0], p[1] + q[1]


def signs_of(data: RangeData) -> np.ndarray:
    return data.E


def _state(state: Any, part: int, divisors: tuple[float, ...], shape: tuple[int, int], dtype: Any) -> np.ndarray:
    """One per-row state array of a range: zeros (None), a slice shipped by the driver (an array), or part
    ``part`` of the previous iteration's ``(s, nu, partial)``; divided by ``divisors`` in turn, as the
    in-process ``nu / f`` of each rho change."""
    if state is None:
        arr = np.zeros(shape, dtype=dtype)
    elif isinstance(state, np.ndarray):
        arr = state
    else:
        arr = state[part]
    for f in divisors:
        arr = arr / f
    return arr


def admm_partial(data: RangeData, s_state: Any, s_div: tuple[float, ...], nu_state: Any, nu_div: tuple[float, ...],
                 spec: tuple) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, dict[str, float]]]:
    """One range's share of the ADMM pass: new ``s``, ``nu`` (2k, 2P) in the compute dtype, and the partial
    ``(acc (d', 6P) float64, sums)`` with ``acc = X'[E2 (s - nu), E2 (s - s_old), E2 nu]`` and the sums
    ``Gu`` = ||alpha G u||^2, ``s`` = ||s||^2, ``res`` = ||alpha G u - s||^2, ``viol`` (cone violation at the
    reported iterate), ``sq`` (squared loss, pointwise or pairwise) and ``correct`` (pairs ranked right)."""
    UZ, a, relaxation, report, pairwise, dtype = spec
    X = data.rows()
    E = data.E
    P = E.shape[1]
    shape = (int(X.shape[0]), 2 * P)
    s_old = _state(s_state, 0, s_div, shape, dtype)
    nu = _state(nu_state, 1, nu_div, shape, dtype)
    E2 = np.concatenate([E, E], axis=1)
    Q = X @ UZ
    Gu = a * (E2 * Q[:, :2 * P])
    Gh = Gu if relaxation == 1.0 else relaxation * Gu + (1.0 - relaxation) * s_old
    sb = np.maximum(Gh + nu, 0)
    nb = nu + Gh - sb
    W = np.concatenate([E2 * (sb - nb), E2 * (sb - s_old), E2 * nb], axis=1)
    acc = (X.T @ W).astype(np.float64)
    Gu64, sb64 = Gu.astype(np.float64), sb.astype(np.float64)
    sums = {"Gu": float((Gu64 * Gu64).sum()), "s": float((sb64 * sb64).sum()),
            "res": float(((Gu64 - sb64) ** 2).sum())}
    Qz = (Q[:, :2 * P] if report == "u" else Q[:, 2 * P:]).astype(np.float64)
    pred = ((E > 0).astype(np.float64) * (Qz[:, :P] - Qz[:, P:])).sum(axis=1)
    neg = np.minimum(0.0, E2.astype(np.float64) * Qz)
    sums["viol"] = float((neg * neg).sum())
    sums.update(_loss_sums(pred, data.k, pairwise))
    # stored as the in-process pass stores them: into arrays of the state's dtype
    return sb.astype(dtype, copy=False), nb.astype(dtype, copy=False), (acc, sums)


def _loss_sums(pred: np.ndarray, k: int, pairwise: bool) -> dict[str, float]:
    """``sq``: sum (pred - y)^2 (pointwise, y = [+1; -1]) or sum (pred_c - pred_r - 1)^2 (pairwise);
    ``correct``: pairs with pred_c > pred_r."""
    pc, pr = pred[:k], pred[k:]
    if pairwise:
        r = pc - pr - 1.0
    else:
        y = np.concatenate([np.ones(k), -np.ones(k)])
        r = pred - y
    return {"sq": float(r @ r), "correct": float((pc > pr).sum())}


def gt_partial(data: RangeData, s_state: Any, s_div: tuple[float, ...], nu_state: Any, nu_div: tuple[float, ...],
               dtype: Any) -> np.ndarray:
    """X'(E2 (s - nu)) (d', 2P) float64 of one range (``Phase1Solver._rescale_rho``'s pass)."""
    X, E = data.rows(), data.E
    shape = (int(X.shape[0]), 2 * E.shape[1])
    s, nu = _state(s_state, 0, s_div, shape, dtype), _state(nu_state, 1, nu_div, shape, dtype)
    E2 = np.concatenate([E, E], axis=1)
    return (X.T @ (E2 * (s - nu))).astype(np.float64)


def gram_partial(data: RangeData, with_H: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(XtX, H upper blocks or None, Fty)`` float64 of one range from its kept rows and signs (the sums of
    ``dask_source._gram_partial``, without reading the store again)."""
    Xb = data.rows().astype(np.float64)  # float64 products, as PreparedRows.grams
    Db = (data.E > 0).astype(Xb.dtype)
    yb = np.concatenate([np.ones(data.k, dtype=Xb.dtype), -np.ones(data.k, dtype=Xb.dtype)])
    P, d = Db.shape[1], Xb.shape[1]
    XtX = (Xb.T @ Xb).astype(np.float64)
    Fty = ((Db * yb[:, None]).T @ Xb).astype(np.float64)
    H = None
    if with_H:
        H = np.zeros((P * d, P * d), dtype=np.float64)
        Z = (Db[:, :, None] * Xb[:, None, :]).reshape(Xb.shape[0], P * d)
        for i in range(P):
            H[i * d:(i + 1) * d, i * d:] += (Z[:, i * d:(i + 1) * d].T @ Z[:, i * d:]).astype(np.float64)
    return XtX, H, Fty


def partial_of(x: Any) -> tuple[np.ndarray, dict[str, float]]:
    """The partial sums of an ADMM range state ``(s, nu, partial)`` or of an already added partial."""
    return x[2] if len(x) == 3 else x


def add_partials(p: Any, q: Any) -> tuple[np.ndarray, dict[str, float]]:
    (acc_p, sp), (acc_q, sq) = partial_of(p), partial_of(q)
    return acc_p + acc_q, {key: sp[key] + sq[key] for key in sp}


def evaluate_partial(data: RangeData, UW: np.ndarray, relu: bool, pairwise: bool) -> dict[str, float]:
    """``programs.evaluate`` on one range: squared loss, cone violation (relu) and pairs ranked right of the
    convex model with weights ``UW`` = [V; W]' (d', 2P) in the compute dtype."""
    X, E = data.rows(), data.E
    P = E.shape[1]
    Q = (X @ UW).astype(np.float64)
    pred = ((E > 0).astype(np.float64) * (Q[:, :P] - Q[:, P:])).sum(axis=1)
    out = _loss_sums(pred, data.k, pairwise)
    viol = 0.0
    if relu:
        E64 = E.astype(np.float64)
        neg = np.minimum(0.0, np.concatenate([E64, E64], axis=1) * Q)
        viol = float((neg * neg).sum())
    out["viol"] = viol
    return out


def network_partial(data: RangeData, T1: np.ndarray, t2: np.ndarray, G: np.ndarray | None) -> float:
    """Pairs ranked right by the recovered network (``programs.network_accuracy``) on one range."""
    X64 = data.rows().astype(np.float64)
    H = X64 @ T1
    H = np.maximum(H, 0.0) if G is None else np.where(X64 @ G >= 0, H, 0.0)
    pred = H @ t2
    return float((pred[:data.k] > pred[data.k:]).sum())


def add_sums(p: dict[str, float], q: dict[str, float]) -> dict[str, float]:
    return {key: p[key] + q[key] for key in p}


def add(p: Any, q: Any) -> Any:
    return p + q
