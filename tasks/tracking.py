"""MLflow tracking for the pipeline: one parent run per pipeline run, one nested run per stage.

Runs are addressed by explicit run ids through ``MlflowClient`` (no thread-local active run), so a stage
logs into the right run whichever thread or subprocess Prefect runs it in. A stage run ends FINISHED on
success, KILLED when the process is interrupted and FAILED on any other exception; :func:`fail_open_runs` is the Prefect failure hook's safety net for
runs a timeout or crash left RUNNING. With no ``MLFLOW_TRACKING_URI`` the store is a SQLite file and the
artifacts a folder under the project's work directory.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from coala_core.config import flatten

PARAM_VALUE_LIMIT = 6000
PREFECT_TAGS = ("prefect.flow_run_id", "prefect.task_run_id")


def default_tracking_uri(workdir: str | Path) -> str:
    """The embedded store: ``sqlite:///<workdir>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{(Path(workdir).resolve() / 'mlflow.db').as_posix()}"


def tracking_uri(workdir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a server), else the embedded SQLite store under ``workdir``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)


def client_for(workdir: str | Path) -> MlflowClient:
    uri = tracking_uri(workdir)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, workdir: str | Path) -> str:
    """The experiment id of ``name``, created with artifacts under ``<workdir>/mlartifacts`` when embedded."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks")):
        # a local store (the embedded SQLite default): keep artifacts beside it, not in ./mlruns of the cwd
        location = (Path(workdir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def code_version() -> str:
    """The git commit of the code that runs (``+dirty`` with uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Flatten a nested config to dotted MLflow params; lists become JSON, long values are cut."""
    out: dict[str, str] = {}
    for key, value in flatten(config).items():
        text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
        out[key] = text[:PARAM_VALUE_LIMIT]
    return out


@dataclass
class TrackedRun:
    """A handle on one MLflow run: log params, metrics (with steps), artifacts and dataset inputs."""

    client: MlflowClient
    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:PARAM_VALUE_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite_number(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_history(self, history: Iterable[Mapping[str, Any]], *, prefix: str = "", step_key: str = "iteration") -> int:
        """Log a per-iteration history (list of dicts) as metrics with steps; returns rows logged."""
        now = int(time.time() * 1000)
        items: list[Metric] = []
        n = 0
        for i, row in enumerate(history):
            step = int(row.get(step_key, i))
            items += [Metric(f"{prefix}{k}", float(v), now, step) for k, v in row.items()
                      if k != step_key and _finite_number(v)]
            n += 1
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])
        return n

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_dataset(self, path: str | Path, *, name: str, digest: str, context: str,
                    profile: Mapping[str, Any] | None = None, schema: Any = None) -> None:
        """Record a dataset input (lineage) by source path and content digest, without uploading it;
        ``schema`` is an ``mlflow.types.Schema`` (shown in the run's Datasets panel)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():  # a local path matches two equivalent local source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).resolve()))
        ds = MetaDataset(source=source, name=name, digest=digest[:36], schema=schema)
        entity = ds._to_mlflow_entity()
        if profile:
            entity = type(entity)(name=entity.name, digest=entity.digest, source_type=entity.source_type,
                                  source=entity.source, schema=entity.schema, profile=json.dumps(dict(profile)))
        tags = [InputTag("mlflow.data.context", context), InputTag("coala.digest", digest)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags)])

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)

    def url(self) -> str:
        run = self.client.get_run(self.run_id)
        uri = self.client._tracking_client.tracking_uri
        if uri.startswith("http"):
            return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{self.run_id}"
        return run.info.artifact_uri


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


@functools.cache
def git_tags() -> dict[str, str]:
    """``mlflow.source.git.commit`` (the bare sha, as the UI expects), ``mlflow.source.git.branch`` and
    ``coala.code_version`` (sha, ``+dirty`` with uncommitted changes); empty outside a git checkout."""
    version = code_version()
    if version == "unknown":
        return {"coala.code_version": version}
    out = {"mlflow.source.git.commit": version.removesuffix("+dirty"), "coala.code_version": version}
    root = Path(__file__).resolve().parent.parent
    try:
        branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        remote = subprocess.run(["git", "config", "--get", "remote.origin.url"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        branch = remote = ""
    if branch and branch != "HEAD":
        out["mlflow.source.git.branch"] = branch
    if remote:
        out["mlflow.source.git.repoURL"] = remote
    return out


def source_tags(source: str | None = None) -> dict[str, str]:
    """What MLflow shows as a run's Source: ``source`` (default: the command line that runs), its type
    (``JOB`` under a Prefect deployment, else ``LOCAL``) and the git tags."""
    import sys

    name = source or " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]).strip() or "python"
    deployed = bool(os.environ.get("PREFECT__FLOW_RUN_ID")) or _in_deployment()
    return {"mlflow.source.name": name, "mlflow.source.type": "JOB" if deployed else "LOCAL", **git_tags()}


def _in_deployment() -> bool:
    try:
        from prefect.context import FlowRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False
    ctx = FlowRunContext.get()
    return bool(ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id)


def start_run(client: MlflowClient, experiment_id: str, name: str, *, parent_run_id: str | None = None,
              tags: Mapping[str, Any] | None = None, source: str | None = None) -> TrackedRun:
    all_tags = {**source_tags(source), **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return TrackedRun(client, run.info.run_id)


@contextmanager
def stage_run(client: MlflowClient, experiment_id: str, stage: str, *, parent_run_id: str | None,
              tags: Mapping[str, Any] | None = None, system_metrics: bool = True,
              sampling_interval: float = 2.0) -> Iterator[TrackedRun]:
    """A nested run for one stage with system metrics sampled while it runs; FAILED on any exception."""
    run = start_run(client, experiment_id, stage, parent_run_id=parent_run_id, tags={"coala.stage": stage, **(tags or {})})
    monitor = None
    if system_metrics:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=sampling_interval, samples_before_logging=1,
                                       tracking_uri=client._tracking_client.tracking_uri)
        monitor.start()
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield run
        status = RunStatus.to_string(RunStatus.FINISHED)
    except BaseException as err:
        status = end_status(err)
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        run.end(status)


def end_status(err: BaseException) -> str:
    """How a run that raised ``err`` ends: KILLED when the process was interrupted (Ctrl-C, SIGTERM through
    :func:`flows.runtime.interrupt_on_sigterm`, ``sys.exit``), FAILED for any other error."""
    interrupted = isinstance(err, KeyboardInterrupt | SystemExit) or type(err).__name__ in ("TerminationSignal", "Abort")
    return RunStatus.to_string(RunStatus.KILLED if interrupted else RunStatus.FAILED)


def fail_open_runs(client: MlflowClient, experiment_id: str, tag: str, value: str) -> list[str]:
    """Mark every RUNNING run whose tag ``tag`` equals ``value`` as FAILED; returns their ids."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'RUNNING'")
    for r in runs:
        client.set_terminated(r.info.run_id, status="FAILED")
    return [r.info.run_id for r in runs]
