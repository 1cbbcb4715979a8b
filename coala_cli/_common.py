"""Helpers shared by the CLI groups: error handling that maps CoalaError to exit 1, unbuilt commands to 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from coala_core.errors import CoalaError, NotBuiltError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Report project errors as one clear message on stderr (exit 1; unbuilt features exit 2), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotBuiltError as err:
            raise fail(str(err), EXIT_USAGE) from None
        except CoalaError as err:
            raise fail(str(err), EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def not_built(command: str, issue: str) -> Callable[..., None]:
    """A command that is part of the CLI contract but not implemented yet: says so and exits 2."""

    def _cmd(ctx: typer.Context) -> None:
        typer.echo(f"`coala {command}` is not built yet ({issue}).", err=True)
        raise typer.Exit(EXIT_USAGE)

    _cmd.__doc__ = f"[not built yet] {issue}"
    return _cmd
