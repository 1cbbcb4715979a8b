"""`coala generate`: head-guided decoding (method.md section 7)."""

import typer

from coala_cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    app.command("generate", context_settings=_EXTRA)(not_built("generate", "guided decoding is not built yet"))
