"""`coala data` commands (being built)."""

import typer

from coala_cli._common import not_built

app = typer.Typer(no_args_is_help=True)
app.command("build-edufeedback", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(not_built("data build-edufeedback", "issue #3"))
app.command("import", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(not_built("data import", "issue #3"))
app.command("validate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(not_built("data validate", "issue #2"))
