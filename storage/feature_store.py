"""Pooled LM features in a chunked Zarr v3 store, written whole row chunk by whole row chunk.

Layout (one Zarr group): ``chosen`` and ``rejected`` (n_rows x dim, float16 or float32), ``pair_id``
(n_rows, fixed-width UTF-32 text), ``committed`` (n_chunks, uint64, one Zarr chunk per row chunk). A row
chunk becomes visible only after its data chunks are written and then its commit marker is set: a crash
mid-write leaves the chunk uncommitted, and a resume rewrites it.

Integrity: the commit marker of chunk c is ``2**32 + crc32(c, chosen, rejected, pair_id bytes of the chunk)``
(0 = not committed). Every read of committed rows recomputes the checksum of the chunks it touches; a missing
chunk file (Zarr would read it as zeros), a truncated or an altered one is a :class:`StoreError` naming the
store, the chunk and its rows. Format 1 stores (a one-byte marker, no checksum) stay readable, unchecked.

Locking (local stores): creation, and each chunk's write + commit, run under an advisory lock on the sibling
file ``.<name>.lock`` (``storage.locks``; pid and host inside, stale locks of dead writers never block). So
shards of one store started together create it once and write concurrently; a writer with a different
provenance finds the store made and is refused (``ProvenanceMismatchError``), never mixed in. Stores on
other fsspec URLs (``memory://``, object stores) take an in-process lock only.

Group attributes: ``coala_feature_store`` (format version), ``provenance`` (dataset digest, model id and
revision, layer, pooling, max tokens, dtype, code version, ...), ``pair_id_width``.
"""

from __future__ import annotations

import contextlib
import math
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import zarr

from coala_core.errors import (
    DimensionMismatchError,
    MissingInputError,
    NonFiniteError,
    ProvenanceMismatchError,
    StoreError,
)
from storage.atomic import disk_full
from storage.locks import file_lock

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_COMMITTED_BIT = 1 << 32
DTYPES = ("float16", "float32")
DEFAULT_CHUNK_ROWS = 4096


def _array(group: zarr.Group, name: str, uri: str) -> zarr.Array:
    """The array ``name`` of a store's group (``StoreError`` when it is missing or not an array)."""
    try:
        node = group[name]
    except KeyError:
        raise StoreError(f"{uri}: feature store is missing its array {name!r}") from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{uri}: {name!r} is not an array in the feature store")
    return node


def _store_for(uri: str | Path) -> Any:
    """A Zarr store for a local path or an fsspec URL (``memory://``, ``file://``, ``s3://``...)."""
    text = str(uri)
    if "://" not in text:
        return zarr.storage.LocalStore(Path(text))
    if text.startswith("file://"):
        return zarr.storage.LocalStore(Path(text[len("file://") :]))
    return zarr.storage.FsspecStore.from_url(text, read_only=False)


def _local_path(uri: str | Path) -> Path | None:
    text = str(uri)
    if "://" not in text:
        return Path(text)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return None


_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def store_lock(uri: str | Path, purpose: str = "write", timeout: float | None = None) -> Iterator[None]:
    """The advisory lock of a store (see the module docstring): a sibling lock file for local stores."""
    local = _local_path(uri)
    if local is not None:
        local = Path(local).absolute()
        with file_lock(local.parent / f".{local.name}.lock", purpose=f"{purpose} {local.name}", timeout=timeout):
            yield
        return
    with _MEMORY_LOCKS_GUARD:
        lock = _MEMORY_LOCKS.setdefault(str(uri), threading.Lock())
    with lock:
        yield


