"""Commands being built; until then they say so and exit 2."""

import typer

from coala_cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    pipe = typer.Typer(no_args_is_help=True)
    pipe.command("run", context_settings=_EXTRA)(not_built("pipeline run", "issue #7"))
    app.add_typer(pipe, name="pipeline", help="Run the whole DAG.")
    app.command("serve", context_settings=_EXTRA)(not_built("serve", "issue #7"))
    runs = typer.Typer(no_args_is_help=True)
    runs.command("compare", context_settings=_EXTRA)(not_built("runs compare", "issue #7"))
    app.add_typer(runs, name="runs", help="Compare tracked runs.")
