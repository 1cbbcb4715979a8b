"""The ``coala`` command line: one sub-command group per pipeline stage."""

from __future__ import annotations

import os

import typer

from coala_cli import data, features, generate, pipeline, train

app = typer.Typer(
    name="coala",
    help="COALA: convex preference alignment on frozen language-model features (Feng & Pilanci, ICML 2026).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Set the infrastructure defaults (telemetry off) before any stage runs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


app.add_typer(data.app, name="data", help="Build, import and validate preference-pair datasets.")
app.add_typer(features.app, name="features", help="Extract pooled hidden-state features from a frozen LM.")
train.register(app)
pipeline.register(app)
generate.register(app)


if __name__ == "__main__":
    app()
