"""`coala data`: build EduFeedback by APS, import preference files, validate a pairs file.

Each build writes the Parquet file through ``storage.dataset.write_dataset`` and the dataset card beside it
(``NAME.card.md``, ``NAME.card.json``). Bad input exits 1 with ``file:line: reason`` and writes nothing;
``--skip-invalid`` skips malformed lines and lists them in the card instead. ``--config YAML`` loads the
``edufeedback`` or ``import`` section; flags override it.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import typer

from coala_cli._common import handle_errors
from coala_core.config import StageConfig
from coala_core.data import (
    DatasetStats,
    EduFeedbackConfig,
    ImportConfig,
    build_edufeedback,
    card_paths,
    import_pairs,
)
from coala_core.errors import ConfigError
from storage.dataset import write_dataset
from storage.pairs import PAIRS_SCHEMA, validate_pairs

app = typer.Typer(no_args_is_help=True, help="Build, import and validate preference-pair datasets.")

MAX_PROBLEMS_SHOWN = 50


class ConversationFormat(StrEnum):
    mathdial = "mathdial"
    messages = "messages"


class PairsFormat(StrEnum):
    trl = "trl"
    hh = "hh"
    ultrafeedback = "ultrafeedback"
    sentiment = "sentiment"
    rated = "rated"


class APSMode(StrEnum):
    drop = "drop"
    wrap = "wrap"


class Direction(StrEnum):
    later_is_worse = "later-is-worse"
    reversed = "reversed"


def _value(e: Enum | None) -> Any:
    return None if e is None else e.value


def _splits(text: str | None) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` -> the three fraction fields."""
    if text is None:
        return {}
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--splits must be three numbers 'train,validation,test', got {text!r}") from None
    if len(values) != 3:
        raise ConfigError(f"--splits must be three numbers 'train,validation,test', got {len(values)} in {text!r}")
    return dict(zip(("train_fraction", "validation_fraction", "test_fraction"), values, strict=True))


def _role_map(text: str | None) -> dict[str, str] | None:
    """``"user=student,assistant=tutor"`` -> mapping (values checked by the config)."""
    if text is None:
        return None
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"--role-map items must be ROLE=tutor|student|system|skip, got {item!r}")
        role, target = (s.strip() for s in item.split("=", 1))
        out[role] = target
    return out


def _config(cls: type[StageConfig], path: Path | None, section: str, overrides: dict[str, Any]) -> Any:
    if path is not None:
        return cls.from_yaml(path, section=section, **overrides)
    return cls.build({}, **overrides)


