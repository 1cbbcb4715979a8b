"""Metrics of a reward head on held-out pairs (method.md section 6).

Inputs are the rewards of the chosen and rejected response of each pair, ``r_w`` and ``r_l`` (n,).

* pairwise accuracy: share of pairs with ``r_w > r_l``, a tie counting 1/2 (a head that cannot decide is at
  chance: a zero head reads 0.5, not 0.0);
* TRL's names: ``rewards/chosen`` (mean r_w), ``rewards/rejected`` (mean r_l), ``rewards/margins``
  (mean r_w - r_l), ``rewards/accuracies`` (TRL's own definition: ``r_w > r_l`` strictly, a tie is wrong). A COALA margin is a reward difference of the
  head, not DPO's log-ratio to a reference model: plots say which margin they show;
* the paper's sigmoid margin: mean sigmoid(r_w - r_l), a probability;
* calibration of the head's preference probability ``p = sigmoid(beta * (r_w - r_l))``: the prediction for a
  pair is the response with the larger reward, its confidence ``max(p, 1 - p)``, correct when ``p > 1/2``
  (1/2 for a tie). The reliability table bins confidence in [1/2, 1]; ECE is the count-weighted mean of
  ``|accuracy - confidence|`` over bins;
* per-source breakdown and percentile bootstrap 95% intervals (resampling pairs, or whole groups);
* monotonicity of a curve over iterations (the paper's stability claim).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import spearmanr

from coala_core.errors import DimensionMismatchError


def _pairs(r_w: np.ndarray, r_l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r_w = np.asarray(r_w, dtype=np.float64).ravel()
    r_l = np.asarray(r_l, dtype=np.float64).ravel()
    if r_w.shape != r_l.shape:
        raise DimensionMismatchError(f"rewards: chosen has {r_w.shape[0]} values, rejected {r_l.shape[0]}")
    return r_w, r_l


def pairwise_accuracy(r_w: np.ndarray, r_l: np.ndarray) -> float:
    """Share of pairs the head orders right; a tie counts 1/2."""
    r_w, r_l = _pairs(r_w, r_l)
    return float(np.mean((r_w > r_l) + 0.5 * (r_w == r_l))) if r_w.size else float("nan")


def sigmoid_margin(r_w: np.ndarray, r_l: np.ndarray) -> float:
    r_w, r_l = _pairs(r_w, r_l)
    return float(np.mean(expit(r_w - r_l))) if r_w.size else float("nan")


def trl_rewards(r_w: np.ndarray, r_l: np.ndarray) -> dict[str, float]:
    r_w, r_l = _pairs(r_w, r_l)
    return {
        "rewards/chosen": float(np.mean(r_w)),
        "rewards/rejected": float(np.mean(r_l)),
        "rewards/margins": float(np.mean(r_w - r_l)),
        "rewards/accuracies": float(np.mean(r_w > r_l)) if r_w.size else float("nan"),
    }


def preference_probability(r_w: np.ndarray, r_l: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """``p = sigmoid(beta * (r_w - r_l))`` (n,): the head's probability that the chosen response wins."""
    r_w, r_l = _pairs(r_w, r_l)
    return expit(beta * (r_w - r_l))


def reliability_table(p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Bins of confidence ``max(p, 1-p)`` over [1/2, 1]: lo, hi, count, confidence, accuracy (empty bins kept
    with count 0 and NaN means)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    conf = np.maximum(p, 1.0 - p)
    correct = np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        k = int(sel.sum())
        rows.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": k,
            "confidence": float(conf[sel].mean()) if k else float("nan"),
            "accuracy": float(correct[sel].mean()) if k else float("nan"),
        })
    return rows


def expected_calibration_error(p: np.ndarray, n_bins: int = 10) -> float:
    table = reliability_table(p, n_bins)
    n = sum(r["count"] for r in table)
    if n == 0:
        return float("nan")
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in table if r["count"]))


def log_loss(p: np.ndarray) -> float:
    """Mean -log p of the chosen response winning (clipped at 1e-15)."""
    return float(np.mean(-np.log(np.clip(np.asarray(p, np.float64), 1e-15, 1.0))))


def pair_summary(r_w: np.ndarray, r_l: np.ndarray, beta: float = 1.0, n_bins: int = 10) -> dict[str, float]:
    """All scalar metrics of one set of pairs."""
    r_w, r_l = _pairs(r_w, r_l)
    p = preference_probability(r_w, r_l, beta)
    return {
        "n_pairs": float(r_w.size),
        "accuracy": pairwise_accuracy(r_w, r_l),
        "sigmoid_margin": sigmoid_margin(r_w, r_l),
        **trl_rewards(r_w, r_l),
        "ece": expected_calibration_error(p, n_bins),
        "log_loss": log_loss(p),
    }


def per_source(r_w: np.ndarray, r_l: np.ndarray, sources: Sequence[str], beta: float = 1.0) -> dict[str, dict]:
    """:func:`pair_summary` for each distinct source label (sorted)."""
    r_w, r_l = _pairs(r_w, r_l)
    src = np.asarray(sources, dtype=object)
    if src.shape != r_w.shape:
        raise DimensionMismatchError(f"sources: expected {r_w.shape[0]} labels, got {src.shape[0]}")
    return {str(s): pair_summary(r_w[src == s], r_l[src == s], beta) for s in sorted(set(src.tolist()))}


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` at ``level``.

    Rows are resampled with replacement; with ``groups`` (n,) whole groups are resampled instead (pairs from
    one conversation are not independent).
    """
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    stats = np.empty(n_boot)
    for b in range(n_boot):
        if groups is None:
            rows = rng.integers(0, n, size=n)
        else:
            rows = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
        stats[b] = statistic(*(a[rows] for a in arrays))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def monotonicity(curve: Sequence[float] | np.ndarray, increasing: bool = True) -> dict[str, float]:
    """How monotone a curve over iterations is.

    ``share_monotone``: share of successive steps that do not go the wrong way; ``spearman``: rank
    correlation with the iteration index (sign flipped for a decreasing curve); ``max_reversal``: the largest
    single step the wrong way (0 for a monotone curve).
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.size < 2:
        return {"share_monotone": 1.0, "spearman": float("nan"), "max_reversal": 0.0}
    steps = np.diff(y) if increasing else -np.diff(y)
    rho = spearmanr(np.arange(y.size), y).statistic if np.ptp(y) > 0 else float("nan")
    return {
        "share_monotone": float(np.mean(steps >= 0)),
        "spearman": float(rho if increasing else -rho),
        "max_reversal": float(max(0.0, -steps.min())),
    }
