"""Standardisation statistics and activation patterns (method.md section 4, issue 5 item 1).

Features are centred and scaled with training-row statistics (``mean``, ``scale``, shape (d,)), an optional
bias column of ones is appended, and P seeded gate vectors g_i ~ N(0, I) (``gates``, shape (d', P)) define
the patterns D_i = diag(1[X g_i >= 0]). The gate products are computed in float64 from the standardised
compute-dtype rows, the same way at fit and at scoring, so patterns agree across chunkings. Near-constant
and duplicate patterns are resampled from the same seeded generator and dropped if resampling fails.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.phase1.source import get_xp


def standardize_block(X: Any, mean: Any, scale: Any, bias: bool, dtype: Any) -> Any:
    """``(X - mean) / scale`` in ``dtype`` with a trailing column of ones when ``bias``; X (m, d) -> (m, d')."""
    xp = get_xp(X)
    Xs = xp.asarray(X, dtype=dtype)
    if mean is not None:
        Xs = (Xs - xp.asarray(mean, dtype=dtype)) / xp.asarray(scale, dtype=dtype)
    if bias:
        Xs = xp.concatenate([Xs, xp.ones((Xs.shape[0], 1), dtype=dtype)], axis=1)
    return Xs


def gate_signs(Xs: Any, gates: Any) -> Any:
    """Pattern signs 2 D - 1 in {+1, -1} of standardised rows ``Xs`` (m, d') for ``gates`` (d', P)."""
    xp = get_xp(Xs)
    prod = xp.asarray(Xs, dtype=xp.float64) @ xp.asarray(gates, dtype=xp.float64)
    return xp.where(prod >= 0, 1.0, -1.0).astype(Xs.dtype)


class MomentAccumulator:
    """Streaming mean and standard deviation in float64, shifted by the first block for stability."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, X: Any) -> None:
        xp = get_xp(X)
        X64 = xp.asarray(X, dtype=xp.float64)
        if self.shift is None:
            self.shift = X64.mean(axis=0)
            self.s1 = xp.zeros_like(self.shift)
            self.s2 = xp.zeros_like(self.shift)
        Z = X64 - self.shift
        self.s1 = self.s1 + Z.sum(axis=0)
        self.s2 = self.s2 + (Z * Z).sum(axis=0)
        self.n += int(X.shape[0])

    def result(self, floor: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) as float64 numpy arrays; near-constant features get scale 1."""
        from coala_core.phase1.source import to_numpy

        m1 = to_numpy(self.s1) / self.n
        var = np.maximum(to_numpy(self.s2) / self.n - m1 * m1, 0.0)
        mean = to_numpy(self.shift) + m1
        scale = np.sqrt(var)
        scale = np.where(scale > floor, scale, 1.0)
        return mean, scale


@dataclass
class PatternReport:
    """What pattern selection did: active share per kept pattern, counts of resampled and dropped gates."""

    shares: np.ndarray
    n_resampled: int = 0
    n_dropped: int = 0
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


def sample_gates(rng: np.random.Generator, dim: int, count: int) -> np.ndarray:
    """``count`` gate vectors g ~ N(0, I_dim) as columns, float64 (dim, count)."""
    return rng.standard_normal((dim, count))


class PatternStats:
    """Accumulates, over blocks, each gate's active count and a digest of its pattern bits."""

    def __init__(self, P: int) -> None:
        self.count = np.zeros(P, dtype=np.int64)
        self.n = 0
        self.digests = [hashlib.sha256() for _ in range(P)]

    def add(self, signs: Any) -> None:
        from coala_core.phase1.source import to_numpy

        bits = to_numpy(signs) > 0
        self.count += bits.sum(axis=0)
        self.n += bits.shape[0]
        for i in range(bits.shape[1]):
            self.digests[i].update(np.packbits(bits[:, i]).tobytes())

    def bad(self, min_share: float) -> list[int]:
        """Indices of near-constant patterns and of duplicates of an earlier pattern."""
        share = self.count / max(self.n, 1)
        out, seen = [], set()
        for i in range(len(self.count)):
            key = self.digests[i].hexdigest()
            if share[i] < min_share or share[i] > 1.0 - min_share or share[i] in (0.0, 1.0) or key in seen:
                out.append(i)
            else:
                seen.add(key)
        return out


def select_gates(pass_signs: Any, dim: int, P: int, seed: int, min_share: float, drop_degenerate: bool,
                 max_rounds: int) -> tuple[np.ndarray, PatternReport]:
    """Draw P seeded gates and resample degenerate ones.

    ``pass_signs(gates)`` must stream the training rows and yield sign blocks (m, P) for ``gates`` (dim, P).
    Returns ``gates`` (dim, P') with P' <= P and the :class:`PatternReport`.
    """
    rng = np.random.default_rng(seed)
    gates = sample_gates(rng, dim, P)
    report = PatternReport(shares=np.zeros(P))
    rounds = 0
    while True:
        stats = PatternStats(gates.shape[1])
        for signs in pass_signs(gates):
            stats.add(signs)
        report.shares = stats.count / max(stats.n, 1)
        bad = stats.bad(min_share) if drop_degenerate else []
        if not bad:
            break
        if rounds >= max_rounds:
            keep = [i for i in range(gates.shape[1]) if i not in set(bad)]
            report.n_dropped = len(bad)
            report.notes.append(f"dropped {len(bad)} degenerate patterns after {rounds} resampling rounds")
            warnings.warn(report.notes[-1], RuntimeWarning, stacklevel=3)
            gates = gates[:, keep]
            report.shares = report.shares[keep]
            break
        gates = gates.copy()
        gates[:, bad] = sample_gates(rng, dim, len(bad))
        report.n_resampled += len(bad)
        rounds += 1
    report.rounds = rounds
    return gates, report
