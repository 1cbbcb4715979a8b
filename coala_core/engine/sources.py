"""Pairs read chunk by chunk: row subsets of a store, streamed scoring and hidden features.

A *pair source* is anything with ``n_rows``, ``dim`` and ``iter_chunks() -> (start, stop, chosen, rejected)``
(the project's ``FeatureStore``; :class:`coala_core.phase1.PairArrays` for in-memory arrays). Everything here
reads one chunk at a time, with the next chunk read in a background thread (prefetching), and holds only
per-pair results (rewards (n,), hidden features (n, m)), never the (n, d) features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from coala_core.engine.backend import get_xp, to_numpy
from coala_core.errors import DataError, DimensionMismatchError, NonFiniteError


def align_to_store(store_ids: Any, pair_ids: Any, columns: dict[str, Any], where: str = "pairs") -> dict[str, np.ndarray]:
    """Reorder per-pair columns (keyed by ``pair_ids``) to a store's row order (``store_ids``); every store row
    needs a pair (``DataError`` naming the first that has none)."""
    index = {str(p): i for i, p in enumerate(pair_ids)}
    missing = [str(s) for s in store_ids if str(s) not in index]
    if missing:
        raise DataError(f"{where}: {len(missing)} feature-store rows have no pair, e.g. pair_id {missing[0]!r}")
    order = np.array([index[str(s)] for s in store_ids], dtype=np.int64)
    return {k: np.asarray(v, dtype=object)[order] for k, v in columns.items()}


def as_pair_source(data: Any, chunk_rows: int = 4096) -> Any:
    """A pair source from a store-like object (returned as is) or a ``(chosen, rejected)`` tuple of arrays."""
    if hasattr(data, "iter_chunks") and hasattr(data, "n_rows") and hasattr(data, "dim"):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        from coala_core.phase1 import PairArrays

        return PairArrays(data[0], data[1], chunk_rows)
    raise DataError(f"pairs: expected a feature store or a (chosen, rejected) tuple of arrays, got {type(data).__name__}")


class SubsetPairs:
    """The rows ``index`` (sorted, unique) of a pair source, streamed chunk by chunk in the source's order.

    ``SubsetPairs(store, rows_of_split)`` is the train (or validation) part of one store whose split labels
    come from the pairs file: only the chunks that hold selected rows are read.
    """

    def __init__(self, source: Any, index: Any, name: str = "subset") -> None:
        idx = np.unique(np.asarray(index, dtype=np.int64))
        if idx.size and (idx[0] < 0 or idx[-1] >= int(source.n_rows)):
            raise DimensionMismatchError(f"{name}: row indices outside [0, {source.n_rows})")
        self.source, self.index, self.name = source, idx, name
        self.n_rows, self.dim = int(idx.size), int(source.dim)

    def iter_chunks(self) -> Iterator[tuple[int, int, Any, Any]]:
        out = 0
        for start, stop, chosen, rejected in self.source.iter_chunks():
            lo, hi = np.searchsorted(self.index, [start, stop])
            if hi == lo:
                continue
            local = self.index[lo:hi] - start
            k = int(hi - lo)
            yield out, out + k, chosen[local], rejected[local]
            out += k


def iter_checked(source: Any, where: str, prefetch_chunks: bool = True) -> Iterator[tuple[int, int, Any, Any]]:
    """``source.iter_chunks()`` prefetched one chunk ahead, each chunk checked for shape and finiteness
    (a NaN or infinite feature is a ``NonFiniteError`` naming the row)."""
    from coala_core.phase1.source import prefetch

    chunks = source.iter_chunks()
    if prefetch_chunks:
        chunks = prefetch(chunks)
    dim = int(source.dim)
    for start, stop, chosen, rejected in chunks:
        k = int(stop - start)
        for part, arr in (("chosen", chosen), ("rejected", rejected)):
            if tuple(arr.shape) != (k, dim):
                raise DimensionMismatchError(f"{where}: rows {start}:{stop} {part} has shape {tuple(arr.shape)}, "
                                             f"expected ({k}, {dim})")
            xp = get_xp(arr)
            finite = xp.isfinite(arr).all(axis=1)
            if not bool(finite.all()):
                row = start + int(to_numpy(xp.flatnonzero(~finite))[0])
                raise NonFiniteError(f"{where}: {part} features of row {row} contain NaN or infinite values; "
                                     "re-extract the features (coala features extract) before scoring")
        yield start, stop, chosen, rejected


def score_source(head: Any, source: Any, where: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``(r_w, r_l)`` (n,) float64 of every pair of ``source``, scored chunk by chunk by ``head``
    (anything with ``score(features)``; a ``RewardHead``). Raises ``NonFiniteError`` on a non-finite feature."""
    if int(source.dim) != int(getattr(head, "dim", source.dim)):
        raise DimensionMismatchError(f"{where}: head reads features of width {head.dim}, the features have width {source.dim}")
    n = int(source.n_rows)
    r_w, r_l = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
    for start, stop, chosen, rejected in iter_checked(source, where):
        r_w[start:stop] = to_numpy(head.score(chosen))
        r_l[start:stop] = to_numpy(head.score(rejected))
    return r_w, r_l


def hidden_pairs(head: Any, source: Any, where: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Hidden features ``(H_w, H_l)`` (n, m) float64 ((n, m + d) with the linear term) of every pair of ``source``
    under the head's frozen first layer, computed chunk by chunk (the Phase II feature map)."""
    n, m = int(source.n_rows), int(getattr(head, "n_hidden", head.width))
    Hw, Hl = np.empty((n, m), dtype=np.float64), np.empty((n, m), dtype=np.float64)
    for start, stop, chosen, rejected in iter_checked(source, where):
        Hw[start:stop] = to_numpy(head.hidden(chosen))
        Hl[start:stop] = to_numpy(head.hidden(rejected))
    return Hw, Hl


def feature_moments(source: Any, where: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (d,) over the chosen and rejected rows of ``source``, streamed in
    float64 (a constant column gets scale 1)."""
    from coala_core.phase1.patterns import MomentAccumulator

    acc = MomentAccumulator()
    for _start, _stop, chosen, rejected in iter_checked(source, where):
        acc.add(chosen)
        acc.add(rejected)
    if acc.n == 0:
        raise DataError(f"{where}: no rows")
    return acc.result(floor=1e-12)
