"""Fixtures: tiny random Llama models (with and without a chat template) saved as safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_lm import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-plain", chat_template=False)
