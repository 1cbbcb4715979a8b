"""Process start-up defaults for the pipeline: embedded services unless servers are configured.

Call :func:`prepare_environment` where a process starts (the CLI, a test session), before Prefect is
imported: Prefect reads its settings at import. Nothing here runs at import time.

- Telemetry off: ``MLFLOW_DISABLE_TELEMETRY``, ``PREFECT_SERVER_ANALYTICS_ENABLED``, ``DO_NOT_TRACK``.
- Prefect: with ``PREFECT_API_URL`` unset, flows run against an ephemeral local server whose database lives
  in ``<workdir>/prefect`` (``PREFECT_HOME``), so the runs can later be browsed with ``prefect server start``.
- MLflow: with ``MLFLOW_TRACKING_URI`` unset, ``sqlite:///<workdir>/mlflow.db`` and ``<workdir>/mlartifacts``.
- Interrupts: :func:`interrupt_on_sigterm` turns SIGTERM into an exception in the main thread, so the
  ``finally`` blocks of the stage and parent runs end their MLflow runs (KILLED) before the process exits.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                 "TOKENIZERS_PARALLELISM": "false"}


def prepare_environment(workdir: str | Path) -> dict[str, str]:
    """Set the defaults above (never overriding what the user set); returns what was set."""
    wd = Path(workdir).resolve()
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
    return done


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
