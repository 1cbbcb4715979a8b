"""Shared fixtures of the dataset tests: the fixture folder and the bundled data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fixtures() -> Path:
    return Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def bundled() -> Path:
    return REPO / "data"
