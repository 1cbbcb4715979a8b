"""Dataset construction: EduFeedback by APS, importers of preference files, curation and dataset cards.

Public API (pure functions; writing is the caller's job through ``storage``):

- ``build_edufeedback(conversations, EduFeedbackConfig) -> (pl.DataFrame, DatasetStats)``
- ``import_pairs(path_or_records, ImportConfig) -> (pl.DataFrame, DatasetStats)``
- ``dataset_card(df, stats, config, digest) -> DatasetCard`` (``.markdown``, ``.content``)
"""

from coala_core.data.aps import APSStats, aps_triplets, label_statistics
from coala_core.data.card import DatasetCard, card_paths, dataset_card
from coala_core.data.config import DatasetConfig, EduFeedbackConfig, ImportConfig
from coala_core.data.conversations import Conversation, Turn, merge_turns, parse_mathdial, parse_messages
from coala_core.data.curation import DatasetStats, assign_splits, finalize
from coala_core.data.edufeedback import build_edufeedback, load_conversations
from coala_core.data.importers import IMPORTERS, import_pairs
from coala_core.data.sources import InvalidRecord, Record, read_records

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
