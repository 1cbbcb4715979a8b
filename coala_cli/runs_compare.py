"""``coala runs compare``: recent pipeline runs side by side, read-only.

Columns: the run, the configured Phase I beta beside the one the beta path chose (``coala.chosen.*`` tags
of the parent run) and the Phase II parameters chosen on validation, every other parameter that differs
between the runs, and the headline metrics. ``--html`` / ``--png`` also write the comparison with the
metrics side by side and the Phase I beta paths overlaid. The experiment and the store come from
``--config`` (its ``run.experiment`` and ``run.workdir``) or ``--experiment`` / ``--workdir``; a missing
store or experiment is exit 1, and nothing is created (no empty ``mlflow.db``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from coala_cli._common import fail, handle_errors

CHOSEN = (("phase1.beta", "phase1.beta"), ("phase2.beta_grid", "phase2.beta"), ("phase2.gamma_grid", "phase2.gamma"),
          ("phase2.l2_grid", "phase2.l2"))
METRICS = ("test/accuracy", "test/sigmoid_margin", "test/rewards/margins", "pipeline_wall_s", "total_tflops")
NOISE = ("code_version",)


def resolve_store(config: Path | None, experiment: str | None, workdir: Path | None) -> tuple[str, str]:
    """(tracking URI, experiment name) from the options; raises typer.Exit(1) when the store is absent."""
    name, wd = "coala", Path(".coala")
    if config is not None:
        from flows.config import PipelineConfig

        cfg = PipelineConfig.from_yaml(config)
        name, wd = cfg.run.experiment, cfg.workdir
    if experiment:
        name = experiment
    if workdir is not None:
        wd = workdir
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = Path(wd).resolve() / "mlflow.db"
        if not db.is_file():
            raise fail(f"no MLflow store at {db} (run a pipeline first, or pass --config / --workdir)")
        uri = f"sqlite:///{db.as_posix()}"
    return uri, name


def gather(client: Any, experiment_id: str, limit: int) -> list[Any]:
    return client.search_runs([experiment_id], "tags.`coala.pipeline` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=limit)


def table(runs: list[Any]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the comparison (see the module docstring)."""
    header = ["run", "name", "status"]
    fixed: list[tuple[str, str]] = []  # (column, "param:key" | "chosen:key" | "metric:key")
    for configured, chosen in CHOSEN:
        if any(configured in r.data.params for r in runs):
            fixed.append((configured, f"param:{configured}"))
        fixed.append((f"{chosen} (chosen)", f"chosen:{chosen}"))
    shown = {c for c, _ in CHOSEN}
    keys = sorted({k for r in runs for k in r.data.params} - shown - set(NOISE))
    differing = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    cols = fixed + [(k, f"param:{k}") for k in differing] + [(m, f"metric:{m}") for m in METRICS]
    header += [c for c, _ in cols]
    rows = []
    for r in runs:
        row = [r.info.run_id[:8], r.info.run_name or "-", r.info.status]
        for _, src in cols:
            kind, key = src.split(":", 1)
            if kind == "param":
                v: Any = r.data.params.get(key)
            elif kind == "chosen":
                v = r.data.tags.get(f"coala.chosen.{key}")
            else:
                v = r.data.metrics.get(key)
                v = None if v is None else f"{v:.4g}"
            row.append("-" if v is None else str(v))
        rows.append(row)
    return header, rows


def render(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "no pipeline runs yet"
    all_rows = [header, *rows]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in all_rows)


def beta_path(client: Any, run_id: str) -> list[dict[str, Any]]:
    """The parent run's ``training/beta_path.json`` (empty when it has none)."""
    import json
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, "training/beta_path.json", tmp)
            return list(json.loads(Path(local).read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - runs from before this artifact existed
        return []


@handle_errors
def compare(config: Path | None = typer.Option(None, "--config", help="pipeline YAML: its run.experiment and run.workdir", show_default="none"),
            experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment", show_default="the config's, else coala"),
            workdir: Path | None = typer.Option(None, "--workdir", help="where the embedded MLflow store lives", show_default="the config's, else .coala"),
            limit: int = typer.Option(10, "--limit", min=1, help="most recent runs to compare"),
            html: Path | None = typer.Option(None, "--html", help="also write the comparison as a self-contained HTML page", show_default="none"),
            png: Path | None = typer.Option(None, "--png", help="also write the figure (metrics, beta paths) as PNG", show_default="none")) -> None:
    """Recent pipeline runs side by side: chosen beta and Phase II params next to the configured ones, every
    parameter that differs, held-out metrics. Read-only."""
    for key, value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "1")):
        os.environ.setdefault(key, value)
    uri, name = resolve_store(config, experiment, workdir)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise fail(f"no MLflow experiment {name!r} in {uri}")
    runs = gather(client, exp.experiment_id, limit)
    header, rows = table(runs)
    typer.echo(render(header, rows))
    if (html or png) and runs:
        from coala_core.report.compare import compare_html, compare_png
        from storage.atomic import atomic_write_bytes

        series = [{"label": f"{r.info.run_name or r.info.run_id[:8]}", "metrics": r.data.metrics,
                   "beta_path": beta_path(client, r.info.run_id),
                   "chosen_beta": r.data.tags.get("coala.chosen.phase1.beta")} for r in runs]
        figure = compare_png(series, METRICS[:3])
        if png:
            atomic_write_bytes(png, figure)
            typer.echo(f"figure: {png}")
        if html:
            atomic_write_bytes(html, compare_html(header, rows, figure, f"COALA runs of {name}").encode("utf-8"))
            typer.echo(f"page: {html}")
