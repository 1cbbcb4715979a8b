"""Feature extraction from a frozen causal LM: one pooled d-vector per (prompt, response) text.

Public vocabulary: :class:`ExtractionConfig` (presets ``default``, ``paper``), :func:`load_model`,
:class:`FeatureExtractor`, :func:`extract_features` -> :class:`ExtractionStats`, :func:`feature_store_key`;
the row layout (:func:`feature_columns`, :func:`feature_dim`) and the zero-shot likelihood baselines
(:func:`zero_shot_rewards`).
"""

from coala_core.features.config import (
    AUX_COLUMNS,
    CODE_VERSION,
    POOLINGS,
    PRESETS,
    ExtractionConfig,
    extraction_provenance,
    feature_columns,
    feature_dim,
    feature_store_key,
)
from coala_core.features.extract import (
    ExtractionStats,
    FeatureExtractor,
    ProgressEvent,
    extract_features,
    parse_shard,
)
from coala_core.features.model import LoadedModel, cache_dir, load_model
from coala_core.features.pooling import POOLERS, attention_vector, pool
from coala_core.features.text import EncodedGroup, EncodedText, TextEncoder
from coala_core.features.zero_shot import aux_column_index, strip_aux, zero_shot_rewards

__all__ = [
    "AUX_COLUMNS",
    "CODE_VERSION",
    "POOLINGS",
    "EncodedGroup",
    "aux_column_index",
    "feature_columns",
    "feature_dim",
    "strip_aux",
    "zero_shot_rewards",
    "POOLERS",
    "PRESETS",
    "EncodedText",
    "ExtractionConfig",
    "ExtractionStats",
    "FeatureExtractor",
    "LoadedModel",
    "ProgressEvent",
    "TextEncoder",
    "attention_vector",
    "cache_dir",
    "extract_features",
    "extraction_provenance",
    "feature_store_key",
    "load_model",
    "parse_shard",
    "pool",
]
