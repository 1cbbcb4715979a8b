"""Importers: preference files in common formats -> candidate rows of the canonical pairs table.

Each importer maps line-numbered records to rows (pair_id, prompt, chosen, rejected, group_id, meta) and
counts rows it cannot form by reason; :func:`import_pairs` then curates and splits them (``curation``).
Group ids: rows with the same prompt share a group (so one prompt never spans two splits); rows without a
prompt are their own group.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from coala_core.data.config import ImportConfig
from coala_core.data.curation import DatasetStats, finalize
from coala_core.data.detect import suggest_format
from coala_core.data.messages import as_messages, parse_hh, prompt_key, response_text, split_implicit
from coala_core.data.sources import (
    InvalidRecord,
    Record,
    collect,
    read_config_records,
    record_error,
    require_str,
    source_split,
)
from coala_core.errors import DataError

Row = dict[str, Any]
Importer = Callable[[list[Record], ImportConfig, Counter[str], list[InvalidRecord]], list[Row]]


def _row(cfg: ImportConfig, rec: Record, prompt: list[dict[str, str]], chosen: str, rejected: str, meta: Row) -> Row:
    pid = f"{cfg.source_name}-L{rec.line}"
    group = f"{cfg.source_name}-p{prompt_key(prompt)}" if prompt else pid
    split = source_split(rec, cfg)
    return {"pair_id": pid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "group_id": group,
            "meta": {"line": rec.line, **meta, **({"source_split": split} if split else {})}}


def _field(rec: Record, name: str) -> Any:
    if name not in rec.data or rec.data[name] is None:
        raise record_error(rec, f"missing field {name!r}; {suggest_format([rec.data])}")
    return rec.data[name]


def _trl_one(rec: Record, cfg: ImportConfig, drops: Counter[str]) -> Row | None:
    chosen, rejected = _field(rec, "chosen"), _field(rec, "rejected")
    prompt_value = rec.data.get("prompt")
    if prompt_value is not None:
        prompt = as_messages(rec, prompt_value, "prompt")
        return _row(cfg, rec, prompt, response_text(rec, chosen, "chosen"), response_text(rec, rejected, "rejected"),
                    {"prompt_form": "explicit"})
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _row(cfg, rec, [], chosen, rejected, {"prompt_form": "none"})
    split = split_implicit(as_messages(rec, chosen, "chosen"), as_messages(rec, rejected, "rejected"))
    if isinstance(split, str):
        drops[split] += 1
        return None
    return _row(cfg, rec, *split, {"prompt_form": "implicit"})


def _hh_one(rec: Record, cfg: ImportConfig, drops: Counter[str]) -> Row | None:
    split = split_implicit(parse_hh(rec, _field(rec, "chosen"), "chosen"), parse_hh(rec, _field(rec, "rejected"), "rejected"))
    if isinstance(split, str):
        drops[split] += 1
        return None
    return _row(cfg, rec, *split, {})


def _score(rec: Record, name: str) -> float:
    value = _field(rec, name)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise record_error(rec, f"field {name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(score):
        raise record_error(rec, f"field {name!r} must be a finite number, got {value!r}")
    return score


def _ultrafeedback_one(rec: Record, cfg: ImportConfig, drops: Counter[str]) -> Row | None:
    sc, sr = _score(rec, "score_chosen"), _score(rec, "score_rejected")
    chosen, rejected = _field(rec, "chosen"), _field(rec, "rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        split = split_implicit(as_messages(rec, chosen, "chosen"), as_messages(rec, rejected, "rejected"))
        if isinstance(split, str):
            drops[split] += 1
            return None
        prompt, c, r = split
    else:
        prompt = as_messages(rec, _field(rec, "prompt"), "prompt")
        c, r = response_text(rec, chosen, "chosen"), response_text(rec, rejected, "rejected")
    if cfg.drop_ties and sc == sr:
        drops["score_tie"] += 1
        return None
    meta: Row = {"score_chosen": sc, "score_rejected": sr}
    if rec.data.get("prompt_id") is not None:
        meta["prompt_id"] = str(rec.data["prompt_id"])
    row = _row(cfg, rec, prompt, c, r, meta)
    if "prompt_id" in meta:
        row["group_id"] = f"{cfg.source_name}-{meta['prompt_id']}"
    return row


def _per_record(one: Callable[[Record, ImportConfig, Counter[str]], Row | None]) -> Importer:
    def run(records: list[Record], cfg: ImportConfig, drops: Counter[str], invalid: list[InvalidRecord]) -> list[Row]:
        rows = collect(records, lambda r: one(r, cfg, drops), skip_invalid=cfg.skip_invalid, invalid=invalid)
        return [r for r in rows if r is not None]

    return run


IGNORED = "ignored"


def _label(rec: Record, cfg: ImportConfig) -> tuple[bool | str, str, int, str | None]:
    """(True = positive | False = negative | ``IGNORED``, text, line, source split)."""
    text = require_str(rec, cfg.text_field, allow_empty=True)
    value = _field(rec, cfg.label_field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = str(value).strip().lower()
    split = source_split(rec, cfg)
    if key in {s.lower() for s in cfg.positive_labels}:
        return True, text, rec.line, split
    if key in {s.lower() for s in cfg.negative_labels}:
        return False, text, rec.line, split
    if "*" in cfg.ignore_labels or key in {s.lower() for s in cfg.ignore_labels}:
        return IGNORED, text, rec.line, split
    raise record_error(
        rec, f"label {value!r} in {cfg.label_field!r} is neither positive {list(cfg.positive_labels)} "
        f"nor negative {list(cfg.negative_labels)}; drop such labels with --ignore-labels"
    )


def import_sentiment(records: list[Record], cfg: ImportConfig, drops: Counter[str], invalid: list[InvalidRecord]) -> list[Row]:
    """Labelled texts -> pairs (positive = chosen, negative = rejected), shuffled with the seed, one to one.

    No prompt; each pair is its own group. Texts left over on the larger side are counted as ``unpaired``,
    texts with an ignored label as ``ignored_label``. With a source split (``split_field``) texts are paired
    within their split only.
    """
    labelled = collect(records, lambda r: _label(r, cfg), skip_invalid=cfg.skip_invalid, invalid=invalid)
    drops["ignored_label"] += sum(1 for p, *_ in labelled if p is IGNORED)
    by_split: dict[str | None, list[tuple[bool | str, str, int, str | None]]] = defaultdict(list)
    for item in labelled:
        if item[0] is not IGNORED:
            by_split[item[3]].append(item)
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for split in sorted(by_split, key=str):
        items = by_split[split]
        pos = [(t, line) for p, t, line, _ in items if p is True]
        neg = [(t, line) for p, t, line, _ in items if p is False]
        pos = [pos[i] for i in rng.permutation(len(pos))]
        neg = [neg[i] for i in rng.permutation(len(neg))]
        n = min(len(pos), len(neg))
        drops["unpaired"] += len(pos) + len(neg) - 2 * n
        for k in range(n):
            pid = f"{cfg.source_name}-{k}" if split is None else f"{cfg.source_name}-{split}-{k}"
            meta: Row = {"chosen_line": pos[k][1], "rejected_line": neg[k][1]}
            if split is not None:
                meta["source_split"] = split
            rows.append({"pair_id": pid, "prompt": [], "chosen": pos[k][0], "rejected": neg[k][0], "group_id": pid,
                         "meta": meta})
    if not drops["ignored_label"]:
        del drops["ignored_label"]
    return rows


def import_rated(records: list[Record], cfg: ImportConfig, drops: Counter[str], invalid: list[InvalidRecord]) -> list[Row]:
    """Rated responses -> one best-vs-worst pair per prompt (first in file order among equal scores).

    Prompts with one response count as ``single_response``; best and worst scores equal as ``rating_tie``.
    """

    def parse(rec: Record) -> tuple[list[dict[str, str]], str, float, int, str | None]:
        prompt = as_messages(rec, _field(rec, cfg.prompt_field), cfg.prompt_field)
        return (prompt, require_str(rec, cfg.response_field, allow_empty=True), _score(rec, cfg.score_field), rec.line,
                source_split(rec, cfg))

    items = collect(records, parse, skip_invalid=cfg.skip_invalid, invalid=invalid)
    by_prompt: dict[str, list[tuple[list[dict[str, str]], str, float, int, str | None]]] = defaultdict(list)
    for item in items:
        by_prompt[prompt_key(item[0])].append(item)
    rows = []
    for key, group in by_prompt.items():
        if len(group) < 2:
            drops["single_response"] += 1
            continue
        best = max(group, key=lambda it: it[2])  # max/min return the first of equal scores
        worst = min(group, key=lambda it: it[2])
        if best[2] == worst[2]:
            drops["rating_tie"] += 1
            continue
        pid = f"{cfg.source_name}-p{key}"
        meta: Row = {"score_field": cfg.score_field, "score_chosen": best[2], "score_rejected": worst[2],
                     "n_responses": len(group), "chosen_line": best[3], "rejected_line": worst[3],
                     **_group_split(group)}
        rows.append({"pair_id": pid, "prompt": best[0], "chosen": best[1], "rejected": worst[1], "group_id": pid,
                     "meta": meta})
    return rows


def _group_split(group: list[tuple[Any, ...]]) -> Row:
    """``{"source_split": s}`` when the responses of one prompt carry a source split (all must agree)."""
    splits = {item[4] for item in group}
    if splits == {None}:
        return {}
    if len(splits) > 1:
        lines = ", ".join(str(item[3]) for item in group)
        raise DataError(f"one prompt has responses in the source splits {sorted(map(str, splits))} (lines {lines}); "
                        "a prompt must stay in one split")
    return {"source_split": splits.pop()}


IMPORTERS: dict[str, Importer] = {
    "trl": _per_record(_trl_one),
    "hh": _per_record(_hh_one),
    "ultrafeedback": _per_record(_ultrafeedback_one),
    "sentiment": import_sentiment,
    "rated": import_rated,
}


def import_pairs(source: str | Path | Iterable[Mapping[str, Any]], cfg: ImportConfig) -> tuple[pl.DataFrame, DatasetStats]:
    """Import a preference file (or dicts) in ``cfg.format`` into the canonical, curated, group-split table.

    A malformed record raises DataError ``file:line: reason`` unless ``cfg.skip_invalid``.
    """
    records, invalid = read_config_records(source, cfg)
    stats = DatasetStats(source=cfg.source_name, format=cfg.format, n_records=len(records) + len(invalid))
    rows = IMPORTERS[cfg.format](records, cfg, stats.drops, invalid)
    stats.invalid = invalid
    stats.builder = {"pairs_formed": len(rows)}
    return finalize(rows, cfg, stats), stats
