"""The ``coala`` command line: one sub-command group per pipeline stage.

Stage modules import heavy libraries (torch, zarr, scipy, mlflow), so the root group loads a stage's module
only when that stage is invoked; ``coala --help`` lists the stages from the table below without importing
them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command

# name -> (module, how the module exposes it: "app" = a typer sub-app, "register" = register(app) adds it, help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("coala_cli.data", "app", "Build, import and validate preference-pair datasets."),
    "features": ("coala_cli.features", "app", "Extract pooled hidden-state features from a frozen LM."),
    "train": ("coala_cli.train", "register", "Phase I (beta path chosen on validation) then Phase II; writes the head."),
    "evaluate": ("coala_cli.train", "register", "Metrics, plots and a markdown report for a head on a feature store."),
    "baseline": ("coala_cli.baseline", "register", "Baseline heads on the same features, compared with the COALA head."),
    "score": ("coala_cli.score", "register", "Rewards of a head for (prompt, response) texts or a feature store's pairs."),
    "pipeline": ("coala_cli.pipeline", "register", "Run the whole DAG (dataset, features, Phase I/II, evaluation)."),
    "serve": ("coala_cli.pipeline", "register", "Serve the pipeline as a scheduled Prefect deployment."),
    "runs": ("coala_cli.pipeline", "register", "Compare tracked MLflow runs."),
    "generate": ("coala_cli.generate", "register", "Head-guided generation (method.md section 7)."),
}


def load_command(name: str) -> Any:
    """Import the stage module behind ``name`` and return its (typer) click command."""
    module_name, kind, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if kind == "app":
        return get_command(module.app)
    tmp = typer.Typer(add_completion=False)
    module.register(tmp)
    group = get_command(tmp)
    if isinstance(group, TyperGroup):
        cmd = group.commands.get(name)
        if cmd is None:
            raise RuntimeError(f"{module_name}.register() did not add the command {name!r}")
        return cmd
    return group


class LazyGroup(TyperGroup):
    """Root group that resolves stage commands on demand (placeholders serve the help listing)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if getattr(ctx, "_coala_resolving", False):
            cmd = load_command(cmd_name)
            cmd.name = cmd_name
            return cmd
        return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][2], callback=None)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from coala_cli._common import fix_flag_help

        fix_flag_help()
        return super().main(*args, **kwargs)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        ctx._coala_resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            ctx._coala_resolving = False


app = typer.Typer(
    name="coala",
    cls=LazyGroup,
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


if __name__ == "__main__":
    app()
