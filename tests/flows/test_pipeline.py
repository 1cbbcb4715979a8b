"""Layers 2 and 3: the flows under a session-scoped Prefect test harness, end to end on a tiny model.

One pipeline run, then a rerun that must be answered from the cache for every stage, then a rerun with one
Phase II field changed that must recompute Phase II and evaluation only; MLflow holds the parent run, the
nested stage runs, their metrics and artifacts and the registered model with its alias.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from coala_testsupport.pipeline import TINY_CONFIG, tiny_overrides

from coala_core.errors import MissingInputError


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [f.id for f in subflows]
        from prefect.client.schemas.filters import FlowRunFilterId

        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                                      task_run_filter=TaskRunFilter())
    return {t.name.rsplit("-", 1)[0]: t.state.name for t in tasks}


def test_pipeline_end_to_end_caches_and_tracks(prefect_harness, tiny_model: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from flows.pipeline import coala_pipeline
    from tasks.tracking import tracking_uri

    ov = tiny_overrides(tiny_model, tmp_path)
    s1 = coala_pipeline(str(TINY_CONFIG), ov, return_state=True)
    assert s1.is_completed()
    report = s1.result()
    assert Path(report.files["report"]).is_file() and 0.0 <= report.metrics["test/accuracy"] <= 1.0
    assert set(_task_states(s1.state_details.flow_run_id).values()) == {"Completed"}

    s2 = coala_pipeline(str(TINY_CONFIG), ov, return_state=True)
    states2 = _task_states(s2.state_details.flow_run_id)
    assert states2 == {k: "Cached" for k in ("build-dataset", "extract-features", "phase1", "phase2", "evaluate")}
    assert s2.result().digest == report.digest

    s3 = coala_pipeline(str(TINY_CONFIG), {**ov, "phase2.l2_grid": [0.5]}, return_state=True)
    states3 = _task_states(s3.state_details.flow_run_id)
    assert states3 == {"build-dataset": "Cached", "extract-features": "Cached", "phase1": "Cached",
                       "phase2": "Completed", "evaluate": "Completed"}

    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("coala-tiny")
    parents = client.search_runs([exp.experiment_id], "tags.`coala.pipeline` = 'true'")
    assert len(parents) == 3 and {p.info.status for p in parents} == {"FINISHED"}
    first = min(parents, key=lambda r: r.info.start_time)
    assert first.data.params["phase1.n_patterns"] == "4" and "code_version" in first.data.params
    assert first.data.metrics["total_flops"] > 0 and "test/accuracy" in first.data.metrics
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{first.info.run_id}'")
    assert {c.data.tags["coala.stage"] for c in children} == {"build_dataset", "extract_features", "phase1", "phase2", "evaluate"}
    second = sorted(parents, key=lambda r: r.info.start_time)[1]
    cached = {c.data.tags["coala.stage"]: c for c in
              client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{second.info.run_id}'")}
    for fresh in children:  # every stage: a cached run named, tagged and parametrised like the fresh one
        twin = cached[fresh.data.tags["coala.stage"]]
        assert (fresh.data.tags["coala.cached"], twin.data.tags["coala.cached"]) == ("false", "true")
        assert twin.info.run_name == fresh.info.run_name and twin.data.params == fresh.data.params and fresh.data.params
    p1 = next(c for c in children if c.data.tags["coala.stage"] == "phase1")
    assert len(client.get_metric_history(p1.info.run_id, "admm/objective")) > 1
    ev = next(c for c in children if c.data.tags["coala.stage"] == "evaluate")
    assert "report/report.md" in {a.path for a in client.list_artifacts(ev.info.run_id, "report")}
    versions = {int(v.version): v for v in client.search_model_versions("name = 'coala-tiny-head'")}
    assert sorted(versions) == [1, 2] and len({v.tags["coala.head_digest"] for v in versions.values()}) == 2
    # the cached rerun kept v1; the Phase II change made v2, which takes the alias only when its validation
    # accuracy is at least v1's (the registry's rule, tested on its own in tests/serving/test_registry.py)
    v1_acc, v2_acc = (float(versions[k].tags["coala.val_accuracy"]) for k in (1, 2))
    champion = 2 if v2_acc >= v1_acc else 1
    assert int(client.get_model_version_by_alias("coala-tiny-head", "champion").version) == champion
    by_start = sorted(parents, key=lambda r: r.info.start_time)
    third = ("coala-tiny-head@champion (v2)" if champion == 2 else
             "coala-tiny-head v2 registered; coala-tiny-head@champion stays v1 (")
    tags = [p.data.tags["coala.registered_model"] for p in by_start]
    assert tags[:2] == ["coala-tiny-head@champion (v1)", "coala-tiny-head@champion (v1, head unchanged)"]
    assert tags[2].startswith(third), tags[2]


def test_missing_input_fails_clearly_and_leaves_no_running_run(prefect_harness, tiny_model: Path, tmp_path: Path) -> None:
    from flows.pipeline import coala_pipeline

    ov = tiny_overrides(tiny_model, tmp_path, **{"dataset.input": str(tmp_path / "absent.jsonl")})
    with pytest.raises(MissingInputError, match="absent.jsonl"):
        coala_pipeline(str(TINY_CONFIG), ov)
    from mlflow.tracking import MlflowClient

    from tasks.tracking import tracking_uri

    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("coala-tiny")
    runs = client.search_runs([exp.experiment_id])
    mine = [r for r in runs if r.data.params.get("dataset.input") == str(tmp_path / "absent.jsonl")]
    assert mine and {r.info.status for r in mine} == {"FAILED"}
    assert "RUNNING" not in {r.info.status for r in runs}
