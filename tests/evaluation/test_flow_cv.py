"""The pipeline's ``evaluation.cv_folds``: the evaluate stage cross-validates the head's recipe and the
baselines over all pairs, logs the CV metrics to MLflow and puts the comparison in the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from coala_testsupport.prefect import prefect_harness  # noqa: F401 - the session-wide Prefect test server

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.mark.usefixtures("prefect_harness")
def test_pipeline_cv_folds(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from coala_core.testing import save_tiny_lm
    from flows.pipeline import coala_pipeline
    from tasks.tracking import tracking_uri

    model = save_tiny_lm(tmp_path / "tiny")
    ov = {"features.model": str(model), "run.workdir": str(tmp_path / "work"), "run.system_metrics": False,
          "run.register_model": False, "evaluation.cv_folds": 3}
    state = coala_pipeline(str(REPO / "configs" / "tiny.yaml"), ov, return_state=True)
    assert state.is_completed()
    report = state.result()
    m = report.metrics
    for name in ("coala", "linear_bt", "relu_net_adamw"):
        assert 0.0 <= m[f"cv/{name}/accuracy"] <= 1.0
    assert 0.0 <= m["cv/coala_vs_linear_bt/mcnemar_p"] <= 1.0
    text = Path(report.files["report"]).read_text()
    assert "Cross-validated comparison (3 folds by group" in text and "McNemar" in text
    client = MlflowClient(tracking_uri(tmp_path / "work"))
    exp = client.get_experiment_by_name("coala-tiny")
    (ev,) = client.search_runs([exp.experiment_id], "tags.`coala.stage` = 'evaluate'")
    assert "cv/coala/accuracy" in ev.data.metrics
