"""Everything that touches bytes on disk: pairs Parquet files, feature stores, heads, atomic writes."""

from storage.feature_store import FeatureStore
from storage.pairs import PAIRS_SCHEMA, PairsInfo, read_digest, read_pairs, validate_pairs, write_pairs

__all__ = ["FeatureStore", "PAIRS_SCHEMA", "PairsInfo", "read_digest", "read_pairs", "validate_pairs", "write_pairs"]
