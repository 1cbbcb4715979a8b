"""Clean ends after ``kill -9``: the runs of dead pipeline sessions are marked Crashed (Prefect) and KILLED (MLflow).

A session (``flows.runtime.pipeline_session``) writes ``<workdir>/sessions/<id>.json`` and tags every Prefect
flow and task run it makes with ``coala-session:<id>``; a clean end removes the file. Whoever next holds the
workdir lock knows that no session of this workdir is alive, so every file left there belongs to a dead
process. Its Prefect flow runs (found by tag) that are not final become Crashed, with their unfinished task
runs; its MLflow runs still RUNNING (found by their ``prefect.flow_run_id`` tag) become KILLED.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOT_FINAL = ("RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING")


def dead_sessions(workdir: str | Path) -> list[dict[str, Any]]:
    """Session records left in the workdir (call while holding the workdir lock: they are all dead)."""
    out = []
    for f in sorted((Path(workdir) / "sessions").glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            rec = {"session": f.stem}
        rec["file"] = str(f)
        out.append(rec)
    return out


def _crash_prefect_runs(session: str) -> tuple[list[str], list[str]]:
    """(ids of the session's flow runs, ids of those that were not final and are now Crashed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.states import Crashed

    message = "the process running this flow was killed (found by the next run on its workdir)"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"coala-session:{session}"])))
        crashed = []
        for r in runs:
            if r.state is not None and r.state.type.value in NOT_FINAL:
                client.set_flow_run_state(r.id, Crashed(message=message), force=True)
                crashed.append(str(r.id))
        if runs:
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs])))
            for t in tasks:
                if t.state is not None and t.state.type.value in NOT_FINAL:
                    client.set_task_run_state(t.id, Crashed(message=message), force=True)
    return [str(r.id) for r in runs], crashed


def _kill_mlflow_runs(workdir: Path, flow_run_ids: list[str]) -> list[str]:
    from tasks.tracking import client_for

    if not flow_run_ids:
        return []
    client = client_for(workdir)
    wanted = set(flow_run_ids)
    killed = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=5000):
        if run.data.tags.get("prefect.flow_run_id") in wanted:
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    return killed


def repair_dead_sessions(workdir: str | Path) -> dict[str, Any]:
    """Mark the runs of every dead session of ``workdir`` Crashed / KILLED; remove their records.

    Call only while holding the workdir lock (``flows.runtime.workdir_lock``). Returns counts and ids.
    """
    wd = Path(workdir).resolve()
    sessions = dead_sessions(wd)
    flow_runs: list[str] = []
    mlflow_runs: list[str] = []
    for rec in sessions:
        ids, crashed = _crash_prefect_runs(rec["session"])
        flow_runs += crashed
        mlflow_runs += _kill_mlflow_runs(wd, ids)
        Path(rec["file"]).unlink(missing_ok=True)
    return {"sessions": len(sessions), "flow_runs": len(flow_runs), "mlflow_runs": len(mlflow_runs),
            "flow_run_ids": flow_runs, "mlflow_run_ids": mlflow_runs}
