"""Process start-up defaults for the pipeline: embedded services unless servers are configured.

Call :func:`prepare_environment` where a process starts (the CLI, a test session), before Prefect is
imported: Prefect reads its settings at import. Nothing here runs at import time.

- Telemetry off: ``MLFLOW_DISABLE_TELEMETRY``, ``PREFECT_SERVER_ANALYTICS_ENABLED``, ``DO_NOT_TRACK``.
- Prefect: with ``PREFECT_API_URL`` unset, flows run against an ephemeral local server whose database lives
  in ``<workdir>/prefect`` (``PREFECT_HOME``), so the runs can later be browsed with ``prefect server start``.
- MLflow: with ``MLFLOW_TRACKING_URI`` unset, ``sqlite:///<workdir>/mlflow.db`` and ``<workdir>/mlartifacts``.
- Interrupts: :func:`interrupt_on_sigterm` turns SIGTERM into an exception in the main thread, so the
  ``finally`` blocks of the stage and parent runs end their MLflow runs (KILLED) before the process exits.
- ``kill -9``: :func:`pipeline_session` holds the workdir lock (``<workdir>/.coala.lock``; a second pipeline
  on the same workdir stops with a message naming the holder, or waits ``COALA_WORKDIR_WAIT_S`` seconds),
  tags every Prefect flow and task run with the session, and leaves a session file that only a clean end
  removes. The next session (or ``coala runs repair``) finds the files of dead sessions and marks their
  Prefect runs Crashed and their MLflow runs KILLED (``flows.recovery``). The ephemeral Prefect server is
  started through a watchdog that stops it when its parent process dies (:func:`tie_ephemeral_server_to_parent`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from coala_core.errors import StoreError

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                 "TOKENIZERS_PARALLELISM": "false"}


def prepare_environment(workdir: str | Path) -> dict[str, str]:
    """Set the defaults above (never overriding what the user set); returns what was set."""
    wd = Path(workdir).resolve()
    os.environ["COALA_WORKDIR"] = str(wd)  # what workdir-relative references resolve against (tasks.refs)
    wanted = dict(TELEMETRY_OFF)
    if not os.environ.get("PREFECT_API_URL"):
        wanted["PREFECT_HOME"] = str(wd / "prefect")
        (wd / "prefect").mkdir(parents=True, exist_ok=True)
        wanted["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
        wanted["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"  # first start migrates a new database
    wanted["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.3"
    done = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            done[key] = value
    if not os.environ.get("PREFECT_API_URL"):
        tie_ephemeral_server_to_parent()
    return done


# The ephemeral server's command line is ``python -m uvicorn ...``; it is started instead as ``python -c
# WATCHDOG <parent pid> ...``: a daemon thread stops the server (SIGTERM, then exit) once its parent is gone
# (re-parented: getppid changes), then uvicorn runs as before. A thread-independent PR_SET_PDEATHSIG alone
# would fire when the *thread* that started the server ends, which Prefect does not guarantee to be the main one.
WATCHDOG = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)
threading.Thread(target=watch, daemon=True, name="coala-parent-watchdog").start()
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


class _PopenWithWatchdog:
    """Stands in for the ``subprocess`` module inside Prefect's server module: Popen gets the watchdog."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args: Any, *rest: Any, **kwargs: Any) -> Any:  # noqa: N802 - the subprocess API's name
        if isinstance(args, list) and args[1:3] == ["-m", "uvicorn"]:
            args = [args[0], "-c", WATCHDOG, str(os.getpid()), *args[3:]]
        return self._real.Popen(args, *rest, **kwargs)


def tie_ephemeral_server_to_parent() -> bool:
    """Make Prefect's ephemeral API server exit when the process that started it dies (idempotent)."""
    import prefect.server.api.server as server_module

    if isinstance(server_module.subprocess, _PopenWithWatchdog):
        return False
    server_module.subprocess = _PopenWithWatchdog(server_module.subprocess)
    return True


class WorkdirBusyError(StoreError):
    """Another live pipeline holds the workdir lock."""


def _sessions_dir(workdir: Path) -> Path:
    return workdir / "sessions"


