"""Tiny synthetic feature stores with a pairs file, for the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.feature_store import FeatureStore
from storage.pairs import from_records, write_pairs

PROV = {"model_id": "tiny", "layer": -1, "pooling": "mean", "dataset_digest": "abc"}


def make_pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose chosen features lean along a random direction (a learnable preference)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    chosen = (rng.standard_normal((n, d)) + 0.6 * u).astype(np.float32)
    rejected = rng.standard_normal((n, d)).astype(np.float32)
    return chosen, rejected


def write_store(path: Path, chosen: np.ndarray, rejected: np.ndarray, chunk_rows: int = 32,
                ids: list[str] | None = None) -> FeatureStore:
    n, d = chosen.shape
    ids = ids or [f"p{i:05d}" for i in range(n)]
    store = FeatureStore.create(path, n_rows=n, dim=d, chunk_rows=chunk_rows, provenance=PROV)
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], ids[a:b])
    return store


def write_split_pairs(path: Path, n: int, splits: list[str], seed: int = 0) -> None:
    """A pairs file for store rows p00000.. with the given split labels, in shuffled order."""
    records = [{"pair_id": f"p{i:05d}", "prompt": [{"role": "user", "content": f"q{i}"}], "chosen": "good",
                "rejected": "bad", "source": "s", "group_id": f"g{i}", "split": splits[i]} for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    write_pairs(from_records([records[i] for i in order]), path)


@pytest.fixture()
def small_store(tmp_path: Path) -> Path:
    """60 pairs x 5 features (40 train, 10 validation, 10 test) in chunks of 16 rows, and pairs.parquet."""
    chosen, rejected = make_pairs(60, 5)
    write_store(tmp_path / "feat.zarr", chosen, rejected, chunk_rows=16)
    write_split_pairs(tmp_path / "pairs.parquet", 60, ["train"] * 40 + ["validation"] * 10 + ["test"] * 10)
    return tmp_path
