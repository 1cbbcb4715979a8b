"""The methods of a cross-validated comparison, as fitters for :func:`coala_core.evaluation.cv.cross_validate_pairs`:
the head's own recipe (a :class:`coala_core.engine.spec.HeadSpec`), the linear Bradley-Terry head, the AdamW
two-layer ReLU net and the zero-shot likelihood scores of the store (when it has them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coala_core.baselines.linear_bt import fit_linear_bt
from coala_core.baselines.relu_net import fit_relu_net
from coala_core.baselines.zero_shot import zero_shot_scorers


def cv_fitters(spec: Any, *, baselines: bool, width: int, seed: int, provenance: Mapping[str, Any], dim: int,
               head_label: str = "coala", memory_budget_mb: float | None = None) -> dict[str, Any]:
    """name -> fit(train, validation) -> scorer on pair sources (:func:`cross_validate_pairs`). ``spec`` None:
    no head of the recipe. The head streams its rows; the linear BT head and the AdamW net hold theirs, loaded
    only within ``memory_budget_mb`` (default: the spec's ``phase1.memory_budget_mb``; a ``ConfigError`` over it)."""
    from coala_core.evaluation.cv import rows_fitter

    if memory_budget_mb is None:
        memory_budget_mb = float(spec.phase1.memory_budget_mb) if spec is not None else float("inf")
    fitters: dict[str, Any] = {}
    if spec is not None:
        from coala_core.engine.fit import fit_head

        fitters[head_label] = lambda train, validation: fit_head(train, validation, spec).head
    if baselines:
        fitters["linear_bt"] = rows_fitter(lambda Fw, Fl, Vw, Vl: fit_linear_bt(Fw, Fl, Vw, Vl), memory_budget_mb,
                                           "linear_bt")
        fitters["relu_net_adamw"] = rows_fitter(
            lambda Fw, Fl, Vw, Vl: fit_relu_net(Fw, Fl, Vw, Vl, width=width, seed=seed), memory_budget_mb,
            "relu_net_adamw")
        for name, scorer in zero_shot_scorers(provenance, dim).items():
            fitters[name] = lambda *_a, s=scorer: s
    return fitters
