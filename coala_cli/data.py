"""`coala data`: build EduFeedback by APS, import preference files, validate a pairs file.

Each build writes the Parquet file through ``storage.dataset.write_dataset`` and the dataset card beside it
(``NAME.card.md``, ``NAME.card.json``). Bad input exits 1 with ``file:line: reason`` and writes nothing;
``--skip-invalid`` skips malformed lines and lists them in the card instead. ``--config YAML`` loads the
``edufeedback`` or ``import`` section; flags override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import typer

from coala_cli._common import config_option, handle_errors, set_options
from coala_core.config import StageConfig, load_yaml
from coala_core.data import (
    DatasetStats,
    EduFeedbackConfig,
    ImportConfig,
    build_edufeedback,
    card_paths,
    import_pairs,
)
from coala_core.data.detect import suggest_format
from coala_core.data.sources import read_records
from coala_core.errors import ConfigError
from storage.dataset import write_dataset
from storage.pairs import PAIRS_SCHEMA, validate_pairs

app = typer.Typer(no_args_is_help=True, help="Build, import and validate preference-pair datasets.")

MAX_PROBLEMS_SHOWN = 50


E = EduFeedbackConfig
IMP = ImportConfig


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


def _mapping(text: str | None, flag: str, targets: str) -> dict[str, str] | None:
    """``"user=student,assistant=tutor"`` -> mapping (values checked by the config)."""
    if text is None:
        return None
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"{flag} items must be NAME={targets}, got {item!r}")
        key, target = (s.strip() for s in item.split("=", 1))
        out[key] = target
    return out


def _list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


SPLITS_HELP = "Group fractions 'train,validation,test'."
SPLITS_DEFAULT = "0.8,0.1,0.1"


def _reading(input_format: str | None, delimiter: str | None, strip_quotes: bool | None, unescape_html: bool | None,
             split_field: str | None, split_names: str | None) -> dict[str, Any]:
    """The file-reading and source-split options shared by both builders."""
    return set_options(input_format=input_format, delimiter="\t" if delimiter in ("\\t", "tab") else delimiter,
                       strip_quotes=strip_quotes, unescape_html=unescape_html, split_field=split_field,
                       split_names=_mapping(split_names, "--split-names", "train|validation|test"))


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
        lines = ", ".join(str(r.line) for r in stats.invalid[:20]) + (", ..." if len(stats.invalid) > 20 else "")
        typer.echo(f"  skipped {len(stats.invalid)} invalid line(s): line {lines} (reasons in the card)")
    typer.echo("card: " + ", ".join(str(p) for p in card_paths(output)))


@app.command("build-edufeedback")
@handle_errors
def build_edufeedback_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Conversations file (.jsonl[.gz], .json, .csv, .tsv, .parquet)."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs Parquet file to write."),
    format: str | None = config_option(E, "format", "--format", "-f", help="Record layout of the conversations."),
    config: Path | None = typer.Option(None, "--config", help="YAML file; its 'edufeedback' section (flags override it)."),
    aps_mode: str | None = config_option(E, "aps_mode", help="drop: no triplet without T_{i+2}; wrap: the authors' code."),
    direction: str | None = config_option(E, "direction", help="later-is-worse: chosen T_{i+1}, rejected T_{i+2}."),
    tutor_role: str | None = config_option(E, "tutor_role", help="Input role of the tutor, as the file names it (messages format)."),
    role_map: str | None = typer.Option(None, help="ROLE=tutor|student|system|skip,... with the file's role names (messages format).",
                                        show_default="none", metavar="ROLE=SPEAKER,..."),
    include_opening_tutor_turns: bool | None = config_option(
        E, "include_opening_tutor_turns", help="Keep tutor turns before the first student turn in every prompt (paper: no)."),
    group_field: str | None = config_option(E, "group_field", help="Record field grouping conversations for splits (none: qid for mathdial)."),
    id_field: str | None = config_option(E, "id_field", help="Record field naming the conversation."),
    source: str | None = config_option(E, "source", help="Value of the 'source' column (none: from the format)."),
    splits: str | None = typer.Option(None, help=SPLITS_HELP, show_default=SPLITS_DEFAULT, metavar="TRAIN,VAL,TEST"),
    seed: int | None = config_option(E, "seed", help="Seed of the split and the --limit subset."),
    limit: int | None = config_option(E, "limit", help="Keep at most this many rows, as whole groups (seeded)."),
    max_prompt_chars: int | None = config_option(E, "max_prompt_chars", help="Drop rows whose prompt is longer (characters)."),
    max_response_chars: int | None = config_option(E, "max_response_chars", help="Drop rows whose chosen or rejected is longer."),
    dedup: bool | None = config_option(E, "dedup", help="Drop repeated (prompt, chosen, rejected)."),
    skip_invalid: bool | None = config_option(E, "skip_invalid", help="Skip malformed lines (listed in the card) instead of stopping."),
    input_format: str | None = config_option(E, "input_format", help="How to read --input (auto: by extension)."),
    delimiter: str | None = config_option(E, "delimiter", help="CSV/TSV field separator ('tab' for a tab; none: by format)."),
    strip_quotes: bool | None = config_option(E, "strip_quotes", help="Remove one layer of quotes wrapping a whole text value."),
    unescape_html: bool | None = config_option(E, "unescape_html", help="Decode HTML entities (&#039; -> ') in text values."),
    split_column: str | None = config_option(E, "split_field", "--split-column",
                                             help="Keep the source's own split: the field naming it (groups still respected)."),
    split_names: str | None = typer.Option(None, help="VALUE=train|validation|test,... for --split-column.",
                                           show_default="train/training, validation/valid/val/dev, test/testing",
                                           metavar="VALUE=SPLIT,..."),
) -> None:
    """Preference triplets from tutoring conversations by the Alternating Population Strategy."""
    overrides = set_options(format=format, aps_mode=aps_mode, direction=direction, tutor_role=tutor_role,
                            role_map=_mapping(role_map, "--role-map", "tutor|student|system|skip"),
                            include_opening_tutor_turns=include_opening_tutor_turns, group_field=group_field,
                            id_field=id_field, source=source, seed=seed, limit=limit, max_prompt_chars=max_prompt_chars,
                            max_response_chars=max_response_chars, dedup=dedup, skip_invalid=skip_invalid,
                            **_reading(input_format, delimiter, strip_quotes, unescape_html, split_column, split_names),
                            **_splits(splits))
    cfg = _config(EduFeedbackConfig, config, "edufeedback", overrides)
    df, stats = build_edufeedback(input, cfg)
    _write(df, stats, cfg, output)


@app.command("import")
@handle_errors
def import_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Preference file (.jsonl[.gz], .json, .csv, .tsv, .parquet)."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs Parquet file to write."),
    format: str | None = config_option(IMP, "format", "--format", "-f",
                                       help="Layout of the records (required here or in --config; a hint names it when missing)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file; its 'import' section (flags override it)."),
    source: str | None = config_option(IMP, "source", help="Value of the 'source' column (none: the format)."),
    prompt_field: str | None = config_option(IMP, "prompt_field", help="rated: prompt column."),
    response_field: str | None = config_option(IMP, "response_field", help="rated: response column."),
    score_field: str | None = config_option(IMP, "score_field", help="rated: score column (HelpSteer: helpfulness)."),
    text_field: str | None = config_option(IMP, "text_field", help="sentiment: text column."),
    label_field: str | None = config_option(IMP, "label_field", help="sentiment: label column."),
    positive_labels: str | None = config_option(IMP, "positive_labels", help="sentiment: comma-separated positive labels."),
    negative_labels: str | None = config_option(IMP, "negative_labels", help="sentiment: comma-separated negative labels."),
    ignore_labels: str | None = config_option(IMP, "ignore_labels",
                                              help="sentiment: labels to drop (counted in the card), e.g. neutral; '*' = any other."),
    drop_ties: bool | None = config_option(IMP, "drop_ties", "--drop-ties/--keep-ties", help="ultrafeedback: drop equal scores."),
    splits: str | None = typer.Option(None, help=SPLITS_HELP, show_default=SPLITS_DEFAULT, metavar="TRAIN,VAL,TEST"),
    seed: int | None = config_option(IMP, "seed", help="Seed of pairing, split and --limit subset."),
    limit: int | None = config_option(IMP, "limit", help="Keep at most this many rows, as whole groups (seeded)."),
    max_prompt_chars: int | None = config_option(IMP, "max_prompt_chars", help="Drop rows whose prompt is longer (characters)."),
    max_response_chars: int | None = config_option(IMP, "max_response_chars", help="Drop rows whose chosen or rejected is longer."),
    dedup: bool | None = config_option(IMP, "dedup", help="Drop repeated (prompt, chosen, rejected)."),
    skip_invalid: bool | None = config_option(IMP, "skip_invalid", help="Skip malformed lines (listed in the card) instead of stopping."),
    input_format: str | None = config_option(IMP, "input_format", help="How to read --input (auto: by extension)."),
    delimiter: str | None = config_option(IMP, "delimiter", help="CSV/TSV field separator ('tab' for a tab; none: by format)."),
    strip_quotes: bool | None = config_option(IMP, "strip_quotes", help="Remove one layer of quotes wrapping a whole text value."),
    unescape_html: bool | None = config_option(IMP, "unescape_html", help="Decode HTML entities (&#039; -> ') in text values."),
    split_column: str | None = config_option(IMP, "split_field", "--split-column",
                                             help="Keep the source's own split: the field naming it (groups still respected)."),
    split_names: str | None = typer.Option(None, help="VALUE=train|validation|test,... for --split-column.",
                                           show_default="train/training, validation/valid/val/dev, test/testing",
                                           metavar="VALUE=SPLIT,..."),
) -> None:
    """Import a preference file in a standard format to the canonical pairs table."""
    overrides = set_options(format=format, source=source, prompt_field=prompt_field, response_field=response_field,
                            score_field=score_field, text_field=text_field, label_field=label_field,
                            positive_labels=_list(positive_labels), negative_labels=_list(negative_labels),
                            ignore_labels=_list(ignore_labels), drop_ties=drop_ties, seed=seed, limit=limit,
                            max_prompt_chars=max_prompt_chars, max_response_chars=max_response_chars, dedup=dedup,
                            skip_invalid=skip_invalid,
                            **_reading(input_format, delimiter, strip_quotes, unescape_html, split_column, split_names),
                            **_splits(splits))
    if "format" not in overrides and (config is None or "format" not in (load_yaml(config).get("import") or {})):
        raise ConfigError(f"--format is required; {_format_hint(input, overrides)}")
    cfg = _config(ImportConfig, config, "import", overrides)
    df, stats = import_pairs(input, cfg)
    _write(df, stats, cfg, output)


def _format_hint(input: Path, reading: dict[str, Any]) -> str:
    """What the first records of ``input`` look like (read with the reading options given)."""
    keys = ("input_format", "delimiter", "strip_quotes", "unescape_html")
    records, _ = read_records(input, skip_invalid=True, **{k: reading[k] for k in keys if k in reading})
    return suggest_format([r.data for r in records[:50]])


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
