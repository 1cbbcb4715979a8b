"""A tiny random Llama (hidden size 32) without a chat template, saved as safetensors, for flow tests."""

from __future__ import annotations

from pathlib import Path

from coala_core.testing import save_tiny_lm


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    return save_tiny_lm(path, chat_template=False, seed=seed)
