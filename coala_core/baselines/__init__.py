"""Baseline reward heads on the same features as the convex head, so its value is measured, not assumed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from coala_core.baselines.linear_bt import LinearBTHead, fit_linear_bt
from coala_core.baselines.relu_net import ReluNetHead, fit_relu_net
from coala_core.evaluation.evaluate import Evaluation, evaluate_rewards


class Scorer(Protocol):
    @property
    def beta(self) -> float: ...

    def score(self, features: np.ndarray) -> np.ndarray: ...


def fit_baselines(
    Fw: np.ndarray, Fl: np.ndarray, Fw_val: np.ndarray, Fl_val: np.ndarray, *, width: int, seed: int = 0,
    epochs: int = 50, lr_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2),
) -> dict[str, Scorer]:
    """The linear Bradley-Terry head and the AdamW two-layer ReLU net of width ``width``."""
    return {
        "linear_bt": fit_linear_bt(Fw, Fl, Fw_val, Fl_val),
        "relu_net_adamw": fit_relu_net(Fw, Fl, Fw_val, Fl_val, width=width, seed=seed, epochs=epochs,
                                       lr_grid=lr_grid),
    }


def compare_heads(
    heads: Mapping[str, Scorer], Fw: np.ndarray, Fl: np.ndarray, *, sources: Sequence[str] | None = None,
    groups: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
) -> dict[str, Evaluation]:
    """Evaluate every head on the same pairs (n, d): name -> Evaluation."""
    return {
        name: evaluate_rewards(h.score(Fw), h.score(Fl), beta=h.beta, sources=sources, groups=groups,
                               n_boot=n_boot, seed=seed)
        for name, h in heads.items()
    }


def comparison_table(evals: Mapping[str, Evaluation]) -> list[dict[str, Any]]:
    """One row per head: accuracy with its 95% interval, sigmoid margin, ECE, log loss."""
    return [
        {"head": name, "accuracy": e.metrics["accuracy"], "ci_lo": e.ci["accuracy"][0], "ci_hi": e.ci["accuracy"][1],
         "sigmoid_margin": e.metrics["sigmoid_margin"], "ece": e.metrics["ece"], "log_loss": e.metrics["log_loss"],
         "n_pairs": int(e.metrics["n_pairs"])}
        for name, e in evals.items()
    ]


__all__ = ["LinearBTHead", "ReluNetHead", "Scorer", "compare_heads", "comparison_table", "fit_baselines",
           "fit_linear_bt", "fit_relu_net"]
