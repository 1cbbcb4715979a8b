"""Fixtures for the registry and serving tests: a tiny LM, heads on its features, an MLflow SQLite store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

def make_head(tiny_lm: Path, out: Path, *, seed: int, val_accuracy: float | None) -> Path:
    """A random ReLU head on the tiny LM's features, with the given validation accuracy in head.json."""
    from coala_core.features import ExtractionConfig, FeatureExtractor, load_model
    from coala_core.phase2.head import random_relu_head
    from storage.heads import save_head

    cfg = ExtractionConfig.build(model=str(tiny_lm), max_tokens=64, device="cpu", dtype="float32", chunk_rows=32)
    ex = FeatureExtractor(load_model(cfg), cfg)
    head = random_relu_head(ex.loaded.hidden_size, 8, seed=seed)
    head = head.with_theta2(np.random.default_rng(seed).standard_normal(8), beta=1.0)
    save_head(out, head, provenance={**ex.provenance("d" * 64), "split": "train"}, metrics={"val_accuracy": val_accuracy})
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coala_core.testing import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-llama")


@pytest.fixture(scope="session")
def registry(tmp_path_factory, tiny_lm):
    """A SQLite MLflow store (``<project>/.coala/mlflow.db``) with a parent run:
    (tracking context, client, make(seed, acc) -> HeadRef, uri)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tasks.refs import HeadRef
    from tasks.stage import TrackingContext

    d = tmp_path_factory.mktemp("project")  # laid out like a project folder: the store in .coala/mlflow.db
    (d / ".coala").mkdir()
    uri = f"sqlite:///{d / '.coala' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("reg", artifact_location=(d / "artifacts").as_uri())
    run = client.create_run(exp)
    tracking = TrackingContext(uri=uri, experiment_id=exp, parent_run_id=run.info.run_id, system_metrics=False)

    def make(seed: int, acc: float | None) -> HeadRef:
        path = make_head(tiny_lm, d / f"head{seed}", seed=seed, val_accuracy=acc)
        return HeadRef(uri=str(path), digest=f"{seed:064d}", phase="phase2", dim=32, width=8)

    return tracking, client, make, uri


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI for the whole process (an earlier test's store would
    leak into these); each test here registers into and reads from its own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
