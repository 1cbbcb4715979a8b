"""COALA core: pure numerics and data logic (no Prefect, no MLflow). Public names load lazily."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "fit_head": "coala_core.engine",
    "HeadSpec": "coala_core.engine",
    "score_source": "coala_core.engine",
    "fit_phase1": "coala_core.phase1",
    "fit_phase1_path": "coala_core.phase1",
    "Phase1Config": "coala_core.phase1",
    "Phase1Result": "coala_core.phase1",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coala_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
