"""Commands being built; until then they say so and exit 2."""

import typer

from coala_cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    for name in ("train", "evaluate", "baseline", "score"):
        app.command(name, context_settings=_EXTRA)(not_built(name, "issues #5/#6"))
