"""Dataset card: what a pairs file holds and how it was made, as JSON content and as markdown.

The card sits next to the Parquet file (``pairs.parquet`` -> ``pairs.card.md``, ``pairs.card.json``) and
reports counts per source and split (rows and groups), rows per group (triplets per conversation for APS),
length percentiles, APS label statistics, drops by reason, skipped input lines, the config and the digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from coala_core.config import StageConfig
from coala_core.data.curation import SPLITS, DatasetStats

PERCENTILES = (5, 25, 50, 75, 95, 100)
MAX_LISTED_INVALID = 50


@dataclass(frozen=True)
class DatasetCard:
    content: dict[str, Any]
    markdown: str

    def json_text(self) -> str:
        return json.dumps(self.content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def card_paths(pairs_path: str | Path) -> tuple[Path, Path]:
    """``dir/name.parquet`` -> (``dir/name.card.md``, ``dir/name.card.json``)."""
    p = Path(pairs_path)
    stem = p.name[: -len(".parquet")] if p.name.endswith(".parquet") else p.name
    return p.with_name(stem + ".card.md"), p.with_name(stem + ".card.json")


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {f"p{q}": 0.0 for q in PERCENTILES}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in PERCENTILES}


def _counts(df: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    agg = df.group_by("source", "split").agg(pl.len().alias("rows"), pl.col("group_id").n_unique().alias("groups"))
    order = {s: i for i, s in enumerate(SPLITS)}
    for r in sorted(agg.iter_rows(named=True), key=lambda r: (r["source"], order.get(r["split"], len(order)))):
        out.setdefault(r["source"], {})[r["split"]] = {"rows": r["rows"], "groups": r["groups"]}
    return out


def dataset_card(df: pl.DataFrame, stats: DatasetStats, config: StageConfig, digest: str) -> DatasetCard:
    """Card of a finished pairs table. ``digest`` is the one ``storage.pairs.write_pairs`` returned."""
    per_group = df.group_by("group_id").len()["len"].to_list()
    rows_per_group: dict[str, int] = {}
    for n in sorted(per_group):
        rows_per_group[str(n)] = rows_per_group.get(str(n), 0) + 1
    prompt_chars = [sum(len(m["content"]) for m in p) for p in df["prompt"].to_list()]
    lengths = {
        "prompt_chars": _percentiles(prompt_chars),
        "prompt_messages": _percentiles([len(p) for p in df["prompt"].to_list()]),
        "chosen_chars": _percentiles(df["chosen"].str.len_chars().to_list()),
        "rejected_chars": _percentiles(df["rejected"].str.len_chars().to_list()),
    }
    content = {
        "digest": digest,
        "n_rows": df.height,
        "n_groups": len(per_group),
        "counts": _counts(df),
        "rows_per_group": rows_per_group,
        "lengths": lengths,
        "stats": stats.to_dict(),
        "config": config.to_dict(),
    }
    return DatasetCard(content, render_markdown(content))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render_markdown(c: dict[str, Any]) -> str:
    """The card content as a human-readable markdown page."""
    s = c["stats"]
    out = [f"# Dataset card: {s['source']}", "",
           f"- Format: `{s['format']}`; rows: {c['n_rows']}; groups: {c['n_groups']}",
           f"- Input records: {s['n_records']}; skipped invalid lines: {s['n_invalid_records']}; "
           f"candidate rows before filters: {s['n_candidates']}",
           f"- Digest (sha256 of the canonical rows): `{c['digest']}`", "", "## Counts per source and split", ""]
    rows = [[src, sp, v.get(sp, {}).get("rows", 0), v.get(sp, {}).get("groups", 0)]
            for src, v in c["counts"].items() for sp in SPLITS]
    out += _table(["source", "split", "rows", "groups"], rows)
    out += ["## Rows per group", "", "Rows (triplets per conversation for APS) -> number of groups.", ""]
    out += _table(["rows in group", "groups"], [[k, v] for k, v in c["rows_per_group"].items()])
    out += ["## Lengths (percentiles)", ""]
    out += _table(["field", *c["lengths"]["chosen_chars"].keys()],
                  [[k, *(_fmt(x) for x in v.values())] for k, v in c["lengths"].items()])
    out += ["## Drops by reason", ""]
    drops = s["drops"]
    out += _table(["reason", "rows"], [[k, v] for k, v in drops.items()]) if drops else ["None.", ""]
    if s["builder"]:
        out += ["## Builder statistics", ""]
        out += _table(["statistic", "value"], [[k, f"`{json.dumps(v)}`" if isinstance(v, dict) else v]
                                               for k, v in s["builder"].items()])
    labels = s["labels"]
    if labels:
        out += ["## APS label statistics", "",
                "APS labels the tutor's immediate reply as chosen and the reply one exchange later as rejected "
                "(a directness heuristic). On Socratic tutoring the later turn can be the better one.", ""]
        out += _table(["statistic", "value"], [[k, _fmt(v)] for k, v in labels.items() if not isinstance(v, dict)])
        if labels.get("move_transitions"):
            out += ["Tutor move transitions (chosen -> rejected):", ""]
            out += _table(["transition", "rows"], [[k, v] for k, v in labels["move_transitions"].items()])
    if s["invalid_records"]:
        out += ["## Skipped invalid lines", ""]
        listed = s["invalid_records"][:MAX_LISTED_INVALID]
        out += _table(["file", "line", "reason"], [[r["file"], r["line"], r["reason"].replace("|", "\\|")] for r in listed])
        if len(s["invalid_records"]) > MAX_LISTED_INVALID:
            out += [f"... and {len(s['invalid_records']) - MAX_LISTED_INVALID} more (all listed in the JSON card).", ""]
    out += ["## Config", "", "```json", json.dumps(c["config"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)