def _write(df: pl.DataFrame, stats: DatasetStats, cfg: StageConfig, output: Path) -> None:
    info, card = write_dataset(df, stats, cfg, output, extra_metadata={"source": stats.source, "format": stats.format})
    typer.echo(f"wrote {info.n_rows} pairs to {info.path} (digest {info.digest[:16]})")
    for src, per_split in card.content["counts"].items():
        parts = ", ".join(f"{sp} {v['rows']} rows/{v['groups']} groups" for sp, v in per_split.items())
        typer.echo(f"  {src}: {parts}")
    if stats.drops:
        typer.echo("  dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.drops.items())))
    if stats.invalid:
        typer.echo(f"  skipped {len(stats.invalid)} invalid line(s) (listed in the card)")
    typer.echo("card: " + ", ".join(str(p) for p in card_paths(output)))


@app.command("build-edufeedback")
@handle_errors
def build_edufeedback_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Conversations file (.jsonl[.gz], .json, .parquet)."),
    format: ConversationFormat | None = typer.Option(None, "--format", "-f", help="Default mathdial."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs Parquet file to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML file; its 'edufeedback' section."),
    aps_mode: APSMode | None = typer.Option(None, help="drop (default: no triplet without T_{i+2}) | wrap (authors' code)."),
    direction: Direction | None = typer.Option(None, help="later-is-worse (default) | reversed."),
    tutor_role: str | None = typer.Option(None, help="Input role of the tutor (messages format; default assistant)."),
    role_map: str | None = typer.Option(None, help="ROLE=tutor|student|system|skip,... (messages format)."),
    include_opening_tutor_turns: bool | None = typer.Option(
        None, "--include-opening-tutor-turns/--no-include-opening-tutor-turns",
        help="Keep tutor turns before the first student turn in every prompt (paper: no)."),
    group_field: str | None = typer.Option(None, help="Record field grouping conversations for splits."),
    id_field: str | None = typer.Option(None, help="Record field naming the conversation (default 'id')."),
    source: str | None = typer.Option(None, help="Value of the 'source' column."),
    splits: str | None = typer.Option(None, help="Group fractions 'train,validation,test' (default 0.8,0.1,0.1)."),
    seed: int | None = typer.Option(None, help="Seed of the split and the --limit subset (default 0)."),
    limit: int | None = typer.Option(None, help="Keep at most this many rows, as whole groups (seeded)."),
    max_prompt_chars: int | None = typer.Option(None, help="Drop rows whose prompt is longer (characters)."),
    max_response_chars: int | None = typer.Option(None, help="Drop rows whose chosen or rejected is longer."),
    dedup: bool | None = typer.Option(None, "--dedup/--no-dedup", help="Drop repeated (prompt, chosen, rejected)."),
    skip_invalid: bool | None = typer.Option(None, "--skip-invalid/--no-skip-invalid",
                                             help="Skip malformed lines (listed in the card) instead of stopping."),
) -> None:
    """Preference triplets from tutoring conversations by the Alternating Population Strategy."""
    overrides = dict(format=_value(format), aps_mode=_value(aps_mode), direction=_value(direction), tutor_role=tutor_role,
                     role_map=_role_map(role_map), include_opening_tutor_turns=include_opening_tutor_turns,
                     group_field=group_field, id_field=id_field, source=source, seed=seed, limit=limit,
                     max_prompt_chars=max_prompt_chars, max_response_chars=max_response_chars, dedup=dedup,
                     skip_invalid=skip_invalid, **_splits(splits))
    cfg = _config(EduFeedbackConfig, config, "edufeedback", overrides)
    df, stats = build_edufeedback(input, cfg)
    _write(df, stats, cfg, output)


@app.command("import")
@handle_errors
def import_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Preference file (.jsonl[.gz], .json, .parquet, .csv)."),
    format: PairsFormat | None = typer.Option(None, "--format", "-f", help="Required here or in --config."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs Parquet file to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML file; its 'import' section."),
    source: str | None = typer.Option(None, help="Value of the 'source' column (default: the format)."),
    prompt_field: str | None = typer.Option(None, help="rated: prompt column (default 'prompt')."),
    response_field: str | None = typer.Option(None, help="rated: response column (default 'response')."),
    score_field: str | None = typer.Option(None, help="rated: score column (default 'score'; HelpSteer: helpfulness)."),
    text_field: str | None = typer.Option(None, help="sentiment: text column (default 'text')."),
    label_field: str | None = typer.Option(None, help="sentiment: label column (default 'label')."),
    positive_labels: str | None = typer.Option(None, help="sentiment: comma-separated positive labels."),
    negative_labels: str | None = typer.Option(None, help="sentiment: comma-separated negative labels."),
    drop_ties: bool | None = typer.Option(None, "--drop-ties/--keep-ties", help="ultrafeedback: drop equal scores."),
    splits: str | None = typer.Option(None, help="Group fractions 'train,validation,test' (default 0.8,0.1,0.1)."),
    seed: int | None = typer.Option(None, help="Seed of pairing, split and --limit subset (default 0)."),
    limit: int | None = typer.Option(None, help="Keep at most this many rows, as whole groups (seeded)."),
    max_prompt_chars: int | None = typer.Option(None, help="Drop rows whose prompt is longer (characters)."),
    max_response_chars: int | None = typer.Option(None, help="Drop rows whose chosen or rejected is longer."),
    dedup: bool | None = typer.Option(None, "--dedup/--no-dedup", help="Drop repeated (prompt, chosen, rejected)."),
    skip_invalid: bool | None = typer.Option(None, "--skip-invalid/--no-skip-invalid",
                                             help="Skip malformed lines (listed in the card) instead of stopping."),
) -> None:
    """Import a preference file in a standard format to the canonical pairs table."""

    def labels(text: str | None) -> tuple[str, ...] | None:
        return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())

    overrides = dict(format=_value(format), source=source, prompt_field=prompt_field, response_field=response_field,
                     score_field=score_field, text_field=text_field, label_field=label_field,
                     positive_labels=labels(positive_labels), negative_labels=labels(negative_labels),
                     drop_ties=drop_ties, seed=seed, limit=limit, max_prompt_chars=max_prompt_chars,
                     max_response_chars=max_response_chars, dedup=dedup, skip_invalid=skip_invalid, **_splits(splits))
    cfg = _config(ImportConfig, config, "import", overrides)
    df, stats = import_pairs(input, cfg)
    _write(df, stats, cfg, output)


@app.command("validate")
@handle_errors
def validate_cmd(path: Path = typer.Argument(..., help="Pairs Parquet file.")) -> None:
    """Check a pairs file: schema, content rules, digest; print counts per source and split. Exit 1 on problems."""
    report = validate_pairs(path)
    typer.echo(f"file: {path}")
    typer.echo("schema: " + ("ok" if report.schema_ok else "MISMATCH") + " (expected "
               + ", ".join(f"{f.name}: {f.type}" for f in PAIRS_SCHEMA) + ")")
    typer.echo(f"rows: {report.n_rows}")
    typer.echo(f"digest: {report.digest} (stored: {report.stored_digest})")
    for src, per_split in report.counts.items():
        typer.echo(f"  {src}: " + ", ".join(f"{sp} {n}" for sp, n in per_split.items()))
    if report.ok:
        typer.echo("problems: none")
        return
    typer.echo(f"problems: {len(report.problems)}", err=True)
    for p in report.problems[:MAX_PROBLEMS_SHOWN]:
        typer.echo("  " + p.render(path), err=True)
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        typer.echo(f"  ... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more", err=True)
    raise typer.Exit(1)
