"""Dataset construction: EduFeedback by APS, importers of preference files, curation and dataset cards.

Public API (pure functions; writing is the caller's job through ``storage``):

- ``build_edufeedback(conversations, EduFeedbackConfig) -> (pl.DataFrame, DatasetStats)``
- ``import_pairs(path_or_records, ImportConfig) -> (pl.DataFrame, DatasetStats)``
- ``dataset_card(df, stats, config, digest) -> DatasetCard`` (``.markdown``, ``.content``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coala_core.data.aps import APSStats, aps_triplets, label_statistics
    from coala_core.data.card import DatasetCard, card_paths, dataset_card
    from coala_core.data.config import DatasetConfig, EduFeedbackConfig, ImportConfig
    from coala_core.data.conversations import Conversation, Turn, merge_turns, parse_mathdial, parse_messages
    from coala_core.data.curation import DatasetStats, assign_splits, finalize
    from coala_core.data.edufeedback import build_edufeedback, load_conversations
    from coala_core.data.importers import IMPORTERS, import_pairs
    from coala_core.data.sources import InvalidRecord, Record, read_records

#: public name -> the submodule that defines it, imported on first use (PEP 562): the configuration classes
#: load without polars, which only the builders need (a training or scoring machine never imports it)
_WHERE = {
    "APSStats": "coala_core.data.aps",
    "Conversation": "coala_core.data.conversations",
    "DatasetCard": "coala_core.data.card",
    "DatasetConfig": "coala_core.data.config",
    "DatasetStats": "coala_core.data.curation",
    "EduFeedbackConfig": "coala_core.data.config",
    "IMPORTERS": "coala_core.data.importers",
    "ImportConfig": "coala_core.data.config",
    "InvalidRecord": "coala_core.data.sources",
    "Record": "coala_core.data.sources",
    "Turn": "coala_core.data.conversations",
    "aps_triplets": "coala_core.data.aps",
    "assign_splits": "coala_core.data.curation",
    "build_edufeedback": "coala_core.data.edufeedback",
    "card_paths": "coala_core.data.card",
    "dataset_card": "coala_core.data.card",
    "finalize": "coala_core.data.curation",
    "import_pairs": "coala_core.data.importers",
    "label_statistics": "coala_core.data.aps",
    "load_conversations": "coala_core.data.edufeedback",
    "merge_turns": "coala_core.data.conversations",
    "parse_mathdial": "coala_core.data.conversations",
    "parse_messages": "coala_core.data.conversations",
    "read_records": "coala_core.data.sources",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'coala_core.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "APSStats",
    "Conversation",
    "DatasetCard",
    "DatasetConfig",
    "DatasetStats",
    "EduFeedbackConfig",
    "IMPORTERS",
    "ImportConfig",
    "InvalidRecord",
    "Record",
    "Turn",
    "aps_triplets",
    "assign_splits",
    "build_edufeedback",
    "card_paths",
    "dataset_card",
    "finalize",
    "import_pairs",
    "label_statistics",
    "load_conversations",
    "merge_turns",
    "parse_mathdial",
    "parse_messages",
    "read_records",
]
