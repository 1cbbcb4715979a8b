"""``coala pipeline run|serve``, ``coala serve`` and ``coala runs compare``.

Prefect and the flows are imported inside the commands, after :func:`flows.runtime.prepare_environment`
has set the embedded-service defaults (Prefect reads its settings at import).
"""

from __future__ import annotations

from pathlib import Path

import typer

from coala_cli._common import handle_errors

COMPARE_PARAMS = ("features.model", "phase1.n_patterns", "phase1.beta", "phase2.loss", "phase2.solver")
COMPARE_METRICS = ("test/accuracy", "test/sigmoid_margin", "test/rewards/margins", "pipeline_wall_s", "total_tflops")


def _load(config: Path, overrides: list[str]):  # noqa: ANN202 - returns (PipelineConfig, dict)
    from flows.config import PipelineConfig, parse_overrides

    extra = parse_overrides(overrides)
    cfg = PipelineConfig.from_yaml(config, extra)
    from flows.runtime import prepare_environment

    prepare_environment(cfg.workdir)
    return cfg, extra


@handle_errors
def run(config: Path = typer.Option(..., "--config", help="pipeline YAML (sections run, dataset, features, phase1, phase2, evaluation)"),
        set_: list[str] = typer.Option([], "--set", help="override SECTION.FIELD=VALUE (repeatable)")) -> None:
    """Run the whole DAG once: dataset -> features -> Phase I -> Phase II -> evaluation."""
    cfg, extra = _load(config, set_)
    from flows.runtime import interrupt_on_sigterm, where_to_look

    with interrupt_on_sigterm():
        from flows.pipeline import coala_pipeline

        report = coala_pipeline(str(config.resolve()), extra)
    typer.echo(where_to_look(cfg.workdir, report.files.get("report")))


@handle_errors
def serve(config: Path = typer.Option(..., "--config", help="pipeline YAML"),
          cron: str = typer.Option(..., "--cron", help='schedule, e.g. "0 3 * * *"'),
          name: str = typer.Option("coala-scheduled", "--name", help="deployment name"),
          set_: list[str] = typer.Option([], "--set", help="override SECTION.FIELD=VALUE (repeatable)")) -> None:
    """Serve the pipeline as a scheduled Prefect deployment (blocks; Ctrl-C stops serving)."""
    _cfg, extra = _load(config, set_)
    from flows.pipeline import coala_pipeline

    coala_pipeline.serve(name=name, cron=cron, parameters={"config_path": str(config.resolve()), "overrides": extra})


@handle_errors
def compare(experiment: str = typer.Option("coala", "--experiment"),
            workdir: Path = typer.Option(Path(".coala"), "--workdir", help="where the embedded MLflow store lives"),
            limit: int = typer.Option(10, "--limit", min=1)) -> None:
    """Table of recent pipeline runs: key params, held-out accuracy, margins, wall time, FLOPs."""
    from flows.runtime import prepare_environment

    prepare_environment(workdir)
    from tasks.tracking import client_for

    client = client_for(workdir)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        typer.echo(f"no MLflow experiment {experiment!r} in {client._tracking_client.tracking_uri}", err=True)
        raise typer.Exit(1)
    import mlflow

    df = mlflow.search_runs([exp.experiment_id], filter_string="tags.`coala.pipeline` = 'true'",
                            order_by=["attributes.start_time DESC"], max_results=limit)
    typer.echo(render_compare(df))


def render_compare(df) -> str:  # noqa: ANN001 - a pandas DataFrame from mlflow.search_runs
    if df.empty:
        return "no pipeline runs yet"
    cols = ["run_id", "tags.mlflow.runName", "status"] + [f"params.{p}" for p in COMPARE_PARAMS] + [f"metrics.{m}" for m in COMPARE_METRICS]
    rows = [["run", "name", "status", *COMPARE_PARAMS, *COMPARE_METRICS]]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            if c == "run_id":
                v = str(v)[:8]
            elif isinstance(v, float):
                v = f"{v:.4g}" if v == v else "-"
            cells.append("-" if v is None else str(v))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def register(app: typer.Typer) -> None:
    pipe = typer.Typer(no_args_is_help=True)
    pipe.command("run")(run)
    pipe.command("serve")(serve)
    app.add_typer(pipe, name="pipeline", help="Run or serve the whole DAG.")
    app.command("serve")(serve)
    runs = typer.Typer(no_args_is_help=True)
    runs.command("compare")(compare)
    app.add_typer(runs, name="runs", help="Compare tracked runs.")
