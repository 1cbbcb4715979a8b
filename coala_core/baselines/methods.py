"""The methods of a cross-validated comparison, as fitters for :func:`coala_core.evaluation.cv.cross_validate`:
the head's own recipe (a :class:`coala_core.engine.spec.HeadSpec`), the linear Bradley-Terry head, the AdamW
two-layer ReLU net and the zero-shot likelihood scores of the store (when it has them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coala_core.baselines.linear_bt import fit_linear_bt
from coala_core.baselines.relu_net import fit_relu_net
from coala_core.baselines.zero_shot import zero_shot_scorers


def cv_fitters(spec: Any, *, baselines: bool, width: int, seed: int, provenance: Mapping[str, Any], dim: int,
               head_label: str = "coala") -> dict[str, Any]:
    """name -> fit(train_w, train_l, val_w, val_l) -> scorer. ``spec`` None: no head of the recipe."""
    fitters: dict[str, Any] = {}
    if spec is not None:
        from coala_core.engine.fit import fit_head

        fitters[head_label] = lambda Fw, Fl, Vw, Vl: fit_head((Fw, Fl), (Vw, Vl), spec).head
    if baselines:
        fitters["linear_bt"] = lambda Fw, Fl, Vw, Vl: fit_linear_bt(Fw, Fl, Vw, Vl)
        fitters["relu_net_adamw"] = lambda Fw, Fl, Vw, Vl: fit_relu_net(Fw, Fl, Vw, Vl, width=width, seed=seed)
        for name, scorer in zero_shot_scorers(provenance, dim).items():
            fitters[name] = lambda *_a, s=scorer: s
    return fitters
