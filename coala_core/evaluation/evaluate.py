"""Evaluate a reward head (or any rewards) on preference pairs: one call returns every metric of the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.evaluation.metrics import (
    bootstrap_ci,
    pair_summary,
    pairwise_accuracy,
    per_source,
    preference_probability,
    reliability_table,
    sigmoid_margin,
)
from coala_core.phase2.head import RewardHead

CI_METRICS = {
    "accuracy": pairwise_accuracy,
    "sigmoid_margin": sigmoid_margin,
    "rewards/margins": lambda r_w, r_l: float(np.mean(r_w - r_l)),
}


@dataclass
class Evaluation:
    """Metrics of one split: ``metrics`` (scalars), ``ci`` (name -> (lo, hi)), per-source summaries,
    the reliability table, and the per-pair rewards for plots."""

    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    by_source: dict[str, dict[str, float]]
    reliability: list[dict[str, float]]
    r_w: np.ndarray
    r_l: np.ndarray
    beta: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "by_source": self.by_source,
            "reliability": self.reliability,
            "beta": self.beta,
            **self.extra,
        }


def evaluate_rewards(
    r_w: np.ndarray,
    r_l: np.ndarray,
    *,
    beta: float = 1.0,
    sources: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    n_bins: int = 10,
    seed: int = 0,
) -> Evaluation:
    """All metrics of pairs with rewards ``r_w``, ``r_l`` (n,); bootstrap intervals resample ``groups``
    when given, else pairs."""
    r_w = np.asarray(r_w, dtype=np.float64)
    r_l = np.asarray(r_l, dtype=np.float64)
    metrics = pair_summary(r_w, r_l, beta, n_bins)
    ci = {
        name: bootstrap_ci(fn, r_w, r_l, n_boot=n_boot, seed=seed, groups=groups) for name, fn in CI_METRICS.items()
    }
    by_source = per_source(r_w, r_l, sources, beta) if sources is not None else {}
    reliability = reliability_table(preference_probability(r_w, r_l, beta), n_bins)
    return Evaluation(metrics, ci, by_source, reliability, r_w, r_l, float(beta))


def evaluate_head(
    head: RewardHead,
    pairs: Any,
    rejected: np.ndarray | None = None,
    *,
    sources: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score the pairs with ``head`` and evaluate. ``pairs`` is a pair source (a FeatureStore, a
    ``SubsetPairs`` of one) read chunk by chunk, or chosen features (n, d) with ``rejected`` (n, d).
    A NaN or infinite feature is a ``NonFiniteError`` naming the row."""
    from coala_core.engine.sources import as_pair_source, score_source

    source = as_pair_source(pairs if rejected is None else (pairs, rejected))
    r_w, r_l = score_source(head, source)
    return evaluate_rewards(r_w, r_l, beta=head.beta, sources=sources, groups=groups, n_boot=n_boot, seed=seed)
