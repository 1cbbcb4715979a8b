"""What every stage task shares: the tracking context, retry and failure policies, and the call helper.

:func:`run_stage` is how a flow calls a stage task. It derives the stage's output folder from the same
content digests as the cache key (so the output location is a function of the inputs), forces a rerun
when that folder is missing (the store on disk is the truth, the Prefect cache only a shortcut), applies
the configured timeout, and on a cache hit records a nested MLflow run marked ``cached`` that points at
the run that made the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from coala_core.errors import CoalaError
from tasks.caching import stable_digest
from tasks.refs import ArtifactRef, FeaturesRef
from tasks.tracking import TrackedRun, start_run

NOT_IN_KEY = ("workdir", "output", "tracking")
IO_RETRY_DELAYS = exponential_backoff(backoff_factor=2)


class TrackingContext(BaseModel):
    """How a stage reaches MLflow: store URI, experiment, the pipeline's parent run, system metrics."""

    model_config = ConfigDict(frozen=True)

    uri: str
    experiment_id: str
    parent_run_id: str | None = None
    system_metrics: bool = True
    system_metrics_interval_s: float = 5.0

    def client(self) -> MlflowClient:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def prefect_tags() -> dict[str, str]:
    """The ids of the Prefect flow and task run we are in (tagged on MLflow runs for cross-links)."""
    tags: dict[str, str] = {}
    if (flow_ctx := FlowRunContext.get()) is not None and flow_ctx.flow_run is not None:
        tags["prefect.flow_run_id"] = str(flow_ctx.flow_run.id)
    if (task_ctx := TaskRunContext.get()) is not None:
        tags["prefect.task_run_id"] = str(task_ctx.task_run.id)
    return tags


def retry_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry I/O failures (OSError, timeouts); never a project error, which a rerun would only repeat."""
    try:
        state.result()
    except CoalaError:
        return False
    except (OSError, TimeoutError):
        return True
    except Exception:
        return False
    return False


def fail_stage_runs(task: Task, task_run: TaskRun, state: State) -> None:
    """Prefect ``on_failure`` hook: end MLflow runs this task run left RUNNING (timeouts, crashes) as FAILED."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return
    for run in client.search_runs(ids, filter_string=f"tags.`prefect.task_run_id` = '{task_run.id}' and attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status="FAILED")


def stage_output(workdir: Path, stage: str, task: Task, params: dict[str, Any]) -> Path:
    """``<workdir>/<stage>/<digest of the inputs that enter the cache key>``."""
    kept = {k: v for k, v in params.items() if k not in NOT_IN_KEY}
    return Path(workdir) / stage / stable_digest({"task": task.name, "inputs": kept})


def run_stage(task: Task, *, stage: str, workdir: Path, tracking: TrackingContext, timeout_s: float | None = None,
              **params: Any) -> Any:
    """Call a stage task by the rules above and return its reference."""
    output = stage_output(workdir, stage, task, params)
    configured = task.with_options(refresh_cache=not output.exists(), timeout_seconds=timeout_s,
                                   result_storage=Path(workdir).resolve() / "prefect-results")
    state = configured(workdir=workdir, output=output, tracking=tracking, return_state=True, **params)
    ref = state.result()
    if state.name == "Cached":
        log_cached_stage(tracking, stage, ref)
    return ref


def log_cached_stage(tracking: TrackingContext, stage: str, ref: ArtifactRef | FeaturesRef | Any) -> TrackedRun | None:
    """A nested run for a stage answered from the cache: its metrics, and a link to the run that computed it."""
    if tracking.parent_run_id is None:
        return None
    client = tracking.client()
    run = start_run(client, tracking.experiment_id, f"{stage} (cached)", parent_run_id=tracking.parent_run_id,
                    tags={"coala.stage": stage, "coala.cached": "true",
                          "coala.cached_from": getattr(ref, "mlflow_run_id", None) or "", **prefect_tags()})
    metrics = dict(getattr(ref, "metrics", {}) or {})
    run.log_metrics(metrics)
    run.set_tags({"coala.digest": getattr(ref, "digest", "")})
    run.end("FINISHED")
    return run
