"""The one stage wrapper: every stage task is a body wrapped by :func:`stage_task`.

The wrapper owns what every stage shares, so a task body only loads its references, makes one core call,
writes its output and returns a reference:

- the MLflow stage run: named by the stage (``build_dataset``, ``extract_features``, ...), tagged
  ``coala.stage=<name>`` and ``coala.cached=false``, the stage's params (from its ``params`` function of the
  task's inputs), system metrics while it runs, FINISHED / FAILED / KILLED at the end, with the error's
  one-line text in ``coala.error`` on failure;
- datasets: every input reference (pairs file, feature stores, plain input files) and the output reference
  are logged as MLflow dataset inputs with their schema (:mod:`tasks.datasets`);
- metering: wall time and peak RSS of the body, plus the FLOPs the body reports (``stage.flops += ...``),
  logged as metrics and merged into the returned reference's ``metrics``;
- logs: the core's ``logging`` records (logger ``coala`` and below, INFO and up) and Python warnings raised
  while the body runs go to the Prefect task run's log (as well as to their usual handlers);
- Prefect options: the content-digest cache policy, persisted JSON results, retries of transient I/O
  errors only, and the failure hook that ends runs a timeout left RUNNING.

A body reaches its run through :func:`current_stage`. :func:`run_stage` is how a flow calls a stage task:
it derives the output folder from the same content digests as the cache key, forces a rerun when that
folder is missing, applies the timeout, and on a cache hit records a run with the same name, tags (but
``coala.cached=true`` and ``coala.cached_from=<run id>``), params and datasets as a fresh run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import Task, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from coala_core.errors import CoalaError
from tasks.caching import digest_policy, stable_digest
from tasks.compute import StageMeter, measure
from tasks.datasets import log_input_datasets, log_output_datasets
from tasks.tracking import TrackedRun, params_from_config, stage_run, start_run

NOT_IN_KEY = ("workdir", "output", "tracking")
IO_RETRY_DELAYS = exponential_backoff(backoff_factor=2)
CORE_LOGGER = "coala"


class TrackingContext(BaseModel):
    """How a stage reaches MLflow: store URI, experiment, the pipeline's parent run, system metrics."""

    model_config = ConfigDict(frozen=True)

    uri: str
    experiment_id: str
    parent_run_id: str | None = None
    system_metrics: bool = True
    system_metrics_interval_s: float = 5.0

    def client(self) -> MlflowClient:
        """A client on this store; also points mlflow's fluent API (``start_run``, ``log_model``'s
        registration) at it, registry included: otherwise a registry URI set earlier in the process wins."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
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


# --------------------------------------------------------------------------------------------------
# The wrapper


@dataclass(frozen=True)
class StageSpec:
    """A stage's identity: its MLflow run name / ``coala.stage`` tag and how its params follow from its inputs."""

    name: str
    params: Callable[..., Mapping[str, Any]]

    def params_of(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        return params_from_config(dict(self.params(**inputs)))


@dataclass
class StageRun:
    """What a stage body sees (:func:`current_stage`): its MLflow run and its meter."""

    spec: StageSpec
    run: TrackedRun
    meter: StageMeter = field(default_factory=StageMeter)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def flops(self) -> float:
        return self.meter.flops

    @flops.setter
    def flops(self, value: float) -> None:
        self.meter.flops = float(value)

    def __getattr__(self, name: str) -> Any:  # log_metrics, log_history, log_artifact, log_dataset, set_tags
        return getattr(self.run, name)


_CURRENT: ContextVar[StageRun | None] = ContextVar("coala_stage", default=None)


def current_stage() -> StageRun:
    """The stage run of the body being executed; only inside a :func:`stage_task` body."""
    st = _CURRENT.get()
    if st is None:
        raise RuntimeError("current_stage() is only available inside a stage_task body")
    return st


def stage_task(name: str, *, params: Callable[..., Mapping[str, Any]], task_name: str | None = None,
               **task_options: Any) -> Callable[[Callable[..., Any]], Task]:
    """Decorate a stage body into a Prefect task run by the rules of this module.

    ``name`` is the stage's MLflow run name and ``coala.stage`` tag; ``params(**inputs)`` returns the nested
    params to log (called with every argument of the task, fresh or cached). The body must take keyword
    arguments ``workdir``, ``output`` and ``tracking``. ``task_options`` override the Prefect defaults.
    """
    spec = StageSpec(name, params)

    def decorate(body: Callable[..., Any]) -> Task:
        signature = inspect.signature(body)
        missing = {"workdir", "output", "tracking"} - set(signature.parameters)
        if missing:
            raise TypeError(f"stage body {body.__name__} lacks keyword arguments {sorted(missing)}")

        @functools.wraps(body)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return execute(spec, dict(bound.arguments), lambda: body(*args, **kwargs))

        wrapper.__coala_stage__ = spec  # type: ignore[attr-defined]
        options: dict[str, Any] = {"cache_policy": digest_policy(*NOT_IN_KEY), "persist_result": True,
                                   "result_serializer": "json", "retry_condition_fn": retry_transient,
                                   "on_failure": [fail_stage_runs], **task_options}
        return task(name=task_name or name.replace("_", "-"), **options)(wrapper)

    return decorate


def execute(spec: StageSpec, inputs: Mapping[str, Any], call: Callable[[], Any]) -> Any:
    """Run a stage body (``call``) in its fresh stage run: params, input datasets, metering, logs, failure
    tag; then log the reference it returns and return it with its metrics and run id."""
    tracking: TrackingContext = inputs["tracking"]
    client = tracking.client()
    with stage_run(client, tracking.experiment_id, spec.name, parent_run_id=tracking.parent_run_id,
                   tags={"coala.cached": "false", **prefect_tags()}, system_metrics=tracking.system_metrics,
                   sampling_interval=tracking.system_metrics_interval_s) as run:
        run.log_params(spec.params_of(inputs))
        log_input_datasets(run, inputs)
        st = StageRun(spec, run)
        token = _CURRENT.set(st)
        try:
            with stage_logs(), measure() as meter:
                st.meter = meter
                ref = call()
        except BaseException as err:
            run.set_tags({"coala.error": f"{type(err).__name__}: {err}"[:5000]})
            raise
        finally:
            _CURRENT.reset(token)
        return finish(st, ref)


def finish(st: StageRun, ref: Any) -> Any:
    """Log the body's reference (metrics + meter, output datasets) on its run; return it with the run id."""
    metrics = {**dict(getattr(ref, "metrics", {}) or {}), **st.meter.metrics()}
    st.run.log_metrics(metrics)
    log_output_datasets(st.run, ref)
    digest = getattr(ref, "digest", None)
    if digest:
        st.run.set_tags({"coala.digest": digest})
    if isinstance(ref, BaseModel) and "metrics" in type(ref).model_fields:
        ref = ref.model_copy(update={"metrics": metrics, "mlflow_run_id": st.run.run_id})
    return ref


class PrefectForwarder(logging.Handler):
    """Send records to the Prefect run current where they are emitted (a task run inside a task, else the
    flow run), so they show in the UI with the stage's task run; dropped outside any run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            target = get_run_logger()
        except MissingContextError:
            return
        try:
            if record.name == "py.warnings":
                target.log(record.levelno, record.getMessage().strip())
            else:
                target.log(record.levelno, "%s: %s", record.name, record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never break a stage
            self.handleError(record)


_FORWARDING: ContextVar[bool] = ContextVar("coala_forwarding", default=False)


@contextmanager
def stage_logs() -> Iterator[None]:
    """While the block runs: records of logger ``coala`` (INFO and up) and Python warnings also go to the
    current Prefect run's log (:class:`PrefectForwarder`). Nested uses are no-ops."""
    if _FORWARDING.get():
        yield
        return
    token = _FORWARDING.set(True)
    core = logging.getLogger(CORE_LOGGER)
    handler = PrefectForwarder()
    previous_level = core.level
    if core.getEffectiveLevel() > logging.INFO:
        core.setLevel(logging.INFO)
    core.addHandler(handler)
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            handler.emit(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno,
                                           f"{category.__name__}: {message}", None, None))
            original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            core.removeHandler(handler)
            core.setLevel(previous_level)
            _FORWARDING.reset(token)


