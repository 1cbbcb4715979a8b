"""`coala features` commands (being built)."""

import typer

from coala_cli._common import not_built

app = typer.Typer(no_args_is_help=True)
app.command("extract", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(not_built("features extract", "issue #4"))
