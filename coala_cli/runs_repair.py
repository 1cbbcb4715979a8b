"""`coala runs repair`: mark the Prefect and MLflow runs of killed pipelines (kill -9) Crashed and KILLED."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from coala_cli._common import handle_errors


@handle_errors
def repair(workdir: Path = typer.Option(Path(".coala"), "--workdir", help="the pipeline's run.workdir"),
           wait_s: float = typer.Option(0.0, "--wait", help="seconds to wait for a running pipeline on the workdir")) -> None:
    """Find the runs of pipelines on WORKDIR that died without ending them and end them (Crashed / KILLED).

    A running pipeline holds the workdir; then nothing is touched and the command exits 1 naming it. The next
    `coala pipeline run` on the workdir does the same repair by itself.
    """
    from flows.runtime import prepare_environment

    prepare_environment(workdir)
    from flows.recovery import repair_dead_sessions
    from flows.runtime import workdir_lock

    with workdir_lock(workdir, wait_s=wait_s, purpose="runs repair"):
        done = repair_dead_sessions(workdir)
    typer.echo(json.dumps(done))
