"""Integration: what a user sees in the two UIs, through a headless browser.

Starts ``prefect server start`` and ``mlflow server`` (the fixture of tests/flows/test_integration_servers),
runs ``coala pipeline run`` twice against them (the second with a Phase II field changed), then checks the
Prefect API for the stages' own log lines in the flow run and takes Chromium screenshots of the flow-run
page and of MLflow's compare page of the two parent runs. A screenshot must not be blank (pixel spread and
number of colours) and the rendered DOM must name what the page is about. Chromium comes from the
distribution (``apt-get install chromium``, done by ``.ci/run``); without it the screenshot test skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from coala_testsupport.pipeline import REPO, TINY_CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from test_integration_servers import BIN, Servers, clean_env, start_servers  # noqa: E402

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """``prefect server start`` (its UI told where its API is: PREFECT_UI_API_URL) and ``mlflow server``."""
    with start_servers(tmp_path_factory.mktemp("servers")) as running:
        yield running


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """Load ``url`` in a fresh headless Chromium profile; returns the rendered DOM (and writes a PNG)."""
    with tempfile.TemporaryDirectory() as profile:
        args = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        if screenshot is not None:
            out = subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=180)
            assert screenshot.is_file(), out.stderr[-2000:]
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180)
        return dom.stdout


def not_blank(png: Path) -> tuple[float, int]:
    """(pixel standard deviation, distinct colours) of a screenshot."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    return float(img.std()), colours


def white_fraction(png: Path) -> float:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    return float((img.min(axis=2) > 245).mean())


def _env(srv: Servers) -> dict[str, str]:
    return clean_env(PREFECT_API_URL=srv.prefect_api, MLFLOW_TRACKING_URI=srv.mlflow_uri,
                     PREFECT_HOME=str(srv.root / "ui-home"))


def _run_pipeline(srv: Servers, tiny_model: Path, workdir: Path, *extra: str) -> str:
    env = _env(srv)
    cmd = [str(BIN / "coala"), "pipeline", "run", "--config", str(TINY_CONFIG), "--quiet",
           "--set", f"features.model={tiny_model}", "--set", f"run.workdir={workdir}",
           "--set", "run.system_metrics=false", *extra]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_flow_run_logs_and_ui_screenshots(servers: Servers, tiny_model: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workdir = servers.root / "ui-work"
    _run_pipeline(servers, tiny_model, workdir, "--set", "phase1.max_iter=5")  # short solves: Phase I warns
    printed = _run_pipeline(servers, tiny_model, workdir, "--set", "phase1.max_iter=5", "--set", "phase2.l2_grid=[0.5]")
    # the compare hint it printed runs as is (same shell, same directory) and shows the chosen beta
    (hint,) = [line.split(":", 1)[1].strip() for line in printed.splitlines() if line.startswith("compare runs:")]
    assert "--config" in hint, hint
    out = subprocess.run(hint, shell=True, cwd=REPO, env=_env(servers), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "phase1.beta (chosen)" in out.stdout, out.stdout + out.stderr

    with temporary_settings({PREFECT_API_URL: servers.prefect_api}), get_client(sync_client=True) as client:
        (top, *_) = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_task_run_id={"is_null_": True}),
                                          sort=FlowRunSort.START_TIME_ASC)
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[top.id])))
        ids = [top.id, *[f.id for f in subflows]]
        deadline = time.monotonic() + 30
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
            warned = [lg for lg in logs if "did not reach tol" in lg.message]
            if warned or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert warned and warned[0].task_run_id is not None and warned[0].level == 30
    assert any("Phase I beta" in lg.message and lg.task_run_id for lg in logs)  # INFO lines of the core

    ui = servers.prefect_api.removesuffix("/api")
    shot = tmp_path / "prefect-flow-run.png"
    dom = chromium(f"{ui}/runs/flow-run/{top.id}", screenshot=shot)
    std, colours = not_blank(shot)
    print(f"prefect flow-run page: pixel std {std:.1f}, {colours} colours")
    assert std > 5 and colours > 50 and top.name in dom
    # the report artifact shows its plots: images inlined, rendered by the UI
    with temporary_settings({PREFECT_API_URL: servers.prefect_api}), get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        (report, *_) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["coala-report"])))
    shot = tmp_path / "prefect-report-artifact.png"
    chromium(f"{ui}/artifacts/artifact/{report.id}", screenshot=shot)
    std, colours = not_blank(shot)
    white = white_fraction(shot)  # the plots are white panels on the UI's dark page (text alone: ~0.2 %)
    print(f"prefect report artifact page: pixel std {std:.1f}, {colours} colours, {100 * white:.1f} % white")
    assert std > 5 and colours > 50 and white > 0.03

    mlflow = MlflowClient(servers.mlflow_uri)
    exp = mlflow.get_experiment_by_name("coala-tiny")
    parents = mlflow.search_runs([exp.experiment_id], "tags.`coala.pipeline` = 'true'")
    assert len(parents) >= 2
    run_ids = [p.info.run_id for p in parents[:2]]
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp.experiment_id])})
    shot = tmp_path / "mlflow-compare.png"
    dom = chromium(f"{servers.mlflow_uri}/#/compare-runs?{query}", screenshot=shot)
    std, colours = not_blank(shot)
    print(f"mlflow compare page: pixel std {std:.1f}, {colours} colours")
    assert std > 5 and colours > 50 and parents[0].info.run_name in dom


def test_serve_timezone_concurrency_and_typed_form(servers: Servers, tiny_model: Path) -> None:
    """``coala serve --timezone --concurrency --overlap skip``: the deployment's cron carries the time zone,
    one run at a time with new runs cancelled while one is active, and the run form's schema is typed."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = clean_env(PREFECT_API_URL=servers.prefect_api, PREFECT_HOME=str(servers.root / "serve-tz-home"))
    servers.procs.start("coala-serve-tz", [str(BIN / "coala"), "serve", "--config", str(TINY_CONFIG), "--cron", "0 3 * * *",
                                           "--timezone", "Europe/Paris", "--concurrency", "1", "--overlap", "skip",
                                           "--name", "tz", "--set", f"features.model={tiny_model}"], env)
    try:
        with temporary_settings({PREFECT_API_URL: servers.prefect_api}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while True:
                servers.procs.alive("coala-serve-tz")
                try:
                    dep = client.read_deployment_by_name("coala-pipeline/tz")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, servers.procs.tail("coala-serve-tz")
                    time.sleep(0.5)
    finally:
        servers.procs.stop("coala-serve-tz")
    schedule = dep.schedules[0].schedule
    assert schedule.cron == "0 3 * * *" and schedule.timezone == "Europe/Paris"
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options is not None and dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    form = dep.parameter_openapi_schema
    fields = form["definitions"]["PipelineParams"]["properties"]
    assert fields["dataset_limit"]["anyOf"][0] == {"minimum": 1, "type": "integer"}
    assert fields["phase2_l2_grid"]["anyOf"][0]["items"]["exclusiveMinimum"] == 0
