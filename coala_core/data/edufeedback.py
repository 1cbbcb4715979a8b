"""EduFeedback: conversations -> APS triplets -> curated, group-split canonical pairs (pure; no writes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from coala_core.data.aps import APSStats, aps_triplets, label_statistics
from coala_core.data.config import EduFeedbackConfig
from coala_core.data.conversations import PARSERS, TUTOR, Conversation, message_list
from coala_core.data.curation import DatasetStats, finalize
from coala_core.data.sources import InvalidRecord, Record, collect, read_config_records, source_split
from coala_core.errors import DataError, DuplicateError


def load_conversations(
    source: str | Path | Iterable[Mapping[str, Any]], cfg: EduFeedbackConfig
) -> tuple[list[Conversation], list[InvalidRecord], int]:
    """Parse a conversations file (or dicts) in ``cfg.format``; returns (conversations, skipped, n_records).

    A malformed record raises DataError ``file:line: reason`` unless ``cfg.skip_invalid``.
    """
    records, invalid = read_config_records(source, cfg)
    n_records = len(records) + len(invalid)  # lines that were not JSON objects count as records too
    parse = PARSERS[cfg.format]

    def parse_one(rec: Record) -> tuple[Record, Conversation]:
        conv = parse(rec, cfg)
        if (split := source_split(rec, cfg)) is not None:
            conv.meta["source_split"] = split
        return rec, conv

    parsed = collect(records, parse_one, skip_invalid=cfg.skip_invalid, invalid=invalid)
    first_line: dict[str, str] = {}
    for rec, conv in parsed:
        if conv.conversation_id in first_line:
            raise DuplicateError(
                f"{rec.where}: conversation id {conv.conversation_id!r} already used at {first_line[conv.conversation_id]} "
                f"(field {cfg.id_field!r} must be unique)"
            )
        first_line[conv.conversation_id] = rec.where
    convs = [conv for _, conv in parsed]
    if convs and cfg.format == "messages" and not any(c.of(TUTOR) for c in convs):
        roles = sorted({role for rec, _ in parsed for role, _ in message_list(rec)[1]})
        raise DataError(
            f"no turn has the tutor role (tutor_role={cfg.tutor_role!r}, role_map={cfg.role_map}); "
            f"roles in the input: {roles}; pass --tutor-role or --role-map"
        )
    return convs, invalid, n_records


def build_edufeedback(
    conversations: str | Path | Iterable[Mapping[str, Any]] | Sequence[Conversation], cfg: EduFeedbackConfig
) -> tuple[pl.DataFrame, DatasetStats]:
    """Build EduFeedback pairs by APS from a path, raw records or parsed conversations.

    Returns the canonical table (columns of ``storage.pairs.PAIRS_SCHEMA``; rows in conversation and
    student-turn order) and the statistics the dataset card reports.
    """
    invalid: list[InvalidRecord] = []
    if isinstance(conversations, Sequence) and conversations and isinstance(conversations[0], Conversation):
        convs = list(conversations)  # type: ignore[arg-type]
        n_records = len(convs)
    else:
        convs, invalid, n_records = load_conversations(conversations, cfg)  # type: ignore[arg-type]
    stats = DatasetStats(source=cfg.source_name, format=cfg.format, n_records=n_records, invalid=invalid)
    aps = APSStats()
    rows = [row for conv in convs for row in aps_triplets(conv, cfg, aps)]
    stats.builder = {"aps_mode": cfg.aps_mode, "direction": cfg.direction, **aps.to_dict()}
    df = finalize(rows, cfg, stats)
    stats.labels = label_statistics(rows_from_frame(df))
    return df, stats


def rows_from_frame(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Canonical table -> row dicts with ``meta`` decoded (for statistics)."""
    import json

    return [{**r, "meta": json.loads(r["meta"])} for r in df.iter_rows(named=True)]
