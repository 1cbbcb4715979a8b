"""Phase I on a Dask cluster: every pass over the rows is a map-reduce over row chunks on the workers.

:class:`DaskStoreRows` is a paired :class:`~coala_core.phase1.source.RowSource` over a feature store (a local
path or an fsspec URL every worker can open). Each map task owns the store pairs ``[a, b)`` (whole store
chunks, ``chunks_per_task`` of them) as rows ``[chosen; rejected]`` with labels ``[+1; -1]``, read on a worker;
partial results are added pairwise on the workers (a tree), so the driver receives one sum:

- ``moments()``: mean and scale (d,) of the rows for standardisation (per-task count, mean and sum of squared
  deviations, merged by Chan et al.'s pairwise rule);
- ``sign_pass(standardizer, gates, dtype)``: the activation bits (rows, P) of candidate gates, for pattern
  selection (bits, not rows, come back);
- ``prepare(standardizer, gates, dtype)``: builds on the workers, per task, the standardised rows (kept when
  ``cache_rows``) and the pattern signs E (:class:`~coala_core.phase1.dask_tasks.RangeData`), kept there as
  futures; returns the active share of each pattern;
- ``grams(standardizer, gates, with_H, dtype)``: ``XtX`` (d', d'), ``H`` (Pd', Pd') with blocks X'D_i D_j X and
  ``Fty`` (P, d') with rows X'D_i y, exactly the sums of :meth:`PreparedRows.grams
  <coala_core.phase1.data.PreparedRows.grams>`, the pass whose cost grows as n P^2 d^2 (from the rows and signs
  ``prepare`` keeps when it ran with the same standardisation and gates, else read from the store);
- ``admm_pass(...)``: one ADMM iteration's pass (``coala_core.phase1.admm._pass``): the per-row state s, nu
  (rows, 2P) stays on the workers as :class:`RemoteBlocks` (futures chained from iteration to iteration), only
  the (d', 6P) partial sums and scalar sums (squared loss, cone violation, pairs ranked right) come back;
- ``evaluate_pass`` / ``network_pass``: the objective and the accuracies of a solution (``programs``).

What still reads rows in the driver, through ``iter_blocks`` (the same rows in the same order as the tasks):
the exact critical beta (NNLS, only for n d <= ``programs.NNLS_MAX_SIZE``), the pairwise objective's Gram
pass, the cronos and gated solvers and a rho change between two solves of a path (``Phase1Solver._rescale_rho``,
which gathers s and nu). Workers compute with numpy.

coala_core does not import storage: the caller passes ``opener`` (e.g. ``storage.feature_store.FeatureStore.open``),
a picklable callable ``opener(uri) -> store`` with ``n_rows``, ``dim``, ``chunk_rows`` and
``read_rows(index) -> (chosen, rejected)``, and a ``distributed.Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from coala_core.errors import DataError
from coala_core.phase1 import dask_tasks as wt
from coala_core.phase1.dask_tasks import read_rows
from coala_core.phase1.patterns import gate_signs, standardize_block
from coala_core.phase1.source import RowBlock

#: floor below which a feature's scale is taken as 1 (as ``MomentAccumulator.result``)
SCALE_FLOOR = 1e-8


class RemoteBlocks:
    """A per-row state array (rows, 2P) held on the workers, one future per map task (None: zeros).

    The future's value is the task's ``(s, nu, partial)`` of the iteration that made it; ``part`` says which
    (0: s, 1: nu). ``st.nu / f`` (a rho change) gives a new handle that divides on the worker at the next
    pass, as the in-process array would. ``np.asarray(h)`` (a checkpoint, a slice) gathers it to the driver.
    """

    def __init__(self, owner: DaskStoreRows, futures: list[Any], part: int, shape: tuple[int, int], dtype: Any,
                 divisors: tuple[float, ...] = ()) -> None:
        self.owner, self.futures, self.part = owner, futures, part
        self.shape, self.dtype, self.divisors = shape, np.dtype(dtype), divisors
        self.size = int(shape[0] * shape[1])
        self.ndim = 2
        self._gathered: np.ndarray | None = None

    def __truediv__(self, f: float) -> RemoteBlocks:
        return RemoteBlocks(self.owner, self.futures, self.part, self.shape, self.dtype, self.divisors + (float(f),))

    def copy(self) -> RemoteBlocks:
        return self  # handles are immutable

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._gathered is None:
            parts = self.owner.client.gather([self.owner.client.submit(
                wt._state, f, self.part, self.divisors, (2 * (b - a), self.shape[1]), self.dtype, pure=False)
                for f, (a, b) in zip(self.futures, self.owner.ranges, strict=True)])
            self._gathered = np.concatenate(parts, axis=0)
        return self._gathered if dtype is None else self._gathered.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self)[index]


class DaskStoreRows:
    """Paired rows of the store at ``uri``; every pass over them runs on ``client``'s workers."""

    paired = True

    def __init__(self, uri: str, opener: Callable[[str], Any], client: Any, *, chunks_per_task: int = 1,
                 cache_rows: bool = True) -> None:
        store = opener(uri)
        self.uri, self.opener, self.client = str(uri), opener, client
        self.store = store
        self.n_rows = 2 * int(store.n_rows)
        self.dim = int(store.dim)
        self.cache_rows = bool(cache_rows)
        step = int(store.chunk_rows) * max(1, int(chunks_per_task))
        #: the pair-row ranges [a, b) of the map tasks (whole store chunks)
        self.ranges = [(a, min(a + step, int(store.n_rows))) for a in range(0, int(store.n_rows), step)]
        self.data: list[Any] | None = None  # RangeData futures, one per range, after prepare()
        self._prep: Any = None
        self.dtype: Any = None
        self.P = 0

    def __repr__(self) -> str:
        return f"DaskStoreRows({self.uri!r}, {len(self.ranges)} tasks)"

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def describe(self) -> dict[str, Any]:
        """Where the passes ran, for the training record."""
        return {"rows": "dask", "dask_workers": self.n_workers, "dask_tasks": len(self.ranges),
                "dask_cache_rows": self.cache_rows}

    def iter_blocks(self) -> Iterator[RowBlock]:
        """The rows in the tasks' order, read in the driver (for the passes that still need them here)."""
        for a, b in self.ranges:
            X, y = read_rows(self.store, self.uri, a, b)
            yield RowBlock(X, y, n_pairs=b - a)

    def labels(self) -> Iterator[tuple[int, np.ndarray, int]]:
        """``(rows, labels, pairs)`` of each block of :meth:`iter_blocks`, without reading the rows."""
        for a, b in self.ranges:
            k = b - a
            yield 2 * k, np.concatenate([np.ones(k), -np.ones(k)]), k

    # --- set-up passes ---------------------------------------------------------------------------------------
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) (d,) float64 of all rows; near-constant features get scale 1."""
        futures = [self.client.submit(_moment_partial, self.opener, self.uri, a, b, pure=False) for a, b in self.ranges]
        n, mean, m2 = self._tree(futures, _merge_moments).result()
        var = np.maximum(m2 / n, 0.0)
        scale = np.sqrt(var)
        return mean, np.where(scale > SCALE_FLOOR, scale, 1.0)

    @staticmethod
    def _std(standardizer: Any, dtype: Any) -> tuple[Any, Any, bool, str]:
        return standardizer.mean, standardizer.scale, bool(standardizer.bias), np.dtype(dtype).name

    def sign_pass(self, standardizer: Any, gates: np.ndarray, dtype: Any) -> Iterator[np.ndarray]:
        """Activation bits (rows, P) of ``gates`` per block, in the order of :meth:`iter_blocks`."""
        std_f = self.client.scatter((self._std(standardizer, dtype), np.asarray(gates, np.float64)), broadcast=True)
        futures = [self.client.submit(_sign_bits, self.opener, self.uri, a, b, std_f, pure=False)
                   for a, b in self.ranges]
        for fut in futures:
            yield fut.result()

    def prepare(self, standardizer: Any, gates: np.ndarray, dtype: Any) -> np.ndarray:
        """Standardised rows and pattern signs kept on the workers for the iterations; returns the active
        share (P,) of each pattern."""
        std = self._std(standardizer, dtype)
        g = np.asarray(gates, dtype=np.float64)
        self.data = [self.client.submit(wt.prepare_range, self.opener, self.uri, a, b, std, g, self.cache_rows,
                                        pure=False) for a, b in self.ranges]
        self.dtype, self.P = np.dtype(dtype), int(g.shape[1])
        self._prep = (std, g)
        counts = [self.client.submit(wt.active_counts, d, pure=False) for d in self.data]
        n, active = self._tree(counts, wt.add_counts).result()
        return active / max(n, 1)

    def gather_signs(self) -> np.ndarray:
        """Pattern signs E (rows, P) gathered to the driver (for the passes that still run there)."""
        data = self._prepared()
        return np.concatenate(self.client.gather([self.client.submit(wt.signs_of, d, pure=False) for d in data]))

    def grams(self, standardizer: Any, gates: np.ndarray, with_H: bool, dtype: Any
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(XtX, H or None, Fty)`` float64 of the standardised rows, patterns from ``gates`` (d', P)."""
        spec = (standardizer.mean, standardizer.scale, bool(standardizer.bias), np.dtype(dtype).name,
                np.asarray(gates, dtype=np.float64), bool(with_H))
        if self.data is not None and self._prepared_for(standardizer, gates, dtype):  # rows and signs are there
            futures = [self.client.submit(wt.gram_partial, d, bool(with_H), pure=False) for d in self.data]
        else:
            spec_f = self.client.scatter(spec, broadcast=True)
            futures = [self.client.submit(_gram_partial, self.opener, self.uri, a, b, spec_f, pure=False)
                       for a, b in self.ranges]
        XtX, H, Fty = self._tree(futures, _add_grams).result()
        if H is not None:  # the partials fill block rows i, columns i.. (upper blocks); mirror them
            upper = np.triu(H)
            H = upper + np.triu(H, 1).T
        return XtX, H, Fty

    def _prepared_for(self, standardizer: Any, gates: np.ndarray, dtype: Any) -> bool:
        """Whether :meth:`prepare` ran with this standardisation, these gates and this dtype."""
        (mean, scale, bias, name), g = self._prep
        return (_same(mean, standardizer.mean) and _same(scale, standardizer.scale) and bias == bool(standardizer.bias)
                and name == np.dtype(dtype).name and np.array_equal(g, np.asarray(gates, dtype=np.float64)))

    # --- per-iteration passes --------------------------------------------------------------------------------
    def _prepared(self) -> list[Any]:
        if self.data is None:
            raise DataError(f"{self!r}: prepare(standardizer, gates, dtype) has not run")
        return self.data

    def zeros(self, width: int) -> RemoteBlocks:
        """A zero state (rows, ``width``) of the compute dtype, made on the workers at the first pass."""
        return RemoteBlocks(self, [None] * len(self.ranges), 0, (self.n_rows, int(width)), self.dtype)

    def _state_args(self, h: Any) -> list[tuple[Any, tuple[float, ...]]]:
        """Per task: (state future, divisors) of a handle, or (its rows of an array, ()) for a driver array
        (a state read back from a checkpoint)."""
        if isinstance(h, RemoteBlocks) and h.owner is self:
            return [(f, h.divisors) for f in h.futures]
        arr = np.asarray(h, dtype=self.dtype)
        out: list[tuple[Any, tuple[float, ...]]] = []
        row = 0
        for a, b in self.ranges:
            m = 2 * (b - a)
            out.append((self.client.scatter(arr[row:row + m]), ()))
            row += m
        return out

    def admm_pass(self, s: Any, nu: Any, UZ: np.ndarray, alpha: Any, relaxation: float, report: str,
                  pairwise: bool) -> tuple[RemoteBlocks, RemoteBlocks, np.ndarray, dict[str, float]]:
        """New ``s``, ``nu`` (kept on the workers), ``acc`` (d', 6P) float64 and the scalar sums of
        :func:`~coala_core.phase1.dask_tasks.admm_partial` added over all rows."""
        data = self._prepared()
        spec = (np.asarray(UZ), alpha, relaxation, report, bool(pairwise), self.dtype)
        states = [self.client.submit(wt.admm_partial, d, sf, sd, nf, nd, spec, pure=False)
                  for d, (sf, sd), (nf, nd) in zip(data, self._state_args(s), self._state_args(nu), strict=True)]
        total = (self._tree(states, wt.add_partials) if len(states) > 1
                 else self.client.submit(wt.partial_of, states[0], pure=False))
        acc, sums = total.result()
        shape = (self.n_rows, 2 * self.P)
        return (RemoteBlocks(self, states, 0, shape, self.dtype), RemoteBlocks(self, states, 1, shape, self.dtype),
                acc, sums)

    def gt_pass(self, s: Any, nu: Any) -> np.ndarray:
        """X'(E2 (s - nu)) (d', 2P) float64 over all rows, s and nu where they are."""
        data = self._prepared()
        futures = [self.client.submit(wt.gt_partial, d, sf, sd, nf, nd, self.dtype, pure=False)
                   for d, (sf, sd), (nf, nd) in zip(data, self._state_args(s), self._state_args(nu), strict=True)]
        return self._tree(futures, wt.add).result()

    def evaluate_pass(self, UW: np.ndarray, relu: bool, pairwise: bool) -> dict[str, float]:
        """``sq``, ``viol``, ``correct`` of the convex model with weights ``UW`` (d', 2P) over all rows."""
        futures = [self.client.submit(wt.evaluate_partial, d, UW, relu, pairwise, pure=False) for d in self._prepared()]
        return self._tree(futures, wt.add_sums).result()

    def network_pass(self, T1: np.ndarray, t2: np.ndarray, G: np.ndarray | None) -> float:
        """Pairs ranked right by the recovered network (``programs.network_accuracy``) over all rows."""
        futures = [self.client.submit(wt.network_partial, d, T1, t2, G, pure=False) for d in self._prepared()]
        return float(self._tree(futures, wt.add).result())

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
    return read_rows(opener(uri), uri, a, b)


def _sign_bits(opener: Callable[[str], Any], uri: str, a: int, b: int, spec: tuple) -> np.ndarray:
    std, gates = spec
    return wt.sign_bits(opener, uri, a, b, std, gates)


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
    X, _ = _rows(opener, uri, a, b)
    Xb = standardize_block(X, mean, scale, bias, np.dtype(dtype))
    data = wt.RangeData(opener, uri, a, b, (mean, scale, bias, dtype), gate_signs(Xb, gates), Xb)
    return wt.gram_partial(data, with_H)


def _same(x: Any, y: Any) -> bool:
    return (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))


def _add_grams(p: tuple, q: tuple) -> tuple:
    XtX, H, Fty = p
    return XtX + q[0], (None if H is None else H + q[1]), Fty + q[2]
