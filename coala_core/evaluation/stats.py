"""Paired statistics for telling two reward heads apart on the same preference pairs.

Every pair gets a score per method: 1 when the chosen response has the larger reward, 0 when the rejected one
has, 1/2 on a tie (a head that cannot decide is at chance, not wrong; a zero head therefore scores 0.5).

* :func:`mcnemar_exact`: the exact McNemar test of "both methods are right equally often". On discordant pairs
  (one method right, the other wrong) the count where A is right is Binomial(n_discordant, 1/2) under the null;
  the two-sided p-value is ``min(1, 2 * P[X <= min(b, c)])``, the same as ``scipy.stats.binomtest(b, b + c)``.
  With ties scored 1/2 the test is the sign test on the per-pair score difference (a pair where one method
  ties and the other decides counts as discordant in the deciding method's direction); without ties it is
  McNemar's test exactly.
* :func:`paired_difference`: accuracy(A) - accuracy(B) with a percentile bootstrap interval that resamples
  whole groups (conversations), the same rows for both methods in every resample.
* :func:`compare_methods`: both, for every pair of methods, as rows for a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import binom

from coala_core.errors import DimensionMismatchError


def pair_scores(r_w: np.ndarray, r_l: np.ndarray) -> np.ndarray:
    """Per-pair score (n,): 1 if r_w > r_l, 0 if r_w < r_l, 1/2 on a tie."""
    r_w = np.asarray(r_w, np.float64).ravel()
    r_l = np.asarray(r_l, np.float64).ravel()
    if r_w.shape != r_l.shape:
        raise DimensionMismatchError(f"rewards: chosen has {r_w.shape[0]} values, rejected {r_l.shape[0]}")
    return np.where(r_w > r_l, 1.0, np.where(r_w < r_l, 0.0, 0.5))


@dataclass(frozen=True)
class McNemar:
    """Discordant counts (``b``: only A better, ``c``: only B better) and the exact two-sided p-value."""

    b: int
    c: int
    p_value: float

    @property
    def n_discordant(self) -> int:
        return self.b + self.c


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials at p = 1/2 (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(k, n - k), n, 0.5)))


def mcnemar_exact(score_a: np.ndarray, score_b: np.ndarray) -> McNemar:
    """Exact McNemar (sign) test on per-pair scores of two methods (see the module doc)."""
    a, b = np.asarray(score_a, np.float64).ravel(), np.asarray(score_b, np.float64).ravel()
    if a.shape != b.shape:
        raise DimensionMismatchError(f"paired scores: {a.shape[0]} and {b.shape[0]} pairs differ")
    d = a - b
    n_b, n_c = int(np.sum(d > 0)), int(np.sum(d < 0))
    return McNemar(n_b, n_c, binomial_two_sided(n_b, n_b + n_c))


def _group_members(groups: Sequence[Any] | np.ndarray | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    g = np.asarray(groups, dtype=str)
    if g.shape[0] != n:
        raise DimensionMismatchError(f"groups: {g.shape[0]} labels for {n} pairs")
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def group_bootstrap_means(values: np.ndarray, groups: Sequence[Any] | np.ndarray | None, *, n_boot: int = 1000,
                          seed: int = 0) -> np.ndarray:
    """Bootstrap distribution (n_boot, k) of the column means of ``values`` (n, k), resampling whole groups."""
    v = np.asarray(values, np.float64)
    v = v[:, None] if v.ndim == 1 else v
    members = _group_members(groups, v.shape[0])
    sums = np.stack([v[m].sum(axis=0) for m in members])  # (G, k)
    sizes = np.array([m.size for m in members], np.float64)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(members), len(members)), minlength=len(members))
                       for _ in range(n_boot)]).astype(np.float64)  # (n_boot, G)
    return (counts @ sums) / (counts @ sizes)[:, None]


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(samples, np.float64), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """A vs B on the same pairs: accuracies, their difference with a group-bootstrap interval, McNemar."""

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_lo: float
    ci_hi: float
    only_a: int
    only_b: int
    p_value: float
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(score_a: np.ndarray, score_b: np.ndarray, groups: Sequence[Any] | np.ndarray | None = None, *,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """mean(score_a - score_b) and its percentile group-bootstrap interval at ``level``."""
    a, b = np.asarray(score_a, np.float64).ravel(), np.asarray(score_b, np.float64).ravel()
    if a.shape != b.shape:
        raise DimensionMismatchError(f"paired scores: {a.shape[0]} and {b.shape[0]} pairs differ")
    boot = group_bootstrap_means(a - b, groups, n_boot=n_boot, seed=seed)[:, 0]
    lo, hi = interval(boot, level)
    return float(np.mean(a - b)), lo, hi


def compare_pair(name_a: str, score_a: np.ndarray, name_b: str, score_b: np.ndarray,
                 groups: Sequence[Any] | np.ndarray | None = None, *, n_boot: int = 1000, seed: int = 0) -> PairedComparison:
    diff, lo, hi = paired_difference(score_a, score_b, groups, n_boot=n_boot, seed=seed)
    test = mcnemar_exact(score_a, score_b)
    return PairedComparison(name_a, name_b, float(np.mean(score_a)), float(np.mean(score_b)), diff, lo, hi,
                            test.b, test.c, test.p_value, int(np.size(score_a)))


def compare_methods(rewards: Mapping[str, tuple[np.ndarray, np.ndarray]], groups: Sequence[Any] | np.ndarray | None = None,
                    *, n_boot: int = 1000, seed: int = 0) -> list[PairedComparison]:
    """Every pair of methods (in the mapping's order) on the same pairs: name -> (r_w, r_l) (n,) each."""
    scores = {name: pair_scores(*rw) for name, rw in rewards.items()}
    sizes = {s.size for s in scores.values()}
    if len(sizes) > 1:
        raise DimensionMismatchError(f"methods are scored on different numbers of pairs: {sorted(sizes)}")
    return [compare_pair(a, scores[a], b, scores[b], groups, n_boot=n_boot, seed=seed)
            for a, b in combinations(scores, 2)]
