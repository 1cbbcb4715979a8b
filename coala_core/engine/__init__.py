"""The training engine: one public entry, :func:`fit_head`, over row sources (a FeatureStore or arrays).

``fit_head(train, validation, spec)`` fits the Phase I first layer (beta path chosen on the validation
pairs) and refits theta2 (Phase II), reading the features chunk by chunk; ``coala train`` and the pipeline
call the same functions and write the same ``head.json`` record. :func:`score_source` scores pairs the same
streamed way; :mod:`coala_core.engine.network` holds the one forward pass of a trained head; and
:mod:`coala_core.engine.compute` the one FLOP convention and process meter. Public names load lazily, so
importing the package does not import the solvers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "HeadSpec": "coala_core.engine.spec",
    "TrainConfig": "coala_core.engine.spec",
    "TrainingRecord": "coala_core.engine.record",
    "TrainedHead": "coala_core.engine.fit",
    "fit_head": "coala_core.engine.fit",
    "fit_first_layer": "coala_core.engine.fit",
    "fit_output_layer": "coala_core.engine.fit",
    "resolve_backend": "coala_core.engine.backend",
    "score_source": "coala_core.engine.sources",
    "hidden_pairs": "coala_core.engine.sources",
    "SubsetPairs": "coala_core.engine.sources",
    "as_pair_source": "coala_core.engine.sources",
    "forward": "coala_core.engine.network",
    "hidden": "coala_core.engine.network",
    "measure": "coala_core.engine.compute",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coala_core.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
