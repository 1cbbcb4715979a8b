"""Zero-shot baselines from the likelihood columns of a store: the frozen model's own judgement.

With ``logprob_features`` every store row ends in ``loglik_mean`` (mean log p(response token | prompt)) and
``pmi_mean`` (that minus the mean log p(response token | empty conversation)). Scored alone, the reward of a
text is one of these columns: chosen wins when its value is higher. No training, no parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coala_core.errors import ConfigError
from coala_core.features.config import AUX_COLUMNS, feature_columns


def aux_column_index(provenance: Mapping[str, Any], name: str) -> int:
    """Column index of ``name`` (``loglik_mean`` or ``pmi_mean``) in rows of a store with this provenance."""
    if name not in AUX_COLUMNS:
        raise ConfigError(f"zero-shot score: expected one of {list(AUX_COLUMNS)}, got {name!r}")
    cols = feature_columns(dict(provenance))
    if name not in cols:
        raise ConfigError("the features have no likelihood columns; extract them with --logprob-features")
    return cols[name][0]


def zero_shot_rewards(chosen: np.ndarray, rejected: np.ndarray, provenance: Mapping[str, Any],
                      score: str = "pmi_mean") -> tuple[np.ndarray, np.ndarray]:
    """(reward of chosen, reward of rejected), each (n,) float64: the ``score`` column of each row."""
    j = aux_column_index(provenance, score)
    return np.asarray(chosen, dtype=np.float64)[:, j], np.asarray(rejected, dtype=np.float64)[:, j]


def strip_aux(features: np.ndarray, provenance: Mapping[str, Any]) -> np.ndarray:
    """The rows without the likelihood columns (the hidden-state blocks only)."""
    cols = feature_columns(dict(provenance))
    stop = max(hi for name, (_, hi) in cols.items() if name not in AUX_COLUMNS)
    return np.asarray(features)[:, :stop]
