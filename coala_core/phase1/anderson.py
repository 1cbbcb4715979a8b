"""Safeguarded Anderson acceleration (type II) of the ADMM fixed-point map.

ADMM is a fixed-point iteration x+ = T(x) on x = (z, lam, s, nu, alpha G'(s - nu)) (the u-step only reads
these; the last one is linear in s and nu, so it extrapolates with the same weights). With memory m, the
accelerated point is  x_aa = T(x_k) - dF gamma  where gamma = argmin ||g_k - dG gamma||, g = T(x) - x,
dG and dF the differences of the last m residuals and images (Walker and Ni 2011). Safeguard (as in SCS,
O'Donoghue 2021): an accelerated point is kept only when its own residual ||T(x_aa) - x_aa|| is at most
``safeguard`` times the residual of the point it came from; otherwise the plain image T(x_k) is taken and the
memory is cleared. A change of rho also clears the memory (the map changes).

Measured on small problems (issue 10 item 6, ``benchmarks/solver.py --rho-table``): ADMM on the cone program
stalls for thousands of iterations while the active set of neurons settles; Anderson acceleration cuts those
plateaus (see ``benchmarks/RESULTS.md``, "Phase I solver (issue 10 items 4-6)").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from coala_core.phase1.source import get_xp

#: the state fields the map reads (u only warm-starts an iterative u-step)
FIELDS = ("z", "lam", "s", "nu", "GtSnu")


def _diff(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(x.astype(np.float64, copy=False) - y.astype(np.float64, copy=False) for x, y in zip(a, b, strict=True))


def _dot(a: tuple[Any, ...], b: tuple[Any, ...]) -> float:
    xp = get_xp(a[0])
    return float(sum(float(xp.vdot(x.reshape(-1), y.reshape(-1))) for x, y in zip(a, b, strict=True)))


class Anderson:
    """Memory of the last ``memory`` (x, T(x)) pairs; :meth:`next` returns the state to iterate from."""

    def __init__(self, memory: int, safeguard: float = 1.0, regularization: float = 1e-10) -> None:
        self.memory, self.safeguard, self.reg = memory, safeguard, regularization
        self.reset()
        self.accepted = 0
        self.rejected = 0

    def reset(self) -> None:
        self.G: list[tuple[Any, ...]] = []  # residuals g_j = T(x_j) - x_j
        self.F: list[tuple[Any, ...]] = []  # images T(x_j)
        self.pending: Any = None  # (plain image to fall back to, its source's residual norm) while x_aa is tried
        self.rho: float | None = None

    @staticmethod
    def _vec(st: Any) -> tuple[Any, ...]:
        return tuple(getattr(st, f) for f in FIELDS)

    def next(self, x: Any, tx: Any) -> tuple[Any, float]:
        """Given the state ``x`` a step started from and its image ``tx = T(x)``, the state for the next step
        and the fixed-point residual norm ||T(x) - x||."""
        if self.rho is not None and tx.rho != self.rho:
            self.reset()
        self.rho = tx.rho
        g = _diff(self._vec(tx), self._vec(x))
        gnorm = float(np.sqrt(_dot(g, g)))
        if self.pending is not None:
            fallback, ref = self.pending
            self.pending = None
            if gnorm > self.safeguard * ref:  # the accelerated point was worse: take the plain image instead
                self.rejected += 1
                self.G, self.F = [], []
                return replace(fallback, k=tx.k, z_sum=tx.z_sum, n_avg=tx.n_avg), gnorm
            self.accepted += 1
        self.G.append(g)
        self.F.append(self._vec(tx))
        if len(self.G) > self.memory + 1:
            self.G.pop(0)
            self.F.pop(0)
        m = len(self.G) - 1
        if m < 1:
            return tx, gnorm
        dG = [_diff(self.G[j + 1], self.G[j]) for j in range(m)]
        dF = [_diff(self.F[j + 1], self.F[j]) for j in range(m)]
        A = np.array([[_dot(dG[i], dG[j]) for j in range(m)] for i in range(m)])
        rhs = np.array([_dot(dG[i], g) for i in range(m)])
        A += self.reg * max(float(np.trace(A)) / m, 1e-300) * np.eye(m)
        try:
            gamma = np.linalg.solve(A, rhs)
        except np.linalg.LinAlgError:
            self.G, self.F = [self.G[-1]], [self.F[-1]]
            return tx, gnorm
        if not np.all(np.isfinite(gamma)):
            self.G, self.F = [self.G[-1]], [self.F[-1]]
            return tx, gnorm
        fields = {}
        for idx, name in enumerate(FIELDS):
            cur = getattr(tx, name)
            val = cur.astype(np.float64, copy=True)
            for j in range(m):
                val -= gamma[j] * dF[j][idx]
            fields[name] = val.astype(cur.dtype, copy=False)
        self.pending = (tx, gnorm)
        return replace(tx, **fields), gnorm
