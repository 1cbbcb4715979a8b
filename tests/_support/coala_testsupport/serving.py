"""What the registry and serving tests (tests/serving) share besides their fixtures: the request rows and
the pipeline config that ``register_scorer`` reads. Imported from here, not ``from conftest import ...``
(with several test folders in one pytest run, ``conftest`` is whichever folder's was imported last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROWS = [
    {"prompt": "I think 7 x 8 is 54.", "response": "Let us check: how many groups of eight did you add?"},
    {"prompt": [{"role": "user", "content": "Julia has twelve spoons."}, {"role": "assistant", "content": "How many were used?"},
                {"role": "user", "content": "Three were used."}], "response": "So how many are left?"},
    {"prompt": "Can you explain how you got that number?", "response": "I added the spoons and subtracted the used ones."},
]


def pipeline_config(tiny_lm: Path, name: str = "scorer", policy: str = "not-worse") -> Any:
    """The pipeline config register_scorer reads (registered model name, alias, policy, backbone)."""
    from flows.config import PipelineConfig

    return PipelineConfig.build({"dataset": {"input": "unused.jsonl"}, "features": {"model": str(tiny_lm)},
                                 "run": {"registered_model": name, "model_alias": "champion", "alias_policy": policy}})
