"""The README's first command, `make demo`, run exactly as written (slow: the whole pipeline on the bundled
SmolLM2-135M and 1,200 MathDial triplets, 15-60 minutes on a 2-core CPU)."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
from coala_testsupport.readme import readme_commands

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_demo_as_written_in_the_readme():
    lines = [ln for ln in readme_commands("Two commands") if ln.split("#")[0].strip() == "make demo"]
    assert len(lines) == 1, "README: `make demo` is no longer the first of the two commands"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(["bash", "-c", lines[0]], cwd=REPO, env=env, capture_output=True, text=True, timeout=4 * 3600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{REPO / '.coala' / 'mlflow.db'}",
                          registry_uri=f"sqlite:///{REPO / '.coala' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("coala")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`coala.pipeline` = 'true'", order_by=["start_time DESC"],
                              max_results=1)
    assert runs and runs[0].info.status == "FINISHED"
    acc = runs[0].data.metrics["test/accuracy"]
    assert math.isfinite(acc) and acc > 0.5, f"the demo's head is at chance on its test pairs: {acc}"
    version = client.get_model_version_by_alias("coala-reward-head", "champion")
    assert version.run_id
