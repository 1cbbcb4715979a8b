"""Fault-injection helpers: run `coala` commands as real processes, watch their stores, kill -9 them."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COALA = str(Path(sys.executable).parent / "coala")
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
for _k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
    ENV.pop(_k, None)


def coala(*args: object, wait: bool = True, timeout: float = 600, extra_env: dict[str, str] | None = None,
          **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [COALA, *(str(a) for a in args)]
    env = {**ENV, **(extra_env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def sql(db: Path, query: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def mlflow_runs(workdir: Path) -> list[tuple[str, str]]:
    """(run name, status) of every MLflow run in the workdir's embedded store."""
    return sql(workdir / "mlflow.db", "select name, status from runs")


def prefect_flow_runs(workdir: Path) -> list[tuple[str, str]]:
    """(flow run name, state type) of every Prefect flow run in the workdir's ephemeral database."""
    return sql(workdir / "prefect" / "prefect.db", "select name, state_type from flow_run")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(cond: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return cond()


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
