"""Committed chunks carry a checksum in their commit marker; a missing, truncated or altered chunk is an error.

Before: a deleted chunk file read as zeros, a flipped bit changed a row silently, a truncated chunk gave a raw
zstd traceback naming no chunk.
"""

from __future__ import annotations

import numpy as np
import pytest

from coala_core.errors import ProvenanceMismatchError, StoreError
from storage.feature_store import FeatureStore


def filled(path, n_rows=40, dim=6, chunk_rows=8, provenance=None) -> FeatureStore:
    s = FeatureStore.create(path, n_rows=n_rows, dim=dim, chunk_rows=chunk_rows, provenance=provenance or {})
    for c in s.pending_chunks():
        a, b = s.chunk_bounds(c)
        rng = np.random.default_rng(c)
        s.write_chunk(c, rng.normal(size=(b - a, dim)), rng.normal(size=(b - a, dim)), [f"p{i}" for i in range(a, b)])
    return s


def chunk_file(path, array="chosen", c=2):
    return path / array / "c" / str(c) / "0" if array in ("chosen", "rejected") else path / array / "c" / str(c)


def flip_byte(f, at=None):
    data = bytearray(f.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    f.write_bytes(bytes(data))


def all_reads(s: FeatureStore):
    yield "read_all", lambda: s.read_all()
    yield "iter_chunks", lambda: list(s.iter_chunks())
    yield "read_rows", lambda: s.read_rows(np.array([17, 3, 29]))
    yield "verify", lambda: s.verify()


@pytest.mark.parametrize("fault", ["missing", "truncated", "flipped", "flipped-pair-id", "swapped"])
def test_damaged_chunk_is_a_store_error_naming_store_chunk_and_rows(tmp_path, fault):
    path = tmp_path / "fs.zarr"
    filled(path)
    f = chunk_file(path)
    if fault == "missing":
        f.unlink()
    elif fault == "truncated":
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    elif fault == "flipped":
        flip_byte(f)
    elif fault == "flipped-pair-id":
        f = chunk_file(path, "pair_id")
        flip_byte(f)
    else:  # chunk 2's file replaced by chunk 3's (valid data, wrong place)
        f.write_bytes(chunk_file(path, c=3).read_bytes())
    s = FeatureStore.open(path)
    for name, read in all_reads(s):
        with pytest.raises(StoreError, match=r"fs\.zarr: chunk 2 \(rows 16-23\)") as err:
            read()
        assert "\n" not in str(err.value), name
    assert set(s.check_chunks()) == {2}


def test_intact_store_reads_and_row_reads_follow_the_index_order(tmp_path):
    s = filled(tmp_path / "fs.zarr")
    chosen, rejected = s.read_all()
    idx = np.array([33, 2, 17, 2])
    c, r = s.read_rows(idx)
    np.testing.assert_array_equal(c, chosen[idx])
    np.testing.assert_array_equal(r, rejected[idx])
    assert s.check_chunks() == {}
    assert s.verify()["n_rows"] == 40


def test_uncommit_then_rewrite_restores_the_store(tmp_path):
    path = tmp_path / "fs.zarr"
    s = filled(path)
    before = s.read_all()
    chunk_file(path).unlink()
    s.uncommit([2])
    assert s.pending_chunks() == [2]
    a, b = s.chunk_bounds(2)
    rng = np.random.default_rng(2)
    s.write_chunk(2, rng.normal(size=(b - a, 6)), rng.normal(size=(b - a, 6)), [f"p{i}" for i in range(a, b)])
    for x, y in zip(before, FeatureStore.open(path).read_all(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_pairs_digest_must_match_the_store_dataset(tmp_path):
    s = filled(tmp_path / "fs.zarr", provenance={"dataset_digest": "a" * 64})
    s.require_dataset("a" * 64, where="pairs.parquet")
    with pytest.raises(ProvenanceMismatchError, match="pairs.parquet: pairs digest bbbb"):
        s.require_dataset("b" * 64, where="pairs.parquet")


def test_killed_creation_is_made_again_but_a_foreign_group_is_never_overwritten(tmp_path):
    import zarr

    path = tmp_path / "fs.zarr"
    g = zarr.open_group(store=zarr.storage.LocalStore(path), mode="w-")  # a creation killed before its attributes
    g.create_array("chosen", shape=(4, 2), chunks=(4, 2), dtype="float32")
    s = FeatureStore.open_or_create(path, n_rows=10, dim=3, chunk_rows=4, provenance={"k": 1})
    assert (s.n_rows, s.dim) == (10, 3)
    other = tmp_path / "other.zarr"
    g = zarr.open_group(store=zarr.storage.LocalStore(other), mode="w-")
    g.create_array("weights", shape=(2,), dtype="float32")
    with pytest.raises(StoreError, match="not a COALA feature store"):
        FeatureStore.open_or_create(other, n_rows=10, dim=3, chunk_rows=4)
    assert "weights" in set(zarr.open_group(store=zarr.storage.LocalStore(other), mode="r").array_keys())


def test_a_nan_row_in_a_committed_chunk_is_a_clear_error_on_every_read(tmp_path):
    """A store holding NaN (made by an older writer, with a valid checksum) fails every read naming the row,
    instead of reaching evaluation ("autodetected range of [nan, nan] is not finite")."""
    from coala_core.errors import NonFiniteError
    from storage.feature_store import chunk_checksum

    s = filled(tmp_path / "fs.zarr")
    a, b = s.chunk_bounds(3)
    chosen = np.asarray(s._chosen[a:b])
    chosen[5, 2] = np.nan
    s._chosen[a:b] = chosen
    s._committed[3] = chunk_checksum(3, chosen, np.asarray(s._rejected[a:b]), np.asarray(s._pair_id[a:b]))
    s = FeatureStore.open(tmp_path / "fs.zarr")
    for _name, read in all_reads(s):
        with pytest.raises(NonFiniteError, match=r"chunk 3 \(rows 24-31\): chosen row 29 has NaN"):
            read()
    assert list(s.check_chunks()) == [3]
