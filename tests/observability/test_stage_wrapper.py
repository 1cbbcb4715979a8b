"""The one stage wrapper (tasks.stage.stage_task) under a real Prefect test server and a SQLite MLflow store:
fresh and cached stage runs look alike (name, coala.stage, params, datasets), a failed body ends its run
FAILED with the error's text, and the core's log records and warnings reach the Prefect flow run's logs with
the stage's task run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from coala_testsupport.pipeline import TINY_CONFIG

from coala_core.errors import DataError


def _tracking(tmp_path: Path, parent: bool = True):
    from tasks.stage import TrackingContext
    from tasks.tracking import client_for, ensure_experiment, start_run

    client = client_for(tmp_path)
    exp = ensure_experiment(client, "observability", tmp_path)
    parent_id = start_run(client, exp, "parent", tags={"coala.pipeline": "true"}).run_id if parent else None
    return client, TrackingContext(uri=client._tracking_client.tracking_uri, experiment_id=exp,
                                   parent_run_id=parent_id, system_metrics=False)


def test_cached_and_fresh_stage_runs_share_name_tags_and_params(prefect_harness, tmp_path: Path) -> None:
    from prefect import flow

    from flows.config import PipelineConfig
    from tasks.data import build_dataset_task
    from tasks.stage import run_stage

    cfg = PipelineConfig.from_yaml(TINY_CONFIG, {"run.workdir": str(tmp_path)})
    client, tracking = _tracking(tmp_path)

    @flow
    def twice() -> list:
        return [run_stage(build_dataset_task, stage="datasets", workdir=tmp_path, tracking=tracking,
                          source=Path(cfg.dataset.input).resolve(), builder="edufeedback",
                          config=cfg.dataset.builder_config()) for _ in range(2)]

    first, second = twice()
    assert first.digest == second.digest and first.mlflow_run_id == second.mlflow_run_id
    runs = client.search_runs([tracking.experiment_id], f"tags.mlflow.parentRunId = '{tracking.parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    fresh, cached = runs
    assert fresh.info.run_name == cached.info.run_name == "build_dataset"
    assert fresh.data.tags["coala.stage"] == cached.data.tags["coala.stage"] == "build_dataset"
    assert (fresh.data.tags["coala.cached"], cached.data.tags["coala.cached"]) == ("false", "true")
    assert cached.data.tags["coala.cached_from"] == fresh.info.run_id
    assert fresh.data.params == cached.data.params and fresh.data.params["dataset.builder"] == "edufeedback"
    # metering by the wrapper, carried into the reference and onto the cached run
    assert fresh.data.metrics["wall_s"] > 0 and fresh.data.metrics["peak_rss_mb"] > 0
    assert first.metrics["wall_s"] == fresh.data.metrics["wall_s"] == cached.data.metrics["wall_s"]
    # the same datasets, with the pairs schema on the output
    def datasets(run) -> dict[str, object]:
        return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in run.inputs.dataset_inputs}

    fresh_ds, cached_ds = datasets(fresh), datasets(cached)
    assert set(fresh_ds) == set(cached_ds) == {"source", "output"}
    assert '"name": "prompt"' in fresh_ds["output"].schema and '"type": "array"' in fresh_ds["output"].schema
    assert fresh_ds["output"].digest == cached_ds["output"].digest == first.digest[:36]


def test_failed_body_ends_run_failed_with_error_tag(tmp_path: Path) -> None:
    from flows.config import PipelineConfig
    from tasks.data import build_dataset_task

    cfg = PipelineConfig.from_yaml(TINY_CONFIG, {"run.workdir": str(tmp_path)})
    client, tracking = _tracking(tmp_path, parent=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a mathdial record"}\n')
    with pytest.raises(DataError):
        build_dataset_task.fn(bad, "edufeedback", cfg.dataset.builder_config(), workdir=tmp_path,
                              output=tmp_path / "ds", tracking=tracking)
    (run,) = client.search_runs([tracking.experiment_id])
    assert run.info.status == "FAILED" and run.info.run_name == "build_dataset"
    assert run.data.tags["coala.error"].startswith(("DataError: ", "RecordError: ")) and "bad.jsonl:1" in run.data.tags["coala.error"]
    assert run.data.params["dataset.input"] == str(bad)


def test_stage_logs_and_warnings_reach_the_flow_run_logs(prefect_harness, tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from coala_core.phase1 import fit_phase1
    from tasks.stage import current_stage, stage_task

    _client, tracking = _tracking(tmp_path, parent=False)

    @stage_task("probe", params=lambda n, **_: {"probe": {"n": n}}, cache_policy=None, persist_result=False)
    def probe(n: int, *, workdir: Path, output: Path, tracking) -> dict:
        logging.getLogger("coala.probe").info("probe rows done: %d", n)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(n, 4))
        fit_phase1(X, np.sign(X[:, 0]), n_patterns=2, max_iter=3, tol=1e-12)  # warns: did not reach tol
        current_stage().flops = 123.0
        return {"n": n}

    @flow
    def watched() -> str:
        from prefect.context import FlowRunContext

        probe(30, workdir=tmp_path, output=tmp_path / "probe", tracking=tracking)
        return str(FlowRunContext.get().flow_run.id)

    flow_run_id = watched()
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        warned = [lg for lg in logs if "did not reach tol" in lg.message]
        info = [lg for lg in logs if "probe rows done: 30" in lg.message]
        if (warned and info) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert warned and warned[0].level == logging.WARNING and warned[0].task_run_id is not None
    assert info and info[0].level == logging.INFO and info[0].task_run_id == warned[0].task_run_id
