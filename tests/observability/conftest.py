"""Fixtures for the observability tests: telemetry off, a session-wide Prefect test server (a real one,
started on 127.0.0.1 by Prefect's test harness), a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from coala_testsupport.prefect import prefect_harness  # noqa: F401 - the session-wide Prefect test server

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coala_core.testing import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; each test uses the SQLite store of its tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
