"""Zero-shot baselines: the frozen LM's own judgement of a response, read from a likelihood column of the
feature store (``--logprob-features``): ``pmi_mean`` (log p(response | prompt) - log p(response | no prompt),
per token) or ``loglik_mean`` (mean log p(response | prompt)). Nothing is fit; the chosen response wins when
its column value is higher (a tie counts 1/2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from coala_core.errors import DataError, DimensionMismatchError

ZERO_SHOT_COLUMNS = ("pmi_mean", "loglik_mean")


@dataclass(frozen=True)
class ColumnScorer:
    """The reward is one feature column: ``score(F) = F[:, index]``."""

    name: str
    index: int
    dim: int
    beta: float = 1.0

    def score(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise DimensionMismatchError(f"features: expected (n, {self.dim}), got {f.shape}")
        return f[:, self.index].astype(np.float64)


def zero_shot_scorers(provenance: Mapping[str, Any], dim: int) -> dict[str, ColumnScorer]:
    """``zero_shot_pmi`` and ``zero_shot_loglik`` for a store with likelihood columns; empty otherwise."""
    if not provenance.get("logprob_features"):
        return {}
    from coala_core.features.config import feature_columns

    cols = feature_columns(dict(provenance))
    out = {}
    for col in ZERO_SHOT_COLUMNS:
        if col not in cols:
            raise DataError(f"feature store: provenance says logprob_features but has no {col!r} column")
        start = cols[col][0]
        if start >= dim:
            raise DimensionMismatchError(f"feature store: column {col!r} at {start} is outside its {dim} columns")
        out[f"zero_shot_{col.removesuffix('_mean')}"] = ColumnScorer(col, start, dim)
    return out
