"""One tiny pipeline run twice (the second with a Phase II grid changed through the typed run-form params)
under a real Prefect test server and a SQLite MLflow store; then what a viewer sees: run context on the
parent (source, git, dataset inputs with schemas, artifact URIs in tags), the whole report with images that
resolve from the artifact store (and inlined in the Prefect artifact and report.html), and
`coala runs compare` showing the chosen beta beside the configured one."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from coala_testsupport.pipeline import TINY_CONFIG

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_runs(prefect_harness, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    from flows.params import PipelineParams
    from flows.pipeline import coala_pipeline

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by an earlier test's mlflow.set_tracking_uri
    workdir = tmp_path_factory.mktemp("obs")
    ov = {"features.model": str(tiny_model), "run.workdir": str(workdir), "run.system_metrics": False}
    first = coala_pipeline(str(TINY_CONFIG), ov, return_state=True)
    second = coala_pipeline(str(TINY_CONFIG), ov, PipelineParams(phase2_l2_grid=[0.5]), return_state=True)
    assert first.is_completed() and second.is_completed()
    return workdir, first, second


def _parents(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("coala-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`coala.pipeline` = 'true'", order_by=["attributes.start_time ASC"])
    return client, runs


def test_parent_run_context(two_runs) -> None:
    workdir, _first, second = two_runs
    client, (p1, p2) = _parents(workdir)
    tags = p1.data.tags
    assert tags["mlflow.source.name"] and tags["mlflow.source.type"] in ("LOCAL", "JOB")
    assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
    assert tags["coala.head"].startswith(p1.info.artifact_uri.split("/", 1)[0]) and "://" in tags["coala.head"]
    assert tags["coala.report"] == f"{p1.info.artifact_uri}/report/report.md"
    head_run = tags["coala.head"].split("/artifacts/")[0]
    assert head_run and not Path(tags["coala.head"]).is_absolute()
    contexts = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in p1.inputs.dataset_inputs}
    assert {"dataset", "features-train", "features-validation", "features-test"} <= set(contexts)
    assert '"name": "chosen"' in contexts["features-train"].schema and '"tensor"' in contexts["features-train"].schema
    profile = json.loads(contexts["features-train"].profile)
    assert profile["dim"] > 0 and json.loads(profile["provenance"])["model_id"]
    assert '"name": "prompt"' in contexts["dataset"].schema
    # what training chose, beside what was configured
    assert float(tags["coala.chosen.phase1.beta"]) > 0 and float(p2.data.tags["coala.chosen.phase2.l2"]) == 0.5
    assert p2.data.params["phase2.l2_grid"] == "[0.5]"


def test_report_images_resolve_from_the_artifact_store(two_runs, tmp_path: Path) -> None:
    workdir, first, _second = two_runs
    client, (p1, _p2) = _parents(workdir)
    local = Path(client.download_artifacts(p1.info.run_id, "report", str(tmp_path)))
    md = (local / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md)
    assert links and all(not link.startswith(("/", "file:")) for link in links)
    for link in links:  # every image link of the logged report resolves beside it in the artifact store
        assert (local / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    html = (local / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == len(links) and all(base64.b64decode(u)[:4] == b"\x89PNG" for u in uris)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["coala-report"]), flow_run_id=ArtifactFilterFlowRunId(any_=[first.state_details.flow_run_id])))
    assert arts and arts[0].data.count("](data:image/png;base64,") == len(links)


def test_runs_compare_shows_chosen_beta_and_differing_params(two_runs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coala_cli.main import app

    workdir, _first, _second = two_runs
    _client, (p1, p2) = _parents(workdir)
    runner = CliRunner()
    out_html, out_png = tmp_path / "cmp.html", tmp_path / "cmp.png"
    res = runner.invoke(app, ["runs", "compare", "--workdir", str(workdir), "--experiment", "coala-tiny",
                              "--html", str(out_html), "--png", str(out_png)])
    assert res.exit_code == 0, res.output
    header, *rows = res.output.splitlines()[:3]
    assert "phase1.beta (chosen)" in header and "phase2.l2 (chosen)" in header and "phase2.l2_grid" in header
    assert any(p1.data.tags["coala.chosen.phase1.beta"] in row for row in rows)
    assert any("[0.5]" in row for row in rows)
    assert out_png.read_bytes()[:4] == b"\x89PNG" and "data:image/png;base64," in out_html.read_text()
    # an experiment that does not exist, and a workdir without a store: exit 1, nothing created
    res = runner.invoke(app, ["runs", "compare", "--workdir", str(workdir), "--experiment", "nope"])
    assert res.exit_code == 1 and "no MLflow experiment 'nope'" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["runs", "compare", "--workdir", str(empty)])
    assert res.exit_code == 1 and list(empty.iterdir()) == []
