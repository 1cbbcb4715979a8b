"""Linear Bradley-Terry head on LM feature differences: the simplest baseline on the same features.

With standardised features z = (f - mean) / scale (d,), the reward is r = z . w and w (d,) minimises

    (1/n) sum_i log(1 + exp(-(z_w,i - z_l,i) . w)) + (l2 / 2) ||w||^2,

solved to a gradient-norm certificate by the Phase II Newton solver; l2 is chosen on the validation pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.errors import DimensionMismatchError
from coala_core.phase2.losses import build_design
from coala_core.phase2.solvers import newton


@dataclass(frozen=True)
class LinearBTHead:
    w: np.ndarray  # (d,)
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    l2: float
    beta: float = 1.0
    selection: list[dict[str, Any]] = field(default_factory=list)

    def score(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.w.shape[0]:
            raise DimensionMismatchError(f"features: expected (n, {self.w.shape[0]}), got {f.shape}")
        return ((f - self.mean) / self.scale) @ self.w


def standardiser(Fw: np.ndarray, Fl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (d,) over all chosen and rejected training rows."""
    F = np.vstack([Fw, Fl]).astype(np.float64)
    scale = F.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return F.mean(axis=0), scale


def fit_linear_bt(
    Fw: np.ndarray,
    Fl: np.ndarray,
    Fw_val: np.ndarray,
    Fl_val: np.ndarray,
    *,
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    tol: float = 1e-8,
) -> LinearBTHead:
    """Fit the linear BT head for each l2 of the grid; keep the best validation accuracy (then log loss)."""
    mean, scale = standardiser(Fw, Fl)
    A = (np.asarray(Fw, np.float64) - np.asarray(Fl, np.float64)) / scale
    D_val = (np.asarray(Fw_val, np.float64) - np.asarray(Fl_val, np.float64)) / scale
    table, best, best_key = [], None, None
    w = np.zeros(A.shape[1])
    for l2 in sorted(l2_grid, reverse=True):  # warm start from the most regularised
        design = build_design(A, np.zeros_like(A), beta=1.0, l2=l2)
        w = newton(design, w, tol=tol, max_iter=200).theta2
        margin = D_val @ w
        row = {
            "l2": l2, "val_accuracy": float(np.mean(margin > 0)),
            "val_log_loss": float(np.mean(np.logaddexp(0.0, -margin))),
            "train_accuracy": float(np.mean(A @ w > 0)),
        }
        table.append(row)
        key = (-row["val_accuracy"], row["val_log_loss"])
        if best_key is None or key < best_key:
            best_key, best = key, (w.copy(), l2)
    if best is None:
        raise ValueError("l2_grid: empty; give at least one l2 value")
    for row in table:
        row["chosen"] = row["l2"] == best[1]
    return LinearBTHead(w=best[0], mean=mean, scale=scale, l2=best[1], selection=table)
