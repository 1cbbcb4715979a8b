"""Phase I's streamed reductions as map-reduce over row chunks on a Dask cluster.

:class:`DaskStoreRows` is a paired :class:`~coala_core.phase1.source.RowSource` over a feature store (a local
path or an fsspec URL every worker can open). The passes of Phase I that are sums over rows run on the Dask
workers, each task reading its own chunk range of the store, never shipping rows to the driver:

- ``moments()``: mean and scale (d,) of the rows for standardisation (per-task count, mean and sum of squared
  deviations, merged by Chan et al.'s pairwise rule);
- ``grams(standardizer, gates, with_H, dtype)``: ``XtX`` (d', d'), ``H`` (Pd', Pd') with blocks X'D_i D_j X and
  ``Fty`` (P, d') with rows X'D_i y, exactly the sums of :meth:`PreparedRows.grams
  <coala_core.phase1.data.PreparedRows.grams>`, the pass whose cost grows as n P^2 d^2.

Partial results are added pairwise on the workers (a tree), so the driver receives one sum. Rows of a task are
the store's rows ``[a, b)`` as ``[chosen; rejected]`` with labels ``[+1; -1]``, as :class:`PairRows` yields them.
Every other pass (pattern signs, ADMM iterations) reads the rows in the driver through ``iter_blocks``.

coala_core does not import storage: the caller passes ``opener`` (e.g. ``storage.feature_store.FeatureStore.open``),
a picklable callable ``opener(uri) -> store`` with ``n_rows``, ``dim``, ``chunk_rows``, ``iter_chunks()`` and
``read_rows(index) -> (chosen, rejected)``, and a ``distributed.Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from coala_core.errors import DimensionMismatchError, NonFiniteError
from coala_core.phase1.patterns import gate_signs, standardize_block
from coala_core.phase1.source import PairRows, RowBlock

#: floor below which a feature's scale is taken as 1 (as ``MomentAccumulator.result``)
SCALE_FLOOR = 1e-8


class DaskStoreRows:
    """Paired rows of the store at ``uri``; ``moments`` and ``grams`` run on ``client``'s workers."""

    paired = True

    def __init__(self, uri: str, opener: Callable[[str], Any], client: Any, *, chunks_per_task: int = 1) -> None:
        store = opener(uri)
        self.uri, self.opener, self.client = str(uri), opener, client
        self.store = store
        self.n_rows = 2 * int(store.n_rows)
        self.dim = int(store.dim)
        step = int(store.chunk_rows) * max(1, int(chunks_per_task))
        #: the pair-row ranges [a, b) of the map tasks (whole store chunks)
        self.ranges = [(a, min(a + step, int(store.n_rows))) for a in range(0, int(store.n_rows), step)]

    def iter_blocks(self) -> Iterator[RowBlock]:
        yield from PairRows(self.store).iter_blocks()

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) (d,) float64 of all rows; near-constant features get scale 1."""
        futures = [self.client.submit(_moment_partial, self.opener, self.uri, a, b, pure=False) for a, b in self.ranges]
        n, mean, m2 = self._tree(futures, _merge_moments).result()
        var = np.maximum(m2 / n, 0.0)
        scale = np.sqrt(var)
        return mean, np.where(scale > SCALE_FLOOR, scale, 1.0)

    def grams(self, standardizer: Any, gates: np.ndarray, with_H: bool, dtype: Any
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(XtX, H or None, Fty)`` float64 of the standardised rows, patterns from ``gates`` (d', P)."""
        spec = (standardizer.mean, standardizer.scale, bool(standardizer.bias), np.dtype(dtype).name,
                np.asarray(gates, dtype=np.float64), bool(with_H))
        spec_f = self.client.scatter(spec, broadcast=True)
        futures = [self.client.submit(_gram_partial, self.opener, self.uri, a, b, spec_f, pure=False) for a, b in self.ranges]
        XtX, H, Fty = self._tree(futures, _add_grams).result()
        if H is not None:  # the partials fill block rows i, columns i.. (upper blocks); mirror them
            upper = np.triu(H)
            H = upper + np.triu(H, 1).T
        return XtX, H, Fty

    def _tree(self, futures: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
        """Combine partial results pairwise on the workers until one future is left."""
        while len(futures) > 1:
            pairs = [self.client.submit(combine, futures[i], futures[i + 1], pure=False)
                     for i in range(0, len(futures) - 1, 2)]
            futures = pairs + ([futures[-1]] if len(futures) % 2 else [])
        return futures[0]


# --- worker functions (module level: pickled by reference) -----------------------------------------------------
def _rows(opener: Callable[[str], Any], uri: str, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Store pairs [a, b) as rows ``[chosen; rejected]`` (2k, d) and labels ``[+1; -1]`` (PairRows' layout)."""
    store = opener(uri)
    chosen, rejected = store.read_rows(np.arange(a, b))
    k, d = b - a, int(store.dim)
    if chosen.shape != (k, d) or rejected.shape != (k, d):
        raise DimensionMismatchError(f"{uri}: rows {a}:{b}: expected chosen/rejected of shape ({k}, {d}), "
                                     f"got {tuple(chosen.shape)} and {tuple(rejected.shape)}")
    X = np.concatenate([chosen, rejected], axis=0)
    if not np.isfinite(X).all():
        raise NonFiniteError(f"{uri}: rows {a}:{b}: non-finite feature values")
    y = np.concatenate([np.ones(k, dtype=X.dtype), -np.ones(k, dtype=X.dtype)])
    return X, y


def _moment_partial(opener: Callable[[str], Any], uri: str, a: int, b: int) -> tuple[int, np.ndarray, np.ndarray]:
    X, _ = _rows(opener, uri, a, b)
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    Z = X64 - mean
    return int(X.shape[0]), mean, (Z * Z).sum(axis=0)


def _merge_moments(p: tuple[int, np.ndarray, np.ndarray], q: tuple[int, np.ndarray, np.ndarray]
                   ) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations)."""
    na, ma, sa = p
    nb, mb, sb = q
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta * delta * (na * nb / n)


def _gram_partial(opener: Callable[[str], Any], uri: str, a: int, b: int, spec: tuple
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    mean, scale, bias, dtype, gates, with_H = spec
    X, y = _rows(opener, uri, a, b)
    Xb = standardize_block(X, mean, scale, bias, np.dtype(dtype))
    Db = (gate_signs(Xb, gates) > 0).astype(Xb.dtype)
    yb = y.astype(Xb.dtype)
    P, d = gates.shape[1], Xb.shape[1]
    XtX = (Xb.T @ Xb).astype(np.float64)
    Fty = ((Db * yb[:, None]).T @ Xb).astype(np.float64)
    H = None
    if with_H:
        H = np.zeros((P * d, P * d), dtype=np.float64)
        Z = (Db[:, :, None] * Xb[:, None, :]).reshape(Xb.shape[0], P * d)
        for i in range(P):
            H[i * d:(i + 1) * d, i * d:] += (Z[:, i * d:(i + 1) * d].T @ Z[:, i * d:]).astype(np.float64)
    return XtX, H, Fty


def _add_grams(p: tuple, q: tuple) -> tuple:
    XtX, H, Fty = p
    return XtX + q[0], (None if H is None else H + q[1]), Fty + q[2]
