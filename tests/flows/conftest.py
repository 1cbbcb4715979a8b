"""Fixtures for the pipeline tests: telemetry off, a tiny random model, a session-wide Prefect harness."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server per session, shared by the test folders that need one (a second harness
    nested in the first loses the client's events: task runs never reach the server)."""
    from prefect.testing.utilities import prefect_test_harness

    if os.environ.get("COALA_TEST_PREFECT_HARNESS"):  # started by another folder's conftest
        yield
        return
    with prefect_test_harness(server_startup_timeout=120):
        os.environ["COALA_TEST_PREFECT_HARNESS"] = "1"
        try:
            yield
        finally:
            os.environ.pop("COALA_TEST_PREFECT_HARNESS", None)


def tiny_overrides(model: Path, workdir: Path, **extra: object) -> dict[str, object]:
    return {"features.model": str(model), "run.workdir": str(workdir), "run.system_metrics": False, **extra}


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI for the whole process (an earlier test's store would
    leak into these); each test here uses the store of its own workdir or server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
