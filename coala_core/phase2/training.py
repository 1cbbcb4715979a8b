"""Train a reward head end to end on pooled features: Phase I beta path, then Phase II, both selected on the
validation split (issue 5 item 8, issue 6 item 5).

Inputs are arrays: chosen and rejected features (n, d) and the split label of each pair (n,), aligned by row.
The first layer is Phase I's recovered network at the beta with the best validation accuracy; Phase II refits
theta2 on the training pairs with beta, gamma and l2 chosen on the same validation pairs.
``first_layer: random`` replaces Phase I by a seeded random ReLU layer (an ablation and a development aid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from coala_core.config import StageConfig
from coala_core.errors import DataError, DimensionMismatchError
from coala_core.phase2.config import Phase2Config
from coala_core.phase2.fit import Phase2Result, select_phase2
from coala_core.phase2.head import RewardHead, random_relu_head

SPLITS = ("train", "validation", "test")


class TrainConfig(StageConfig):
    """Options of ``coala train`` beyond the Phase I and Phase II configs."""

    first_layer: Literal["phase1", "random"] = "phase1"
    random_width: int = Field(default=20, ge=1, description="m for first_layer: random")
    phase1_betas: list[float] | None = Field(default=None, description="explicit Phase I beta path")
    seed: int = 0


@dataclass
class TrainResult:
    head: RewardHead
    phase2: Phase2Result
    phase1: Any | None  # coala_core.phase1.Phase1Result
    first_layer: str

    def training_meta(self) -> dict[str, Any]:
        """The model-selection record stored in head.json and shown by the report."""
        p1 = self.phase1
        return {
            "first_layer": self.first_layer,
            "phase1_beta": None if p1 is None else float(p1.beta),
            "phase1_path": [] if p1 is None or p1.path is None else list(p1.path),
            "phase1_summary": {} if p1 is None else {k: v for k, v in p1.summary().items() if k != "path"},
            "phase2_summary": self.phase2.summary(),
            "phase2_selection": self.phase2.selection,
            "phase2_history": self.phase2.history,
        }


def split_rows(split: Sequence[str], name: str) -> np.ndarray:
    """Row indices whose split label is ``name``."""
    return np.flatnonzero(np.asarray(split, dtype=object) == name)


def align_to_store(store_ids: Sequence[str], pair_ids: Sequence[str], columns: Mapping[str, Sequence[Any]],
                   where: str = "pairs") -> dict[str, np.ndarray]:
    """Reorder per-pair columns (keyed by ``pair_ids``) to the store's row order; every store row needs a pair."""
    index = {str(p): i for i, p in enumerate(pair_ids)}
    missing = [str(s) for s in store_ids if str(s) not in index]
    if missing:
        raise DataError(f"{where}: {len(missing)} feature-store rows have no pair, e.g. pair_id {missing[0]!r}")
    order = np.array([index[str(s)] for s in store_ids], dtype=np.int64)
    return {k: np.asarray(v, dtype=object)[order] for k, v in columns.items()}


def phase1_head(res: Any) -> RewardHead:
    """The network recovered by a Phase I solve (``coala_core.phase1.Phase1Result``) as a reward head.

    Theta1 (d', m), theta2 (m,), the gates (d', P) (d' = d + 1 with a bias column) and the standardisation
    (mean, scale: (d,)) come from the solve; beta is 1 (Phase II sets its own). Raises ``DataError`` when the
    solve kept no neuron (m = 0).
    """
    if res.n_active == 0:
        raise DataError(
            f"Phase I at the selected beta {res.beta:.3g} kept no neurons; widen the beta path "
            "(path_min_ratio) or give phase1_betas"
        )
    return RewardHead(
        theta1=np.asarray(res.theta1, np.float64), theta2=np.asarray(res.theta2, np.float64),
        mean=np.asarray(res.mean, np.float64), scale=np.asarray(res.scale, np.float64),
        gates=np.asarray(res.gates, np.float64), beta=1.0, program=res.program, bias=bool(res.bias),
        pattern=np.asarray(res.neuron_pattern, np.int64), v=np.asarray(res.v, np.float64),
        w=np.asarray(res.w, np.float64),
    )


def _fit_phase1_head(Fw, Fl, Vw, Vl, phase1_config, betas) -> tuple[RewardHead, Any]:
    """Phase I beta path on the train pairs, selected on the validation pairs, as a head (and the result)."""
    from coala_core.phase1 import fit_phase1_path

    res = fit_phase1_path((Fw, Fl), config=phase1_config, validation=(Vw, Vl), betas=betas)
    return phase1_head(res), res


def train_head(
    chosen: np.ndarray,
    rejected: np.ndarray,
    split: Sequence[str],
    *,
    phase1_config: Any = None,
    phase2_config: Phase2Config | None = None,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Fit the first layer (Phase I path, or random) and theta2 (Phase II) on the ``train`` rows, selecting
    on the ``validation`` rows. ``chosen``, ``rejected``: (n, d); ``split``: (n,) labels."""
    config = config or TrainConfig()
    phase2_config = phase2_config or Phase2Config()
    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    if chosen.shape != rejected.shape or chosen.ndim != 2:
        raise DimensionMismatchError(f"features: chosen {chosen.shape} and rejected {rejected.shape} must be (n, d)")
    if len(split) != chosen.shape[0]:
        raise DimensionMismatchError(f"split: {len(split)} labels for {chosen.shape[0]} feature rows")
    tr, va = split_rows(split, "train"), split_rows(split, "validation")
    for name, rows in (("train", tr), ("validation", va)):
        if rows.size == 0:
            raise DataError(f"split: no '{name}' pairs; training selects on a validation split made by group")
    Fw, Fl, Vw, Vl = chosen[tr], rejected[tr], chosen[va], rejected[va]
    phase1 = None
    if config.first_layer == "phase1":
        head, phase1 = _fit_phase1_head(Fw, Fl, Vw, Vl, phase1_config, config.phase1_betas)
    else:
        F = np.vstack([Fw, Fl]).astype(np.float64)
        head = random_relu_head(chosen.shape[1], config.random_width, seed=config.seed, features=F)
    Hw, Hl, Hvw, Hvl = (head.hidden(a) for a in (Fw, Fl, Vw, Vl))
    p2 = select_phase2(Hw, Hl, Hvw, Hvl, phase2_config, theta_init=head.theta2)
    head = head.with_theta2(p2.theta2, p2.config.beta)
    return TrainResult(head=head, phase2=p2, phase1=phase1, first_layer=config.first_layer)
