"""From candidate rows to the canonical pairs table: filters, dedup, group subset, seeded group splits.

Every dropped row is counted by reason (``drops``), so the card can say where rows went. Splits are made by
``group_id`` within each source: groups are sorted, shuffled with the seed and cut by largest remainder so
the group counts match the fractions as closely as integers allow. No group is ever in two splits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa

from coala_core.data.config import DatasetConfig
from coala_core.data.sources import InvalidRecord
from coala_core.errors import DataError, DuplicateError

SPLITS = ("train", "validation", "test")
MESSAGE = pl.Struct({"role": pl.Utf8(), "content": pl.Utf8()})
PAIRS_POLARS_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8(),
    "prompt": pl.List(MESSAGE),
    "chosen": pl.Utf8(),
    "rejected": pl.Utf8(),
    "source": pl.Utf8(),
    "group_id": pl.Utf8(),
    "split": pl.Utf8(),
    "meta": pl.Utf8(),
}
_MESSAGE_ARROW = pa.struct([("role", pa.string()), ("content", pa.string())])
_ARROW_SCHEMA = pa.schema([(c, pa.list_(_MESSAGE_ARROW) if c == "prompt" else pa.string()) for c in PAIRS_POLARS_SCHEMA])


@dataclass
class DatasetStats:
    """What happened between the input file and the table: inputs, skips, drops by reason, per-format stats."""

    source: str
    format: str
    n_records: int = 0
    invalid: list[InvalidRecord] = field(default_factory=list)
    n_candidates: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    n_rows: int = 0
    builder: dict[str, Any] = field(default_factory=dict)  # APS stats or importer counts
    labels: dict[str, Any] = field(default_factory=dict)  # APS label statistics on the final rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "n_records": self.n_records,
            "n_invalid_records": len(self.invalid),
            "invalid_records": [r.to_dict() for r in self.invalid],
            "n_candidates": self.n_candidates,
            "drops": {k: self.drops[k] for k in sorted(self.drops)},
            "n_rows": self.n_rows,
            "builder": self.builder,
            "labels": self.labels,
        }


def prompt_chars(prompt: Sequence[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in prompt)


def _drop_reason(row: dict[str, Any], cfg: DatasetConfig) -> str | None:
    chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
    if not chosen or not rejected:
        return "empty_response"
    if chosen == rejected:
        return "chosen_equals_rejected"
    if cfg.max_prompt_chars is not None and prompt_chars(row["prompt"]) > cfg.max_prompt_chars:
        return "prompt_too_long"
    if cfg.max_response_chars is not None and max(len(row["chosen"]), len(row["rejected"])) > cfg.max_response_chars:
        return "response_too_long"
    return None


def filter_rows(rows: list[dict[str, Any]], cfg: DatasetConfig, drops: Counter[str]) -> list[dict[str, Any]]:
    """Drop empty, identical, over-long and (with ``cfg.dedup``) repeated rows; count each drop by reason."""
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        reason = _drop_reason(row, cfg)
        if reason is None and cfg.dedup:
            key = json.dumps([row["prompt"], row["chosen"], row["rejected"]], ensure_ascii=False)
            if key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason is None:
            kept.append(row)
        else:
            drops[reason] += 1
    return kept


def limit_groups(rows: list[dict[str, Any]], limit: int | None, seed: int, drops: Counter[str]) -> list[dict[str, Any]]:
    """Keep at most ``limit`` rows as whole groups: groups in seeded order, each added if it still fits."""
    if limit is None or len(rows) <= limit:
        return rows
    sizes = Counter(r["group_id"] for r in rows)
    order = sorted(sizes)
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    total = 0
    for g in (order[i] for i in rng.permutation(len(order))):
        if total + sizes[g] <= limit:
            keep.add(g)
            total += sizes[g]
    kept = [r for r in rows if r["group_id"] in keep]
    drops["over_limit"] += len(rows) - len(kept)
    return kept


def allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into integer counts proportional to ``fractions`` (largest remainder, ties to first)."""
    exact = [n * f for f in fractions]
    counts = [int(np.floor(x)) for x in exact]
    rest = n - sum(counts)
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def assign_splits(group_ids: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Map each distinct group to train/validation/test: sorted, seeded permutation, largest-remainder cut."""
    groups = sorted(set(group_ids))
    perm = np.random.default_rng(seed).permutation(len(groups))
    counts = allocate(len(groups), fractions)
    out: dict[str, str] = {}
    start = 0
    for split, c in zip(SPLITS, counts, strict=True):
        for i in perm[start : start + c]:
            out[groups[i]] = split
        start += c
    return out


def source_splits(rows: list[dict[str, Any]], cfg: DatasetConfig) -> dict[str, str]:
    """Groups -> the split their rows carry (``meta['source_split']``, set by the builders under
    ``cfg.split_field``). A group whose rows disagree is an error. With no validation rows and
    ``validation_fraction > 0`` a seeded share of the training groups becomes validation."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        seen.setdefault(r["group_id"], set()).add(r["meta"]["source_split"])
    split_of: dict[str, str] = {}
    for g, splits in seen.items():
        if len(splits) > 1:
            raise DataError(f"group {g!r} has rows in the source splits {sorted(splits)}; a group (conversation or "
                            f"prompt) must stay in one split (field {cfg.split_field!r})")
        split_of[g] = splits.pop()
    if "validation" not in split_of.values() and cfg.validation_fraction > 0:
        train = [g for g, s in split_of.items() if s == "train"]
        share = cfg.validation_fraction / (cfg.train_fraction + cfg.validation_fraction)
        held = assign_splits(train, (1.0 - share, share, 0.0), cfg.seed)
        split_of.update({g: s for g, s in held.items() if s == "validation"})
    return split_of


def to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows (meta as dict) -> the canonical polars table (meta as sorted-key JSON text).

    Built through Arrow: polars' own construction of list-of-struct columns from Python is ~20x slower.
    """
    data: dict[str, list[Any]] = {c: [] for c in PAIRS_POLARS_SCHEMA}
    for r in rows:
        for c in PAIRS_POLARS_SCHEMA:
            data[c].append(json.dumps(r[c], sort_keys=True, ensure_ascii=False) if c == "meta" else r[c])
    table = pa.Table.from_pydict(data, schema=_ARROW_SCHEMA)
    return cast(pl.DataFrame, pl.from_arrow(table)).cast(PAIRS_POLARS_SCHEMA)  # type: ignore[arg-type]


def finalize(rows: list[dict[str, Any]], cfg: DatasetConfig, stats: DatasetStats) -> pl.DataFrame:
    """Filter, dedup, subset and split candidate rows of one source; fills ``stats``; returns the table.

    ``rows``: dicts with pair_id, prompt (list of {role, content}), chosen, rejected, group_id, meta (dict).
    """
    stats.n_candidates = len(rows)
    rows = filter_rows(rows, cfg, stats.drops)
    rows = limit_groups(rows, cfg.limit, cfg.seed, stats.drops)
    if cfg.split_field is None:
        split_of = assign_splits([r["group_id"] for r in rows], cfg.fractions, cfg.seed)
    else:
        split_of = source_splits(rows, cfg)
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        if r["pair_id"] in seen:
            raise DuplicateError(
                f"pair_id {r['pair_id']!r} occurs twice (rows {seen[r['pair_id']]} and {i}); "
                "conversation or record ids must be unique"
            )
        seen[r["pair_id"]] = i
        r["source"] = stats.source
        r["split"] = split_of[r["group_id"]]
    stats.n_rows = len(rows)
    return to_frame(rows)
