"""Row sources for Phase I: in-memory arrays, preference pairs, or any feature store.

A :class:`RowSource` yields :class:`RowBlock` s of rows ``X`` (m, d) with labels ``y`` (m,) in {+1, -1}.
A *paired* source yields, in each block, ``k`` chosen rows followed by their ``k`` rejected rows, so row
``j`` and row ``k + j`` of a block form one preference pair (pairwise accuracy is computed on them).

Anything with ``iter_chunks()`` yielding ``(start, stop, chosen, rejected)`` and attributes ``n_rows`` and
``dim`` (the project's ``FeatureStore``) is a paired source; coala_core does not import storage.
Array backends are chosen from the data (``cupy.get_array_module``); cupy is imported lazily.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from coala_core.errors import DataError, DimensionMismatchError, NonFiniteError


def get_xp(*arrays: Any) -> ModuleType:
    """The array namespace of ``arrays`` (cupy when any is a cupy array, else numpy)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def cupy_module() -> ModuleType:
    """Import cupy on demand (raises ConfigError-like ImportError text when CUDA is absent)."""
    import cupy

    if not cupy.cuda.is_available():
        from coala_core.errors import ConfigError

        raise ConfigError("backend='cupy' requested but cupy.cuda.is_available() is False")
    return cupy


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy/view of a numpy or cupy array."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


@dataclass(frozen=True)
class RowBlock:
    """One block of rows: ``X`` (m, d), ``y`` (m,), and ``n_pairs`` (k) when rows are [chosen; rejected]."""

    X: Any
    y: Any
    n_pairs: int = 0


@runtime_checkable
class RowSource(Protocol):
    """Rows with labels, read block by block; ``n_rows`` counts rows (2 per pair for paired sources)."""

    n_rows: int
    dim: int
    paired: bool

    def iter_blocks(self) -> Iterator[RowBlock]: ...


class ArrayRows:
    """In-memory rows ``X`` (n, d) with labels ``y`` (n,) in {+1, -1}, yielded in chunks of ``chunk_rows``."""

    paired = False

    def __init__(self, X: Any, y: Any, chunk_rows: int = 4096) -> None:
        xp = get_xp(X)
        if X.ndim != 2:
            raise DimensionMismatchError(f"X: expected a 2-d array (n, d), got shape {tuple(X.shape)}")
        y = xp.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise DimensionMismatchError(f"y: expected {X.shape[0]} labels (rows of X), got {y.shape[0]}")
        bad = ~((y == 1) | (y == -1))
        if bool(bad.any()):
            row = int(to_numpy(xp.nonzero(bad)[0][0]))
            raise DataError(f"y: labels must be +1 or -1; row {row} has {float(y[row])!r}")
        if not bool(xp.isfinite(X).all()):
            row = int(to_numpy(xp.nonzero(~xp.isfinite(X).all(axis=1))[0][0]))
            raise NonFiniteError(f"X: row {row} has non-finite values")
        self.X, self.y = X, y
        self.n_rows, self.dim = int(X.shape[0]), int(X.shape[1])
        self.chunk_rows = max(1, int(chunk_rows))

    def iter_blocks(self) -> Iterator[RowBlock]:
        for start in range(0, self.n_rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.n_rows)
            yield RowBlock(self.X[start:stop], self.y[start:stop])


class PairRows:
    """Preference pairs from ``iter_chunks() -> (start, stop, chosen, rejected)``; chosen +1, rejected -1.

    Wraps a FeatureStore or :class:`PairArrays`. ``n_rows`` is twice the number of pairs.
    """

    paired = True

    def __init__(self, store: Any) -> None:
        self.store = store
        self.n_rows = 2 * int(store.n_rows)
        self.dim = int(store.dim)

    def iter_blocks(self) -> Iterator[RowBlock]:
        for start, stop, chosen, rejected in self.store.iter_chunks():
            k = int(stop - start)
            if chosen.shape != (k, self.dim) or rejected.shape != (k, self.dim):
                raise DimensionMismatchError(
                    f"store chunk rows {start}:{stop}: expected chosen/rejected of shape ({k}, {self.dim}), "
                    f"got {tuple(chosen.shape)} and {tuple(rejected.shape)}"
                )
            xp = get_xp(chosen)
            X = xp.concatenate([chosen, rejected], axis=0)
            if not bool(xp.isfinite(X).all()):
                raise NonFiniteError(f"store chunk rows {start}:{stop}: non-finite feature values")
            y = xp.concatenate([xp.ones(k, dtype=X.dtype), -xp.ones(k, dtype=X.dtype)])
            yield RowBlock(X, y, n_pairs=k)


class PairArrays:
    """In-memory pairs (chosen (k, d), rejected (k, d)) with the FeatureStore ``iter_chunks`` interface."""

    def __init__(self, chosen: Any, rejected: Any, chunk_rows: int = 4096) -> None:
        if chosen.ndim != 2 or chosen.shape != rejected.shape:
            raise DimensionMismatchError(
                f"pairs: chosen and rejected must be 2-d of equal shape, got {tuple(chosen.shape)} "
                f"and {tuple(rejected.shape)}"
            )
        self.chosen, self.rejected = chosen, rejected
        self.n_rows, self.dim = int(chosen.shape[0]), int(chosen.shape[1])
        self.chunk_rows = max(1, int(chunk_rows))

    def iter_chunks(self) -> Iterator[tuple[int, int, Any, Any]]:
        for start in range(0, self.n_rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.n_rows)
            yield start, stop, self.chosen[start:stop], self.rejected[start:stop]


class ConcatRows:
    """Rows of several sources, one after another (train + validation for a refit)."""

    def __init__(self, sources: Iterable[RowSource]) -> None:
        self.sources = list(sources)
        dims = {s.dim for s in self.sources}
        if len(dims) != 1:
            raise DimensionMismatchError(f"sources to concatenate have different widths {sorted(dims)}")
        self.dim = dims.pop()
        self.n_rows = sum(s.n_rows for s in self.sources)
        self.paired = all(s.paired for s in self.sources)

    def iter_blocks(self) -> Iterator[RowBlock]:
        for s in self.sources:
            yield from s.iter_blocks()


def as_row_source(data: Any, y: Any = None, chunk_rows: int = 4096) -> RowSource:
    """Turn ``(X, y)``, ``(chosen, rejected)``, a store or a RowSource into a :class:`RowSource`."""
    if isinstance(data, RowSource):
        return data
    if hasattr(data, "iter_chunks") and hasattr(data, "n_rows") and hasattr(data, "dim"):
        return PairRows(data)
    if isinstance(data, tuple) and len(data) == 2 and y is None:
        return PairRows(PairArrays(data[0], data[1], chunk_rows))
    if hasattr(data, "ndim") and hasattr(data, "shape"):
        if y is None:
            raise DataError("y: labels are required with an array X (chosen rows +1, rejected rows -1)")
        return ArrayRows(data, y, chunk_rows)
    raise DataError(
        f"data: expected an array X with labels y, a (chosen, rejected) tuple, or an object with "
        f"iter_chunks/n_rows/dim; got {type(data).__name__}"
    )


_END = object()


def prefetch(blocks: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Read the next item of ``blocks`` in a background thread while the caller computes on the current one."""
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in blocks:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as err:  # re-raised in the consumer
            q.put(err)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)
