"""A built dataset on disk: the canonical pairs Parquet file plus its card (markdown and JSON) beside it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coala_core.data import DatasetCard, DatasetStats, card_paths, dataset_card
from coala_core.errors import DataError
from storage.atomic import atomic_write_text
from storage.pairs import PairsInfo, write_pairs


def write_dataset(df: Any, stats: DatasetStats, cfg: Any, output: str | Path, *,
                  extra_metadata: Mapping[str, str] | None = None) -> tuple[PairsInfo, DatasetCard]:
    """Write the pairs (``storage.pairs.write_pairs``) and the card beside them; refuse an empty table.

    Nothing is written when the table is empty or invalid. Returns the PairsInfo and the card.
    """
    output = Path(output)
    if df.height == 0:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(stats.drops.items())) or "none"
        raise DataError(f"no pairs left to write (input records {stats.n_records}, "
                        f"invalid {len(stats.invalid)}, drops: {drops}); nothing written to {output}")
    info = write_pairs(df, output, extra_metadata=extra_metadata)
    card = dataset_card(df, stats, cfg, info.digest)
    md_path, json_path = card_paths(output)
    atomic_write_text(md_path, card.markdown)
    atomic_write_text(json_path, card.json_text())
    return info, card
