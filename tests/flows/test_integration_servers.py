"""Integration: a real Prefect server and a real MLflow server on 127.0.0.1, the pipeline through a served deployment.

The module starts ``prefect server start`` and ``mlflow server`` (SQLite stores, artifacts proxied by the MLflow
server) as subprocesses with their own homes under a temporary folder, serves the pipeline with ``coala serve``
on the tiny config, triggers two runs with ``run_deployment`` and checks both APIs: the flow run and its stage
subflows COMPLETED; the MLflow parent and nested runs FINISHED with stepped metrics, artifacts and the
registered model behind its alias; the second run answered from the cache without a new model version.
A last test interrupts ``coala pipeline run`` with SIGTERM and checks its MLflow runs ended KILLED.
Every process is started in its own session and stopped (SIGTERM, then SIGKILL) with its whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from coala_testsupport.pipeline import REPO, TINY_CONFIG

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
         "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
CLEARED = ("PREFECT_API_URL", "PREFECT_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_PROFILE")
DEPLOYMENT = "coala-pipeline/itest"
STAGES = ("build_dataset", "extract_features", "phase1", "phase2", "evaluate")
SUBFLOWS = {"build-dataset", "extract-features", "train-head", "evaluate"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("PYTEST")}
    return {**env, **QUIET, **extra}


@dataclass
class Processes:
    """Subprocesses started in their own sessions, with their logs; :meth:`stop_all` ends every group."""

    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def tail(self, name: str, n: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def settle(self, name: str, timeout_s: float = 60.0) -> None:
        """Wait until ``name`` has no child processes left: a runner's flow-run subprocess outlives the run's
        Completed state for a moment, and a runner stopped before it exits cancels that run (Prefect's
        ``cancel_all`` on shutdown), turning a finished run Cancelled."""
        import psutil

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not psutil.Process(self.procs[name].pid).children(recursive=True):
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    def stop(self, *names: str, grace_s: float = 15.0) -> None:
        """SIGTERM to each process group (servers and the runner start children of their own), then SIGKILL
        to what is left of a group once its leader exited or after ``grace_s`` seconds."""
        procs = [self.procs.pop(n) for n in names if n in self.procs]
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            _signal_group(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        self.stop(*reversed(list(self.procs)))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_http(url: str, procs: Processes, name: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.alive(name)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{name}: {url} not healthy after {timeout_s:.0f} s:\n{procs.tail(name)}")


@dataclass
class Servers:
    prefect_api: str
    mlflow_uri: str
    root: Path
    procs: Processes


@contextlib.contextmanager
def start_servers(root: Path) -> Iterator[Servers]:
    """``prefect server start`` (its UI told where its API is) and ``mlflow server`` on free 127.0.0.1 ports,
    SQLite stores under ``root``; both stopped on exit."""
    procs = Processes(root)
    p_port, m_port = free_port(), free_port()
    prefect_env = clean_env(PREFECT_HOME=str(root / "prefect-home"),
                            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
                            PREFECT_SERVER_ANALYTICS_ENABLED="false",
                            PREFECT_UI_API_URL=f"http://127.0.0.1:{p_port}/api")
    try:
        procs.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                       "--port", str(p_port), "--no-background"], prefect_env)
        procs.start("mlflow-server", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(m_port),
                                      "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                      "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")],
                    clean_env())
        wait_http(f"http://127.0.0.1:{p_port}/api/health", procs, "prefect-server")
        wait_http(f"http://127.0.0.1:{m_port}/health", procs, "mlflow-server")
        yield Servers(f"http://127.0.0.1:{p_port}/api", f"http://127.0.0.1:{m_port}", root, procs)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with start_servers(tmp_path_factory.mktemp("servers")) as running:
        yield running


def _sets(model: Path, workdir: Path, **extra: object) -> list[str]:
    items = {"features.model": model, "run.workdir": workdir, **extra}
    return [arg for k, v in items.items() for arg in ("--set", f"{k}={v}")]


def _subflow_task_states(client, flow_run_id) -> tuple[dict[str, str], dict[str, str]]:  # noqa: ANN001
    """(subflow name -> state type, task name -> state name) of one pipeline flow run, read from the API."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId, TaskRunFilter

    subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    flows_by_id = {f.flow_id: client.read_flow(f.flow_id).name for f in subflows}
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[f.id for f in subflows])),
                                  task_run_filter=TaskRunFilter())
    return ({flows_by_id[f.flow_id]: f.state.type.value for f in subflows},
            {t.name.rsplit("-", 1)[0]: t.state.name for t in tasks})


