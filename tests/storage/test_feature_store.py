"""Conformance suite: every feature-store backend (local path, file:// URL, memory:// URL) passes it."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from coala_core.errors import (
    DimensionMismatchError,
    MissingInputError,
    NonFiniteError,
    ProvenanceMismatchError,
    StoreError,
)
from storage.feature_store import FeatureStore


@pytest.fixture(params=["local", "file-url", "memory-url"])
def uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "fs.zarr")
    if request.param == "file-url":
        return f"file://{tmp_path / 'fs.zarr'}"
    return f"memory://coala-test-{uuid.uuid4().hex}/fs.zarr"


def chunk_data(store: FeatureStore, c: int, seed: int = 0):
    a, b = store.chunk_bounds(c)
    rng = np.random.default_rng(seed * 1000 + c)
    return rng.normal(size=(b - a, store.dim)), rng.normal(size=(b - a, store.dim)), [f"pair-{i}" for i in range(a, b)]


def fill(store: FeatureStore, chunks=None, seed: int = 0):
    for c in store.pending_chunks() if chunks is None else chunks:
        store.write_chunk(c, *chunk_data(store, c, seed))


def test_create_write_read_roundtrip(uri):
    s = FeatureStore.create(uri, n_rows=11, dim=4, chunk_rows=4, provenance={"model_id": "m", "layer": -1})
    assert (s.n_rows, s.dim, s.chunk_rows, s.n_chunks, s.dtype) == (11, 4, 4, 3, "float32")
    assert s.completed_rows == 0 and s.pending_chunks() == [0, 1, 2]
    fill(s)
    s2 = FeatureStore.open(uri)
    assert s2.provenance == {"model_id": "m", "layer": -1}
    chosen, rejected = s2.read_all()
    expected = [chunk_data(s2, c) for c in range(3)]
    np.testing.assert_allclose(chosen, np.vstack([e[0] for e in expected]), rtol=1e-6)
    np.testing.assert_allclose(rejected, np.vstack([e[1] for e in expected]), rtol=1e-6)
    assert s2.pair_ids().tolist() == [f"pair-{i}" for i in range(11)]
    assert s2.verify()["n_rows"] == 11


@pytest.mark.parametrize("rows", [None, 4, 8, 100])
def test_iter_chunks_streams_whole_chunks_in_order(uri, rows):
    s = FeatureStore.create(uri, n_rows=10, dim=3, chunk_rows=4)
    fill(s)
    parts = list(s.iter_chunks(rows))
    assert parts[0][0] == 0 and parts[-1][1] == 10
    assert all(p[1] == q[0] for p, q in zip(parts, parts[1:], strict=False))
    chosen, _ = s.read_all()
    np.testing.assert_array_equal(np.vstack([p[2] for p in parts]), chosen)


def test_partial_store_reports_resume_point_and_refuses_full_reads(uri):
    s = FeatureStore.create(uri, n_rows=10, dim=3, chunk_rows=4)
    fill(s, [0, 2])
    assert s.completed_rows == 4
    assert s.completed_chunks() == {0, 2}
    assert s.pending_chunks() == [1]
    with pytest.raises(StoreError, match="incomplete"):
        s.verify()
    with pytest.raises(StoreError, match="incomplete"):
        s.read_all()
    assert [p[:2] for p in s.iter_chunks(require_complete=False)] == [(0, 4), (8, 10)]


def test_shards_cover_every_chunk_once(uri):
    s = FeatureStore.create(uri, n_rows=50, dim=2, chunk_rows=4)
    shards = [s.pending_chunks((i, 3)) for i in range(3)]
    flat = [c for sh in shards for c in sh]
    assert sorted(flat) == list(range(s.n_chunks)) and len(set(flat)) == len(flat)
    with pytest.raises(StoreError):
        s.pending_chunks((3, 3))


def test_open_or_create_reuses_same_and_refuses_different(uri):
    prov = {"dataset_digest": "abc", "pooling": "mean", "layers": (1, 2)}
    s = FeatureStore.open_or_create(uri, n_rows=6, dim=2, chunk_rows=4, provenance=prov)
    fill(s, [0])
    again = FeatureStore.open_or_create(uri, n_rows=6, dim=2, chunk_rows=4, provenance=prov)
    assert again.completed_rows == 4
    with pytest.raises(ProvenanceMismatchError, match="pooling"):
        FeatureStore.open_or_create(uri, n_rows=6, dim=2, chunk_rows=4, provenance={**prov, "pooling": "last"})
    with pytest.raises(ProvenanceMismatchError, match="dim"):
        FeatureStore.open_or_create(uri, n_rows=6, dim=3, chunk_rows=4, provenance=prov)


def test_bad_writes_are_rejected_and_leave_chunk_uncommitted(uri):
    s = FeatureStore.create(uri, n_rows=6, dim=2, chunk_rows=4)
    c, r, ids = chunk_data(s, 0)
    with pytest.raises(DimensionMismatchError):
        s.write_chunk(0, c[:, :1], r, ids)
    bad = c.copy()
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteError, match="row 2"):
        s.write_chunk(0, bad, r, ids)
    with pytest.raises(DimensionMismatchError):
        s.write_chunk(0, c, r, ids[:-1])
    with pytest.raises(StoreError):
        s.write_chunk(5, c, r, ids)
    assert s.completed_chunks() == set()


def test_float16_store(uri):
    s = FeatureStore.create(uri, n_rows=5, dim=3, dtype="float16", chunk_rows=2)
    fill(s)
    chosen, _ = s.read_all()
    assert chosen.dtype == np.float16


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(MissingInputError, match="not found"):
        FeatureStore.open(tmp_path / "nope.zarr")


def test_invalid_geometry_is_rejected(uri):
    with pytest.raises(StoreError, match="dtype"):
        FeatureStore.create(uri, n_rows=5, dim=3, dtype="int8")
    with pytest.raises(StoreError, match="positive"):
        FeatureStore.create(uri, n_rows=0, dim=3)
