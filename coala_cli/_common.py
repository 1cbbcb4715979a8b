"""Helpers shared by the CLI groups: error handling that maps CoalaError to exit 1, unbuilt commands to 2."""

from __future__ import annotations

import errno
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
        except OSError as err:  # a full disk reached outside storage/ (MLflow, Prefect, a library's own write)
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise fail(f"{err.filename or 'a file'}: no space left on device; free some space and rerun the same command "
                       f"(committed work is kept and resumed)", EXIT_BAD_INPUT) from None
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


# ---------------------------------------------------------------------------------------------------------------
# Options derived from the config classes (one source of truth for defaults, types and descriptions)
# ---------------------------------------------------------------------------------------------------------------


def _type_label(annotation: Any) -> str | None:
    """``Literal['a', 'b']`` -> ``[a|b]``; ``int | None`` -> ``INTEGER``; other types: None (typer's own)."""
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "[" + "|".join(str(a) for a in typing.get_args(annotation)) + "]"
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _type_label(args[0])
    if origin in (tuple, list):
        inner = _type_label(args[0]) if args else None
        return f"{inner or 'TEXT'},..."
    return {int: "INTEGER", float: "FLOAT", str: "TEXT"}.get(annotation)


def _default_label(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "empty"
    return str(value)


def config_option(config_cls: type[Any], field: str, *param_decls: str, help: str | None = None,
                  default_label: str | None = None) -> Any:
    """A typer option for ``config_cls.field``: unset (``None``) unless given, so the config (and a YAML
    ``--config`` section) keeps its value; the help shows the field's type and default from the config class,
    and the field's ``description`` when ``help`` is not given.

    ``param_decls`` default to ``--field-name`` (``--flag/--no-flag`` for booleans).
    """
    info = config_cls.model_fields[field]
    annotation = info.annotation
    is_bool = annotation is bool or annotation == (bool | None)
    flag = "--" + field.replace("_", "-")
    decls = param_decls or ((f"{flag}/--no-{flag[2:]}",) if is_bool else (flag,))
    if default_label is None:
        default_label = "required" if info.is_required() else _default_label(info.get_default(call_default_factory=True))
    choices = _choices(annotation)
    if choices is not None:  # a value outside the choices is a usage error (exit 2) naming them
        def parse(value: str) -> str:
            if value not in choices:
                raise typer.BadParameter(f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")
            return value

        return typer.Option(None, *decls, help=help or info.description or "", show_default=default_label,
                            metavar="[" + "|".join(choices) + "]", parser=parse)
    return typer.Option(None, *decls, help=help or info.description or "", show_default=default_label,
                        metavar=None if is_bool else _type_label(annotation))


def _choices(annotation: Any) -> list[str] | None:
    """The values of a ``Literal`` (or ``Literal | None``) annotation."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _choices(args[0]) if len(args) == 1 else None
    return None


def set_options(**values: Any) -> dict[str, Any]:
    """Only the options the user gave (``None`` = not given), for ``StageConfig.build(..., **overrides)``."""
    return {k: v for k, v in values.items() if v is not None}


#: typer's rich help names types as Python does; show them as click's plain help does
TYPE_NAMES = {"<str>": "TEXT", "<int>": "INTEGER", "<float>": "FLOAT", "<path>": "PATH", "<list[str]>": "TEXT..."}


def fix_flag_help() -> None:
    """Typer's rich help types every flag as ``<bool>`` (``--help`` included), which reads as if the flag took a
    value, and other values as ``<str>``, ``<int>``...; show no type for flags and click's names for the rest.
    Called once by the root app before it renders help."""
    from typer.core import TyperArgument, TyperOption

    if getattr(TyperOption, "_coala_flag_help", False):
        return
    original = TyperOption.display_type_rich
    original_argument = TyperArgument.display_type_rich

    def argument_type_rich(self: Any, ctx: Any) -> str | None:
        shown = original_argument(self, ctx)
        return TYPE_NAMES.get(shown, shown) if isinstance(shown, str) else shown

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        shown = original(self, ctx)
        return TYPE_NAMES.get(shown, shown) if isinstance(shown, str) else shown

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperArgument.display_type_rich = argument_type_rich  # type: ignore[method-assign]
    TyperOption._coala_flag_help = True  # type: ignore[attr-defined]
