"""Fixtures for the pipeline tests: telemetry off, a tiny random model, a session-wide Prefect harness."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from coala_testsupport.prefect import prefect_harness  # noqa: F401 - the session-wide Prefect test server

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI for the whole process (an earlier test's store would
    leak into these); each test here uses the store of its own workdir or server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