def test_served_deployment_runs_tracks_and_caches(servers: Servers, tiny_model: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workdir = servers.root / "work"
    serve_env = clean_env(PREFECT_API_URL=servers.prefect_api, MLFLOW_TRACKING_URI=servers.mlflow_uri,
                          PREFECT_HOME=str(servers.root / "serve-home"), PREFECT_RUNNER_POLL_FREQUENCY="1")
    servers.procs.start("coala-serve", [str(BIN / "coala"), "serve", "--config", str(TINY_CONFIG), "--cron", "0 0 1 1 *",
                                        "--name", "itest", *_sets(tiny_model, workdir)], serve_env)
    try:
        with temporary_settings({PREFECT_API_URL: servers.prefect_api}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 90
            while True:
                servers.procs.alive("coala-serve")
                try:
                    deployment = client.read_deployment_by_name(DEPLOYMENT)
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, servers.procs.tail("coala-serve")
                    time.sleep(0.5)
            assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 0 1 1 *"

            t0 = time.monotonic()
            first = run_deployment(DEPLOYMENT, timeout=240, poll_interval=1)
            first_s = time.monotonic() - t0
            assert first.state.is_completed(), f"{first.state}\n{servers.procs.tail('coala-serve')}"
            subflows, tasks = _subflow_task_states(client, first.id)
            assert subflows == dict.fromkeys(SUBFLOWS, "COMPLETED")
            assert set(tasks.values()) == {"Completed"} and len(tasks) == len(STAGES)

            t0 = time.monotonic()
            second = run_deployment(DEPLOYMENT, timeout=240, poll_interval=1)
            second_s = time.monotonic() - t0
            assert second.state.is_completed(), f"{second.state}\n{servers.procs.tail('coala-serve')}"
            subflows2, tasks2 = _subflow_task_states(client, second.id)
            assert subflows2 == dict.fromkeys(SUBFLOWS, "COMPLETED")
            assert tasks2 == dict.fromkeys(("build-dataset", "extract-features", "phase1", "phase2", "evaluate"), "Cached")
            artifacts = {a.key for a in client.read_artifacts()}
            assert {"mlflow-run", "dataset-card", "feature-extraction", "phase1-admm", "evaluation-report"} <= artifacts
            servers.procs.settle("coala-serve")
    finally:
        servers.procs.stop("coala-serve")
    print(f"served runs: first {first_s:.1f} s, cached rerun {second_s:.1f} s")

    client = MlflowClient(tracking_uri=servers.mlflow_uri, registry_uri=servers.mlflow_uri)
    exp = client.get_experiment_by_name("coala-tiny")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    parents = {}
    for flow_run in (first, second):
        runs = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run.id}' and "
                                                       "tags.`coala.pipeline` = 'true'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        parents[flow_run.id] = runs[0]
    parent = parents[first.id]
    assert parent.data.params["phase1.n_patterns"] == "4" and parent.data.metrics["total_flops"] > 0
    assert 0.0 <= parent.data.metrics["test/accuracy"] <= 1.0
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

    children = {c.data.tags["coala.stage"]: c for c in
                client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == set(STAGES) and {c.info.status for c in children.values()} == {"FINISHED"}
    admm = client.get_metric_history(children["phase1"].info.run_id, "admm/objective")
    assert len(admm) > 1 and [m.step for m in admm] == sorted({m.step for m in admm})
    assert len(client.get_metric_history(children["phase2"].info.run_id, "phase2/loss")) >= 1
    head_files = {a.path for a in client.list_artifacts(children["phase2"].info.run_id, "head")}
    assert {"head/head.safetensors", "head/head.json"} <= head_files
    assert any(i.dataset.digest for i in children["extract_features"].inputs.dataset_inputs)

    cached = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[second.id].info.run_id}'")
    assert {c.data.tags.get("coala.cached") for c in cached} == {"true"} and len(cached) == len(STAGES)

    version = client.get_model_version_by_alias("coala-tiny-head", "champion")
    assert version.version == "1" and version.run_id == parent.info.run_id and version.tags["coala.head_digest"]
    assert version.source.startswith("models:/m-"), version.source  # an MLflow 3 logged model
    model_id = version.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert logged.name == "reward_model" and logged.source_run_id == parent.info.run_id
    model_files = {a.path for a in client.list_logged_model_artifacts(model_id)}
    assert {"MLmodel", "artifacts"} <= model_files, model_files
    (head_dir,) = [a.path for a in client.list_logged_model_artifacts(model_id, "artifacts") if a.is_dir]
    head_in_model = {a.path.rsplit("/", 1)[-1] for a in client.list_logged_model_artifacts(model_id, head_dir)}
    assert {"head.safetensors", "head.json"} <= head_in_model, head_in_model
    assert len(client.search_model_versions("name = 'coala-tiny-head'")) == 1  # the cached rerun made no version
    assert parents[second.id].data.tags["coala.registered_model"] == "coala-tiny-head@champion (v1, head unchanged)"


def _mlflow_runs(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return dict(con.execute("select name, status from runs").fetchall())
    except sqlite3.OperationalError:  # the store is still being created
        return {}


def test_sigterm_ends_mlflow_runs_killed(servers: Servers, tiny_model: Path) -> None:
    """``coala pipeline run`` (Prefect on the server, MLflow embedded in SQLite) stopped by SIGTERM in Phase I."""
    workdir = servers.root / "interrupted"
    env = clean_env(PREFECT_API_URL=servers.prefect_api, PREFECT_HOME=str(servers.root / "cli-home"))
    slow_phase1 = {"phase1.max_iter": 100000, "phase1.tol": 1e-14, "run.system_metrics": "false"}
    proc = servers.procs.start("coala-run", [str(BIN / "coala"), "pipeline", "run", "--config", str(TINY_CONFIG),
                                             *_sets(tiny_model, workdir, **slow_phase1)], env)
    db = workdir / "mlflow.db"
    deadline = time.monotonic() + 120
    try:
        while _mlflow_runs(db).get("phase1") != "RUNNING":
            servers.procs.alive("coala-run")
            assert time.monotonic() < deadline, servers.procs.tail("coala-run")
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        servers.procs.stop("coala-run")
    runs = _mlflow_runs(db)
    assert rc == 128 + signal.SIGTERM, servers.procs.tail("coala-run")
    assert "RUNNING" not in runs.values(), runs
    assert runs["phase1"] == "KILLED" and runs["build_dataset"] == runs["extract_features"] == "FINISHED"
    parent = [status for name, status in runs.items() if name.startswith("tiny")]
    assert parent == ["KILLED"], runs
