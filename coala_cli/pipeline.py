"""``coala pipeline run|serve``, ``coala serve`` and ``coala runs compare``.

Prefect and the flows are imported inside the commands, after :func:`flows.runtime.prepare_environment`
has set the embedded-service defaults (Prefect reads its settings at import).
"""

from __future__ import annotations

from pathlib import Path

import typer

from coala_cli._common import handle_errors
from coala_cli.runs_compare import compare


def _load(config: Path, overrides: list[str]):  # noqa: ANN202 - returns (PipelineConfig, dict)
    from flows.config import PipelineConfig, parse_overrides

    extra = parse_overrides(overrides)
    cfg = PipelineConfig.from_yaml(config, extra)
    from flows.runtime import prepare_environment

    prepare_environment(cfg.workdir)
    return cfg, extra


@handle_errors
def run(config: Path = typer.Option(..., "--config", help="pipeline YAML (sections run, dataset, features, phase1, phase2, evaluation)"),
        set_: list[str] = typer.Option([], "--set", help="override SECTION.FIELD=VALUE (repeatable)", show_default="none"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars", show_default="false: bars on a terminal")) -> None:
    """Run the whole DAG once: dataset -> features -> Phase I -> Phase II -> evaluation."""
    cfg, extra = _load(config, set_)
    from coala_cli.progress import pipeline_progress
    from flows.runtime import interrupt_on_sigterm, pipeline_session, where_to_look

    with interrupt_on_sigterm(), pipeline_session(cfg.workdir), pipeline_progress(quiet=quiet):  # workdir lock; repairs runs of killed pipelines
        from flows.pipeline import coala_pipeline

        report = coala_pipeline(str(config.resolve()), extra)
    typer.echo(compare_hint(where_to_look(cfg.workdir, report.files.get("report")), config))


def compare_hint(text: str, config: Path) -> str:
    """The printed hint to compare runs names this config, so it copy-pastes as is."""
    import shlex

    return text.replace("coala runs compare", f"coala runs compare --config {shlex.quote(str(config))}")


@handle_errors
def serve(config: Path = typer.Option(..., "--config", help="pipeline YAML"),
          cron: str = typer.Option(..., "--cron", help='schedule, e.g. "0 3 * * *"'),
          timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of the cron, e.g. Europe/Paris"),
          concurrency: int = typer.Option(1, "--concurrency", min=1, help="runs of this deployment at a time"),
          overlap: str = typer.Option("wait", "--overlap", help="a run due while --concurrency runs are active: "
                                      "'wait' (queued until one finishes) or 'skip' (cancelled)"),
          name: str = typer.Option("coala-scheduled", "--name", help="deployment name"),
          set_: list[str] = typer.Option([], "--set", help="override SECTION.FIELD=VALUE (repeatable)", show_default="none")) -> None:
    """Serve the pipeline as a scheduled Prefect deployment (blocks; Ctrl-C stops serving).

    At most --concurrency runs at a time; a run that comes due meanwhile waits in the queue (--overlap wait,
    the default) or is cancelled (--overlap skip). The run form takes typed overrides (flows.params)."""
    from coala_core.errors import ConfigError

    if overlap not in ("wait", "skip"):
        raise ConfigError(f"--overlap: expected 'wait' or 'skip', got {overlap!r}")
    schedule = deployment_schedule(cron, timezone)
    _cfg, extra = _load(config, set_)
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.pipeline import coala_pipeline

    strategy = ConcurrencyLimitStrategy.ENQUEUE if overlap == "wait" else ConcurrencyLimitStrategy.CANCEL_NEW
    coala_pipeline.serve(name=name, schedule=schedule,
                         global_limit=ConcurrencyLimitConfig(limit=concurrency, collision_strategy=strategy),
                         parameters={"config_path": str(config.resolve()), "overrides": extra})


def deployment_schedule(cron: str, timezone: str):  # noqa: ANN201 - a prefect Schedule
    """A Prefect cron schedule in ``timezone``; bad cron or time zone -> ConfigError."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from coala_core.errors import ConfigError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone: unknown IANA time zone {timezone!r} (e.g. UTC, Europe/Paris)") from None
    from prefect.schedules import Cron

    try:
        return Cron(cron, timezone=timezone)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"--cron: not a valid cron expression: {cron!r}") from err


def register(app: typer.Typer) -> None:
    pipe = typer.Typer(no_args_is_help=True)
    pipe.command("run")(run)
    pipe.command("serve")(serve)
    app.add_typer(pipe, name="pipeline", help="Run or serve the whole DAG.")
    app.command("serve")(serve)
    runs = typer.Typer(no_args_is_help=True)
    runs.command("compare")(compare)
    from coala_cli.runs_repair import repair

    runs.command("repair")(repair)
    app.add_typer(runs, name="runs", help="Compare tracked runs.")