# --------------------------------------------------------------------------------------------------
# Calling a stage from a flow


def stage_spec(task_: Task) -> StageSpec:
    """The task's :class:`StageSpec`; for a task not yet built with :func:`stage_task`, one named after it
    without params."""
    return getattr(task_.fn, "__coala_stage__", None) or StageSpec(task_.name.replace("-", "_"), lambda **_: {})


def stage_output(workdir: Path, stage: str, task: Task, params: dict[str, Any]) -> Path:
    """``<workdir>/<stage folder>/<digest of the inputs that enter the cache key>``."""
    kept = {k: v for k, v in params.items() if k not in NOT_IN_KEY}
    return Path(workdir) / stage / stable_digest({"task": task.name, "inputs": kept})


def run_stage(task: Task, *, stage: str, workdir: Path, tracking: TrackingContext, timeout_s: float | None = None,
              **params: Any) -> Any:
    """Call a stage task by the rules above and return its reference (``stage`` names the output folder)."""
    output = stage_output(workdir, stage, task, params)
    configured = task.with_options(refresh_cache=not output.exists(), timeout_seconds=timeout_s,
                                   result_storage=Path(workdir).resolve() / "prefect-results")
    inputs = {"workdir": workdir, "output": output, "tracking": tracking, **params}
    with stage_logs():  # also for task bodies not (yet) built with stage_task
        state = configured(return_state=True, **inputs)
    ref = state.result()
    if state.name == "Cached":
        log_cached_stage(tracking, stage_spec(task), inputs, ref)
    return ref


def log_cached_stage(tracking: TrackingContext, spec: StageSpec, inputs: Mapping[str, Any], ref: Any) -> TrackedRun | None:
    """A run for a stage answered from the cache, named and tagged like a fresh one: same params and
    datasets, the reference's metrics, ``coala.cached=true`` and a link to the run that computed it."""
    if tracking.parent_run_id is None:
        return None
    client = tracking.client()
    run = start_run(client, tracking.experiment_id, spec.name, parent_run_id=tracking.parent_run_id,
                    tags={"coala.stage": spec.name, "coala.cached": "true",
                          "coala.cached_from": getattr(ref, "mlflow_run_id", None) or "", **prefect_tags()})
    try:
        run.log_params(spec.params_of(inputs))
        log_input_datasets(run, inputs)
        run.log_metrics(dict(getattr(ref, "metrics", {}) or {}))
        log_output_datasets(run, ref)
        if getattr(ref, "digest", None):
            run.set_tags({"coala.digest": ref.digest})
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return run
