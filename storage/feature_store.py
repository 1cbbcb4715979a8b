"""Pooled LM features in a chunked Zarr v3 store, written whole row chunk by whole row chunk.

Layout (one Zarr group): ``chosen`` and ``rejected`` (n_rows x dim, float16 or float32), ``pair_id``
(n_rows, fixed-width UTF-32 text), ``committed`` (n_chunks, uint8, one Zarr chunk per row chunk). A row
chunk becomes visible only after its data chunks are written and then its commit byte is set: a crash
mid-write leaves the chunk uncommitted, and a resume rewrites it. Shards write disjoint chunk ranges
without coordination, because every write touches only its own chunk objects.

Group attributes: ``coala_feature_store`` (format version), ``provenance`` (dataset digest, model id and
revision, layer, pooling, max tokens, dtype, code version, ...), ``pair_id_width``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from coala_core.errors import (
    DimensionMismatchError,
    MissingInputError,
    NonFiniteError,
    ProvenanceMismatchError,
    StoreError,
)

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
DEFAULT_CHUNK_ROWS = 4096


def _store_for(uri: str | Path) -> Any:
    """A Zarr store for a local path or an fsspec URL (``memory://``, ``file://``, ``s3://``...)."""
    text = str(uri)
    if "://" not in text:
        return zarr.storage.LocalStore(Path(text))
    if text.startswith("file://"):
        return zarr.storage.LocalStore(Path(text[len("file://") :]))
    return zarr.storage.FsspecStore.from_url(text, read_only=False)


def _exists(uri: str | Path) -> bool:
    try:
        zarr.open_group(store=_store_for(uri), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return False
    return True


class FeatureStore:
    """A feature store of ``n_rows`` pairs of ``dim``-vectors; see the module docstring for the layout."""

    def __init__(self, group: zarr.Group, uri: str) -> None:
        self._group = group
        self.uri = uri
        attrs = group.attrs.asdict()
        if attrs.get("coala_feature_store") != FORMAT_VERSION:
            raise StoreError(f"{uri}: not a COALA feature store (format {attrs.get('coala_feature_store')!r})")
        self._chosen = group["chosen"]
        self._rejected = group["rejected"]
        self._pair_id = group["pair_id"]
        self._committed = group["committed"]
        self.provenance: dict[str, Any] = dict(attrs.get("provenance", {}))
        self.n_rows, self.dim = (int(s) for s in self._chosen.shape)
        self.chunk_rows = int(self._chosen.chunks[0])
        self.dtype = str(self._chosen.dtype)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        uri: str | Path,
        *,
        n_rows: int,
        dim: int,
        dtype: str = "float32",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        provenance: Mapping[str, Any] | None = None,
        pair_id_width: int = 64,
        overwrite: bool = False,
    ) -> FeatureStore:
        if dtype not in DTYPES:
            raise StoreError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if n_rows < 1 or dim < 1 or chunk_rows < 1:
            raise StoreError(f"n_rows, dim and chunk_rows must be positive, got {n_rows}, {dim}, {chunk_rows}")
        store = _store_for(uri)
        group = zarr.open_group(store=store, mode="w" if overwrite else "w-")
        n_chunks = math.ceil(n_rows / chunk_rows)
        for name in ("chosen", "rejected"):
            group.create_array(name, shape=(n_rows, dim), chunks=(chunk_rows, dim), dtype=dtype, fill_value=0)
        with warnings.catch_warnings():  # fixed-width UTF-32 text is stable in practice; Zarr flags it as unspecified
            warnings.simplefilter("ignore")
            group.create_array("pair_id", shape=(n_rows,), chunks=(chunk_rows,), dtype=f"<U{pair_id_width}", fill_value="")
        group.create_array("committed", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None)
        group.attrs.update(
            {
                "coala_feature_store": FORMAT_VERSION,
                "provenance": dict(provenance or {}),
                "pair_id_width": pair_id_width,
            }
        )
        return cls(group, str(uri))

    @classmethod
    def open(cls, uri: str | Path, *, mode: str = "r+") -> FeatureStore:
        if not _exists(uri):
            raise MissingInputError(f"feature store not found: {uri}")
        return cls(zarr.open_group(store=_store_for(uri), mode=mode), str(uri))

    @classmethod
    def open_or_create(
        cls,
        uri: str | Path,
        *,
        n_rows: int,
        dim: int,
        dtype: str = "float32",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        provenance: Mapping[str, Any] | None = None,
        pair_id_width: int = 64,
    ) -> FeatureStore:
        """Open an existing store made with the same layout and provenance, or create it."""
        if not _exists(uri):
            return cls.create(
                uri, n_rows=n_rows, dim=dim, dtype=dtype, chunk_rows=chunk_rows, provenance=provenance, pair_id_width=pair_id_width
            )
        store = cls.open(uri)
        expected = {"n_rows": n_rows, "dim": dim, "dtype": dtype, "chunk_rows": chunk_rows}
        actual = {"n_rows": store.n_rows, "dim": store.dim, "dtype": store.dtype, "chunk_rows": store.chunk_rows}
        diffs = [f"{k}: store has {actual[k]!r}, expected {v!r}" for k, v in expected.items() if actual[k] != v]
        want = _jsonable(dict(provenance or {}))
        for k in sorted(set(want) | set(store.provenance)):
            if want.get(k) != store.provenance.get(k):
                diffs.append(f"provenance.{k}: store has {store.provenance.get(k)!r}, expected {want.get(k)!r}")
        if diffs:
            raise ProvenanceMismatchError(f"{uri}: existing feature store was made differently; refusing to append:\n  " + "\n  ".join(diffs))
        return store

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return int(self._committed.shape[0])

    def chunk_bounds(self, chunk_index: int) -> tuple[int, int]:
        if not 0 <= chunk_index < self.n_chunks:
            raise StoreError(f"{self.uri}: chunk index {chunk_index} outside [0, {self.n_chunks})")
        start = chunk_index * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_rows)

    # ---- commits --------------------------------------------------------------------------------
    def _committed_mask(self) -> np.ndarray:
        return np.asarray(self._committed[:], dtype=bool)

    def completed_chunks(self) -> set[int]:
        return {int(i) for i in np.flatnonzero(self._committed_mask())}

    @property
    def completed_rows(self) -> int:
        """Rows committed contiguously from row 0 (where a sequential resume continues)."""
        mask = self._committed_mask()
        k = int(np.argmin(mask)) if not mask.all() else len(mask)
        return min(k * self.chunk_rows, self.n_rows)

    @property
    def is_complete(self) -> bool:
        return bool(self._committed_mask().all())

    def pending_chunks(self, shard: tuple[int, int] | None = None) -> list[int]:
        """Uncommitted chunk indices, optionally only those of shard ``(i, n)`` (contiguous ranges)."""
        mask = self._committed_mask()
        lo, hi = 0, self.n_chunks
        if shard is not None:
            i, n = shard
            if not (n >= 1 and 0 <= i < n):
                raise StoreError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
            lo, hi = (self.n_chunks * i) // n, (self.n_chunks * (i + 1)) // n
        return [c for c in range(lo, hi) if not mask[c]]

    def write_chunk(self, chunk_index: int, chosen: np.ndarray, rejected: np.ndarray, pair_ids: list[str] | np.ndarray) -> None:
        """Write one whole row chunk, then commit it. Rejects wrong shapes and non-finite values."""
        start, stop = self.chunk_bounds(chunk_index)
        rows = stop - start
        for name, arr in (("chosen", chosen), ("rejected", rejected)):
            if arr.shape != (rows, self.dim):
                raise DimensionMismatchError(f"{self.uri}: chunk {chunk_index} {name} has shape {arr.shape}, expected {(rows, self.dim)}")
            if not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
                raise NonFiniteError(f"{self.uri}: chunk {chunk_index} {name} row {start + bad} has NaN or infinite values")
        ids = np.asarray(pair_ids, dtype=str)
        if ids.shape != (rows,):
            raise DimensionMismatchError(f"{self.uri}: chunk {chunk_index} has {ids.shape[0]} pair ids, expected {rows}")
        width = int(self._pair_id.dtype.itemsize // 4)
        if ids.size and max(len(s) for s in ids) > width:
            raise StoreError(f"{self.uri}: a pair_id is longer than the store's width {width}")
        self._chosen[start:stop] = np.asarray(chosen, dtype=self.dtype)
        self._rejected[start:stop] = np.asarray(rejected, dtype=self.dtype)
        self._pair_id[start:stop] = ids.astype(self._pair_id.dtype)
        self._committed[chunk_index] = 1

    # ---- reading --------------------------------------------------------------------------------
    def iter_chunks(self, rows: int | None = None, *, require_complete: bool = True) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Yield ``(start, stop, chosen, rejected)`` over committed rows, ``rows`` at a time (default: chunk_rows).

        ``rows`` is rounded to a multiple of ``chunk_rows`` so each read touches whole Zarr chunks.
        """
        if require_complete and not self.is_complete:
            raise StoreError(f"{self.uri}: store is incomplete ({self.completed_rows} of {self.n_rows} rows committed contiguously)")
        step = self.chunk_rows * max(1, (rows or self.chunk_rows) // self.chunk_rows)
        mask = self._committed_mask()
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            c0, c1 = start // self.chunk_rows, math.ceil(stop / self.chunk_rows)
            if not mask[c0:c1].all():
                continue
            yield start, stop, np.asarray(self._chosen[start:stop]), np.asarray(self._rejected[start:stop])

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.is_complete:
            raise StoreError(f"{self.uri}: store is incomplete ({self.completed_rows} of {self.n_rows} rows)")
        return np.asarray(self._chosen[:]), np.asarray(self._rejected[:])

    def read_rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows by integer index (sorted reads chunk by chunk)."""
        idx = np.asarray(index, dtype=np.int64)
        return np.asarray(self._chosen.get_orthogonal_selection((idx, slice(None)))), np.asarray(
            self._rejected.get_orthogonal_selection((idx, slice(None)))
        )

    def pair_ids(self) -> np.ndarray:
        return np.asarray(self._pair_id[:])

    # ---- small per-store constants (e.g. the seeded attention-pooling vector) ---------------------
    def write_extra(self, name: str, array: np.ndarray) -> None:
        """Save a small constant array as ``extra_<name>`` once; if it exists it must be identical."""
        arr = np.ascontiguousarray(array)
        existing = self.read_extra(name)
        if existing is None:
            try:
                self._group.create_array(f"extra_{name}", shape=arr.shape, dtype=arr.dtype, fill_value=0)
            except zarr.errors.ContainsArrayError:
                pass  # another shard created it concurrently; the value check below still applies
            self._group[f"extra_{name}"][...] = arr
            existing = self.read_extra(name)
        if existing is None or existing.shape != arr.shape or not np.array_equal(existing, arr):
            raise ProvenanceMismatchError(f"{self.uri}: stored extra array {name!r} differs from the one given")

    def read_extra(self, name: str) -> np.ndarray | None:
        """The array saved by :meth:`write_extra`, or None."""
        try:
            return np.asarray(self._group[f"extra_{name}"][...])
        except KeyError:
            return None

    def verify(self) -> dict[str, Any]:
        """Check completeness, shapes, pair ids and finiteness; raise StoreError on the first fault."""
        if not self.is_complete:
            missing = sorted(set(range(self.n_chunks)) - self.completed_chunks())
            raise StoreError(f"{self.uri}: incomplete store: chunks {missing[:10]} of {self.n_chunks} not committed")
        if self._rejected.shape != self._chosen.shape:
            raise StoreError(f"{self.uri}: chosen {self._chosen.shape} and rejected {self._rejected.shape} differ in shape")
        for start, _stop, c, r in self.iter_chunks():
            for name, arr in (("chosen", c), ("rejected", r)):
                bad = ~np.isfinite(arr).all(axis=1)
                if bad.any():
                    raise NonFiniteError(f"{self.uri}: {name} row {start + int(np.flatnonzero(bad)[0])} is not finite")
        ids = self.pair_ids()
        if (ids == "").any():
            raise StoreError(f"{self.uri}: row {int(np.flatnonzero(ids == '')[0])} has no pair_id")
        if len(set(ids.tolist())) != len(ids):
            raise StoreError(f"{self.uri}: duplicate pair ids")
        return {"uri": self.uri, "n_rows": self.n_rows, "dim": self.dim, "dtype": self.dtype, "n_chunks": self.n_chunks}

    def manifest(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "n_rows": self.n_rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "chunk_rows": self.chunk_rows,
            "n_chunks": self.n_chunks,
            "completed_rows": self.completed_rows,
            "provenance": self.provenance,
        }

    def __repr__(self) -> str:
        return f"FeatureStore({self.uri!r}, n_rows={self.n_rows}, dim={self.dim}, dtype={self.dtype}, completed_rows={self.completed_rows})"


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a mapping the way Zarr attributes round-trip it (tuples become lists)."""
    import json

    return json.loads(json.dumps(d))