def chunk_checksum(chunk_index: int, chosen: np.ndarray, rejected: np.ndarray, pair_ids: np.ndarray) -> int:
    """The commit marker of a chunk: 2**32 + crc32 over its index and the bytes of its three arrays."""
    crc = zlib.crc32(struct.pack("<q", int(chunk_index)))
    for arr in (chosen, rejected, pair_ids):
        crc = zlib.crc32(np.ascontiguousarray(arr).data, crc)
    return _COMMITTED_BIT + crc


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
        self.format = attrs.get("coala_feature_store")
        if self.format not in READABLE_FORMATS:
            raise StoreError(f"{uri}: not a COALA feature store (format {self.format!r})")
        self._chosen = _array(group, "chosen", uri)
        self._rejected = _array(group, "rejected", uri)
        self._pair_id = _array(group, "pair_id", uri)
        self._committed = _array(group, "committed", uri)
        self.checksummed = self.format >= 2
        self.provenance: dict[str, Any] = dict(cast(Mapping[str, Any], attrs.get("provenance") or {}))
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
        with store_lock(uri, "create"):
            return cls._create(uri, n_rows=n_rows, dim=dim, dtype=dtype, chunk_rows=chunk_rows, provenance=provenance,
                               pair_id_width=pair_id_width, overwrite=overwrite)

    @classmethod
    def _create(cls, uri: str | Path, **kwargs: Any) -> FeatureStore:
        try:
            return cls._make(uri, **kwargs)
        except OSError as err:
            if (full := disk_full(err, uri, "creating the store")) is not None:
                raise full from None
            raise

    @classmethod
    def _make(cls, uri: str | Path, *, n_rows: int, dim: int, dtype: str, chunk_rows: int,
                provenance: Mapping[str, Any] | None, pair_id_width: int, overwrite: bool) -> FeatureStore:
        if dtype not in DTYPES:
            raise StoreError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if n_rows < 1 or dim < 1 or chunk_rows < 1:
            raise StoreError(f"n_rows, dim and chunk_rows must be positive, got {n_rows}, {dim}, {chunk_rows}")
        store = _store_for(uri)
        try:
            group = zarr.open_group(store=store, mode="w" if overwrite else "w-")
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError, FileExistsError):
            raise StoreError(f"{uri}: a store already exists there (open it, or pass overwrite=True)") from None
        n_chunks = math.ceil(n_rows / chunk_rows)
        for name in ("chosen", "rejected"):
            group.create_array(name, shape=(n_rows, dim), chunks=(chunk_rows, dim), dtype=dtype, fill_value=0)
        with warnings.catch_warnings():  # fixed-width UTF-32 text is stable in practice; Zarr flags it as unspecified
            warnings.simplefilter("ignore")
            group.create_array("pair_id", shape=(n_rows,), chunks=(chunk_rows,), dtype=f"<U{pair_id_width}", fill_value="")
        group.create_array("committed", shape=(n_chunks,), chunks=(1,), dtype="uint64", fill_value=0, compressors=None)
        group.attrs.update(
            {
                "coala_feature_store": FORMAT_VERSION,
                "provenance": dict(provenance or {}),
                "pair_id_width": pair_id_width,
            }
        )
        return cls(group, str(uri))

    @classmethod
    def open(cls, uri: str | Path, *, mode: Literal["r", "r+", "a", "w", "w-"] = "r+") -> FeatureStore:
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
        """Open an existing store made with the same layout and provenance, or create it (once, under the lock).

        A store whose creation was killed before its attributes were written (they are written last) is
        made again.
        """
        with store_lock(uri, "create"):
            if not _exists(uri) or _half_created(uri):
                return cls._create(uri, n_rows=n_rows, dim=dim, dtype=dtype, chunk_rows=chunk_rows, provenance=provenance,
                                   pair_id_width=pair_id_width, overwrite=_exists(uri))
            store = cls.open(uri)
        expected = {"n_rows": n_rows, "dim": dim, "dtype": dtype, "chunk_rows": chunk_rows}
        actual = {"n_rows": store.n_rows, "dim": store.dim, "dtype": store.dtype, "chunk_rows": store.chunk_rows}
        diffs = [f"{k}: store has {actual[k]!r}, expected {v!r}" for k, v in expected.items() if actual[k] != v]
        want = _jsonable(dict(provenance or {}))
        for k in sorted(set(want) | set(store.provenance)):
            if want.get(k) != store.provenance.get(k):
                diffs.append(f"provenance.{k}: store has {store.provenance.get(k)!r}, expected {want.get(k)!r}")
        if diffs:
            raise ProvenanceMismatchError(f"{uri}: existing feature store was made differently; refusing to append: " + "; ".join(diffs))
        return store

    def require_dataset(self, digest: str, where: str) -> None:
        """Refuse pairs whose dataset digest differs from the one the store was extracted from.

        A re-split or filtered pairs file has another digest: its split column could put test rows into
        training, so it must not be paired with these features.
        """
        made_from = str(self.provenance.get("dataset_digest") or "")
        if len(made_from) != 64:
            return  # the store records no pairs digest (a sha256): made outside `coala features extract`
        if made_from != digest:
            raise ProvenanceMismatchError(
                f"{where}: pairs digest {digest[:16]} differs from the dataset digest {str(made_from)[:16]} the features "
                f"in {self.uri} were extracted from; extract features from this pairs file, or pass the one used")

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
    def _markers(self) -> np.ndarray:
        return np.asarray(self._committed[:]).astype(np.uint64)

    def _committed_mask(self) -> np.ndarray:
        return self._markers() != 0

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
        c = np.ascontiguousarray(chosen, dtype=self.dtype)
        r = np.ascontiguousarray(rejected, dtype=self.dtype)
        i = np.ascontiguousarray(ids.astype(self._pair_id.dtype))
        marker = chunk_checksum(chunk_index, c, r, i) if self.checksummed else 1
        with store_lock(self.uri, "write"):
            if int(np.asarray(self._committed[chunk_index : chunk_index + 1])[0]) != 0:
                return  # another writer (a concurrent shard) committed this chunk meanwhile; keep its bytes
            try:
                self._chosen[start:stop] = c
                self._rejected[start:stop] = r
                self._pair_id[start:stop] = i
                self._committed[chunk_index] = marker
            except OSError as err:
                full = disk_full(err, self.uri, f"writing chunk {chunk_index} (rows {start}-{stop - 1})")
                if full is None:
                    raise
                raise full from None

    def uncommit(self, chunks: list[int]) -> None:
        """Mark chunks as not written (their rows are extracted again by the next resume)."""
        with store_lock(self.uri, "repair"):
            for c in chunks:
                self.chunk_bounds(c)
                self._committed[c] = 0

    # ---- reading --------------------------------------------------------------------------------
    def _where(self, c0: int, c1: int) -> str:
        a, b = c0 * self.chunk_rows, min(c1 * self.chunk_rows, self.n_rows)
        chunks = f"chunk {c0}" if c1 == c0 + 1 else f"chunks {c0}-{c1 - 1}"
        return f"{self.uri}: {chunks} (rows {a}-{b - 1})"

    def _read_block(self, c0: int, c1: int, markers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of chunks ``[c0, c1)`` (committed), each chunk checked against its commit checksum."""
        a, b = c0 * self.chunk_rows, min(c1 * self.chunk_rows, self.n_rows)
        try:
            chosen = np.asarray(self._chosen[a:b])
            rejected = np.asarray(self._rejected[a:b])
            ids = np.asarray(self._pair_id[a:b]) if self.checksummed else None
        except Exception as err:  # a truncated or garbled chunk file fails in the codec
            for c in range(c0, c1) if c1 - c0 > 1 else ():
                self._read_block(c, c + 1, markers)  # name the one chunk that fails
            raise StoreError(f"{self._where(c0, c1)}: unreadable chunk data ({type(err).__name__}: {err}); "
                             f"run `coala features verify {self.uri} --repair --pairs P`") from None
        if ids is not None:
            markers = self._markers() if markers is None else markers
            for c in range(c0, c1):
                lo, hi = c * self.chunk_rows - a, min((c + 1) * self.chunk_rows, self.n_rows) - a
                want = int(markers[c])
                if want == 0:
                    raise StoreError(f"{self._where(c, c + 1)}: chunk is not committed")
                got = chunk_checksum(c, chosen[lo:hi], rejected[lo:hi], ids[lo:hi])
                if got != want:
                    raise StoreError(f"{self._where(c, c + 1)}: checksum mismatch (chunk data missing, truncated or "
                                     f"altered since its commit); run `coala features verify {self.uri} --repair --pairs P`")
        for name, arr in (("chosen", chosen), ("rejected", rejected)):
            finite = np.isfinite(arr).all(axis=1)
            if not finite.all():
                row = a + int(np.flatnonzero(~finite)[0])
                c = row // self.chunk_rows
                raise NonFiniteError(f"{self._where(c, c + 1)}: {name} row {row} has NaN or infinite values; re-extract "
                                     f"it with `coala features verify {self.uri} --repair --pairs P`")
        return chosen, rejected, ids if ids is not None else np.asarray(self._pair_id[a:b])

    def iter_chunks(self, rows: int | None = None, *, require_complete: bool = True) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Yield ``(start, stop, chosen, rejected)`` over committed rows, ``rows`` at a time (default: chunk_rows).

        ``rows`` is rounded to a multiple of ``chunk_rows`` so each read touches whole Zarr chunks. Every chunk
        read is checked against its commit checksum (StoreError naming the chunk on a mismatch).
        """
        markers = self._markers()
        mask = markers != 0
        if require_complete and not mask.all():
            raise StoreError(f"{self.uri}: store is incomplete ({self.completed_rows} of {self.n_rows} rows committed contiguously)")
        step = self.chunk_rows * max(1, (rows or self.chunk_rows) // self.chunk_rows)
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            c0, c1 = start // self.chunk_rows, math.ceil(stop / self.chunk_rows)
            if not mask[c0:c1].all():
                continue
            chosen, rejected, _ = self._read_block(c0, c1, markers)
            yield start, stop, chosen, rejected

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.is_complete:
            raise StoreError(f"{self.uri}: store is incomplete ({self.completed_rows} of {self.n_rows} rows)")
        chosen, rejected, _ = self._read_block(0, self.n_chunks)
        return chosen, rejected

    def read_rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows by integer index, in the order given; the chunks touched are read whole and checked."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise StoreError(f"{self.uri}: row index outside [0, {self.n_rows})")
        chosen = np.empty((idx.size, self.dim), dtype=self.dtype)
        rejected = np.empty((idx.size, self.dim), dtype=self.dtype)
        markers = self._markers()
        chunk_of = idx // self.chunk_rows
        for c in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == c)
            if markers[c] == 0:
                raise StoreError(f"{self._where(int(c), int(c) + 1)}: chunk is not committed")
            cc, rr, _ = self._read_block(int(c), int(c) + 1, markers)
            local = idx[sel] - int(c) * self.chunk_rows
            chosen[sel], rejected[sel] = cc[local], rr[local]
        return chosen, rejected

    def check_chunks(self, chunks: list[int] | None = None) -> dict[int, str]:
        """Every committed chunk (or those given) read and checked: ``{chunk: problem}`` for the bad ones."""
        markers = self._markers()
        bad: dict[int, str] = {}
        for c in range(self.n_chunks) if chunks is None else chunks:
            if markers[c] == 0:
                continue
            try:
                self._read_block(c, c + 1, markers)
            except (StoreError, NonFiniteError) as err:
                bad[c] = str(err).split(": ", 2)[-1]
        return bad

    def pair_ids(self) -> np.ndarray:
        if not self.checksummed or not self.is_complete or self.n_chunks == 0:
            return np.asarray(self._pair_id[:])
        markers = self._markers()  # checked chunk by chunk: the whole store is never held at once
        return np.concatenate([self._read_block(c, c + 1, markers)[2] for c in range(self.n_chunks)])

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
            _array(self._group, f"extra_{name}", self.uri)[...] = arr
            existing = self.read_extra(name)
        if existing is None or existing.shape != arr.shape or not np.array_equal(existing, arr):
            raise ProvenanceMismatchError(f"{self.uri}: stored extra array {name!r} differs from the one given")

    def read_extra(self, name: str) -> np.ndarray | None:
        """The array saved by :meth:`write_extra`, or None."""
        key = f"extra_{name}"
        if key not in self._group:
            return None
        return np.asarray(_array(self._group, key, self.uri)[...])

    def verify(self) -> dict[str, Any]:
        """Check completeness, shapes, every chunk's checksum, pair ids and finiteness; raise StoreError on a fault."""
        if not self.is_complete:
            missing = sorted(set(range(self.n_chunks)) - self.completed_chunks())
            raise StoreError(f"{self.uri}: incomplete store: chunks {missing[:10]} of {self.n_chunks} not committed")
        if self._rejected.shape != self._chosen.shape:
            raise StoreError(f"{self.uri}: chosen {self._chosen.shape} and rejected {self._rejected.shape} differ in shape")
        bad = self.check_chunks()
        if bad:
            first = min(bad)
            cls = NonFiniteError if "NaN or infinite" in bad[first] else StoreError
            more = f" (and {len(bad) - 1} more bad chunk(s): {sorted(bad)[1:11]})" if len(bad) > 1 else ""
            raise cls(f"{self._where(first, first + 1)}: {bad[first]}{more}")
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


def _half_created(uri: str | Path) -> bool:
    """A group whose creation was killed: the attributes (written last) are absent."""
    try:
        group = zarr.open_group(store=_store_for(uri), mode="r")
        attrs, members = group.attrs.asdict(), set(group.array_keys())
    except Exception:  # noqa: BLE001 - unreadable group metadata: not ours to overwrite
        return False
    return not attrs and members <= {"chosen", "rejected", "pair_id", "committed"}


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a mapping the way Zarr attributes round-trip it (tuples become lists)."""
    import json

    return json.loads(json.dumps(d))