@contextmanager
def workdir_lock(workdir: str | Path, *, wait_s: float | None = None, purpose: str = "pipeline run") -> Iterator[None]:
    """Hold ``<workdir>/.coala.lock`` for the block; :class:`WorkdirBusyError` naming the holder if it is taken.

    ``wait_s`` (default: ``COALA_WORKDIR_WAIT_S`` or 0) is how long to wait for the other pipeline first.
    """
    from storage.locks import LockTimeoutError, file_lock, holder_info

    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    wait = float(os.environ.get("COALA_WORKDIR_WAIT_S", "0")) if wait_s is None else wait_s
    lock = wd / ".coala.lock"
    held = ExitStack()
    try:
        held.enter_context(file_lock(lock, purpose=purpose, timeout=wait))
    except LockTimeoutError:
        h = holder_info(lock)
        raise WorkdirBusyError(
            f"workdir {wd} is in use by another pipeline (pid {h.get('pid')} on {h.get('host')}, {h.get('purpose')} "
            f"since {h.get('since')}); wait for it, set COALA_WORKDIR_WAIT_S=SECONDS to wait, or use another run.workdir"
        ) from None
    with held:  # a lock timeout inside the run (a store's) stays that error, never "workdir in use"
        yield


def ensure_mlflow_store(workdir: str | Path) -> None:
    """Create (migrate) the embedded MLflow database once; call it under the workdir lock."""
    from tasks.tracking import client_for

    client_for(workdir).search_experiments(max_results=1)


@contextmanager
def pipeline_session(workdir: str | Path, *, wait_s: float | None = None) -> Iterator[str]:
    """One pipeline run's hold on its workdir: lock, repair of dead sessions, session tag and file.

    Yields the session id (also a Prefect tag ``coala-session:<id>`` on every flow and task run made inside).
    """
    from prefect import tags

    from flows.recovery import repair_dead_sessions

    wd = Path(workdir).resolve()
    with workdir_lock(wd, wait_s=wait_s):
        repaired = repair_dead_sessions(wd)
        if repaired.get("sessions"):
            print(f"repaired {repaired['sessions']} dead run(s) of this workdir: {repaired['flow_runs']} Prefect flow "
                  f"run(s) marked Crashed, {repaired['mlflow_runs']} MLflow run(s) KILLED", file=sys.stderr)
        ensure_mlflow_store(wd)
        from tasks.relocation import rebase_mlflow_store

        if moved := rebase_mlflow_store(wd):  # a moved or copied workdir: its artifacts, never the original's
            print(f"this workdir was moved or copied: MLflow artifact locations under {', '.join(moved)} now point "
                  f"to {wd / 'mlartifacts'}", file=sys.stderr)
        sid = uuid.uuid4().hex[:16]
        record = _sessions_dir(wd) / f"{sid}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"session": sid, "pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.time()}))
        try:
            with tags(f"coala-session:{sid}"):
                yield sid
        finally:
            record.unlink(missing_ok=True)


def where_to_look(workdir: str | Path, report: str | None = None) -> str:
    """The lines `make demo` prints: the report, the MLflow store and how to open both UIs."""
    wd = Path(workdir).resolve()
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{wd / 'mlflow.db'}"
    lines = []
    if report:
        lines.append(f"report:        {report}")
    lines.append(f"MLflow store:  {mlflow_uri}")
    if mlflow_uri.startswith(("http://", "https://")):
        lines.append(f"MLflow UI:     {mlflow_uri}")
    else:
        lines.append(f"MLflow UI:     .venv/bin/mlflow ui --backend-store-uri {mlflow_uri} --port 5000  (then http://127.0.0.1:5000)")
    if os.environ.get("PREFECT_API_URL"):
        lines.append(f"Prefect UI:    {os.environ['PREFECT_API_URL'].removesuffix('/api')}")
    else:
        lines.append(f"Prefect UI:    PREFECT_HOME={wd / 'prefect'} .venv/bin/prefect server start  (then http://127.0.0.1:4200)")
    lines.append("compare runs:  .venv/bin/coala runs compare")
    return "\n".join(lines)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` in the main thread (inside a flow run,
    Prefect's engine installs its own bridge that raises ``TerminationSignal``, a ``BaseException`` too).
    Either unwinds the stack through the runs' ``finally`` blocks; the process then exits 143 (128 + SIGTERM).
    """

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    except BaseException as err:
        if type(err).__name__ == "TerminationSignal" or (isinstance(err, KeyboardInterrupt) and err.args
                                                         and err.args[0] == f"signal {int(signal.SIGTERM)}"):
            print("terminated (SIGTERM); MLflow runs ended KILLED; rerun the same command to resume", file=sys.stderr)
            sys.exit(128 + int(signal.SIGTERM))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
