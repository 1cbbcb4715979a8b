"""Fixtures: one tiny random Llama model (saved once per session) and a handful of preference rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from coala_core.testing import save_tiny_lm


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="session")
def loaded(tiny_lm_dir: Path):
    from coala_core.features.config import ExtractionConfig
    from coala_core.llm_baselines import load_lm

    return load_lm(ExtractionConfig.build({"model": str(tiny_lm_dir), "max_tokens": 64}))


@pytest.fixture()
def rows() -> list[dict]:
    prompts = ["What is seven times eight?", "Can you explain how you got that number?",
               "I added the spoons and subtracted the ones she used.", "Julia has twelve spoons."]
    return [
        {"pair_id": f"p{i}", "prompt": [{"role": "user", "content": prompts[i % 4]}],
         "chosen": "The answer is fifty six." if i % 2 else "Show me each step.",
         "rejected": "I added the spoons." if i % 2 else "Let us count the groups together."}
        for i in range(8)
    ]
