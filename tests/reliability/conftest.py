"""Fixtures for the reliability campaign: a tiny random LM, a small pairs file, the `coala` app in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from coala_core.testing import save_tiny_lm
from storage.pairs import from_records, write_pairs


def make_records(n: int = 24) -> list[dict]:
    splits = ["train", "train", "validation", "test"]
    return [{"pair_id": f"p{i:03d}", "prompt": f"What is {i} times eight?", "chosen": f"It is {8 * i}, count the groups.",
             "rejected": f"It is {8 * i + 1}.", "source": "unit", "group_id": f"g{i // 2}", "split": splits[(i // 2) % 4],
             "meta": {}} for i in range(n)]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.parquet"
    write_pairs(from_records(make_records()), path)
    return path


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from coala_cli.main import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
