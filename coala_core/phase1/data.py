"""Training rows prepared for Phase I: standardised, patterned, resident or streamed.

:class:`PreparedRows` holds what every solver pass needs on the backend ``xp``: labels ``y`` (n,), pattern
signs ``E = 2 D - 1`` (n, P), pair indices, and either the standardised rows ``X`` (n, d') in (device)
memory when they fit ``memory_budget_mb``, or the source to stream them from with a prefetching reader.
``blocks()`` yields ``(start, stop, X_block)``; one call is one read of X.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from coala_core.errors import ConfigError, DataError
from coala_core.phase1.config import Phase1Config
from coala_core.phase1.patterns import (
    MomentAccumulator,
    PatternReport,
    gate_signs,
    select_gates,
    standardize_block,
)
from coala_core.phase1.source import RowSource, cupy_module, get_xp, prefetch


@dataclass
class Standardizer:
    """Training-row statistics: ``mean`` and ``scale`` (d,) float64 (None when not standardising)."""

    mean: np.ndarray | None
    scale: np.ndarray | None
    bias: bool

    def apply(self, X: Any, dtype: Any) -> Any:
        return standardize_block(X, self.mean, self.scale, self.bias, dtype)


def _backend(source: RowSource, config: Phase1Config) -> ModuleType:
    if config.backend == "numpy" or hasattr(source, "admm_pass"):  # a remote source's driver side is numpy
        return np
    if config.backend == "cupy":
        return cupy_module()
    first = next(iter(source.iter_blocks()), None)
    return np if first is None else get_xp(first.X)


def _labels(source: RowSource) -> Iterator[tuple[int, Any, int]]:
    """``(rows, labels, pairs)`` per block of ``source``; a source with ``labels()`` gives them unread."""
    if hasattr(source, "labels"):
        yield from source.labels()
        return
    for block in source.iter_blocks():
        yield int(block.X.shape[0]), block.y, block.n_pairs


class PreparedRows:
    """Standardised, patterned training rows (see module docstring)."""

    def __init__(self, source: RowSource, config: Phase1Config, *, gates: np.ndarray | None = None,
                 standardizer: Standardizer | None = None) -> None:
        if source.n_rows == 0:
            raise DataError("training rows: the source holds no rows")
        self.source = source
        self.config = config
        self.xp = _backend(source, config)
        self.dtype = self.xp.float32 if config.compute_dtype == "float32" else self.xp.float64
        self.chunk_rows = config.chunk_rows
        self.n = int(source.n_rows)
        self.d_raw = int(source.dim)
        self.d = self.d_raw + (1 if config.bias else 0)
        self.X: Any = None
        #: a source whose rows stay where they are (phase1/dask_source.py): every pass it provides runs there
        self.remote: Any = source if hasattr(source, "admm_pass") else None
        if self.remote is not None and config.anderson_memory:
            raise ConfigError("anderson_memory: Anderson acceleration needs the per-row state in this process; "
                              "use 0 with rows on a Dask cluster")
        if standardizer is None:
            standardizer = self._fit_standardizer()
        self.standardizer = standardizer
        itemsize = 4 if config.compute_dtype == "float32" else 8
        if self.remote is None and self.n * self.d * itemsize <= config.memory_budget_mb * 2**20:
            self.X = self.xp.concatenate([b for _, _, b in self._stream()], axis=0)
        ys, pairs_c, pairs_r, offset = [], [], [], 0
        for m, y_block, k in _labels(source):
            ys.append(self.xp.asarray(y_block, dtype=self.dtype))
            if source.paired and k:
                pairs_c.append(np.arange(offset, offset + k))
                pairs_r.append(np.arange(offset + k, offset + 2 * k))
            offset += m
        self.y = self.xp.concatenate(ys)
        self.pairs: Any = None  # (chosen row indices, rejected row indices) of a paired source
        if pairs_c:
            self.pairs = (self.xp.asarray(np.concatenate(pairs_c)), self.xp.asarray(np.concatenate(pairs_r)))
        if gates is None:
            gates, self.pattern_report = select_gates(
                self._sign_pass, self.d, config.n_patterns, config.seed, config.min_pattern_share,
                config.drop_degenerate, config.max_resample_rounds,
            )
        else:
            self.pattern_report = PatternReport(shares=np.zeros(gates.shape[1]))
        if gates.shape[1] == 0:
            raise DataError("patterns: every gate gave a degenerate pattern; no neuron is left to fit")
        self.gates = np.asarray(gates, dtype=np.float64)
        self.P = int(self.gates.shape[1])
        self._E: Any = None
        if self.remote is not None:  # signs made and kept on the workers, next to their rows
            self.pattern_report.shares = np.asarray(self.remote.prepare(self.standardizer, self.gates, self.dtype))
        else:
            self._E = self.xp.concatenate([gate_signs(b, self.gates) for _, _, b in self.blocks()], axis=0)
            self.pattern_report.shares = np.asarray((self._E > 0).mean(axis=0).tolist())
        self.pairwise = config.objective == "pairwise"
        if self.pairwise and self.pairs is None:
            raise DataError("objective: 'pairwise' needs preference pairs (chosen, rejected) or a feature store, "
                            "not rows with labels")
        #: rows of the squared loss: n (pointwise) or the number of pairs (pairwise)
        self.n_loss = int(self.pairs[0].shape[0]) if self.pairwise else self.n

    @property
    def E(self) -> Any:
        """Pattern signs 2 D - 1 (n, P) in the compute dtype (gathered from a remote source on first use)."""
        if self._E is None:
            self._E = self.xp.asarray(self.remote.gather_signs())
        return self._E

    # --- reading -------------------------------------------------------------------------------------------
    def _fit_standardizer(self) -> Standardizer:
        if not self.config.standardize:
            return Standardizer(None, None, self.config.bias)
        if hasattr(self.source, "moments"):  # a source that reduces over its rows itself (phase1/dask_source.py)
            mean, scale = self.source.moments()
            return Standardizer(mean, scale, self.config.bias)
        acc = MomentAccumulator()
        for block in self.source.iter_blocks():
            acc.add(self.xp.asarray(block.X))
        mean, scale = acc.result()
        return Standardizer(mean, scale, self.config.bias)

    def _stream(self) -> Iterator[tuple[int, int, Any]]:
        blocks = self.source.iter_blocks()
        if self.config.prefetch:
            blocks = prefetch(blocks)
        start = 0
        for block in blocks:
            Xb = self.standardizer.apply(self.xp.asarray(block.X), self.dtype)
            stop = start + int(Xb.shape[0])
            yield start, stop, Xb
            start = stop

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        """One read of the standardised rows: ``(start, stop, X[start:stop])`` with X in the compute dtype."""
        if self.X is None:
            yield from self._stream()
            return
        for start in range(0, self.n, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.n)
            yield start, stop, self.X[start:stop]

    def _sign_pass(self, gates: np.ndarray) -> Iterator[Any]:
        if self.remote is not None:
            yield from self.remote.sign_pass(self.standardizer, gates, self.dtype)
            return
        for _, _, Xb in self.blocks():
            yield gate_signs(Xb, gates)

    @property
    def resident(self) -> bool:
        return self.X is not None

    def squared_loss_sum(self, pred: Any) -> float:
        """sum (pred - y)^2 over rows (pointwise), or sum (pred_chosen - pred_rejected - 1)^2 over pairs."""
        xp = self.xp
        pred = pred.astype(xp.float64)
        r = (pred[self.pairs[0]] - pred[self.pairs[1]] - 1.0) if self.pairwise else pred - self.y.astype(xp.float64)
        return float(r @ r)

    def pair_blocks(self) -> Iterator[tuple[Any, Any, Any, Any]]:
        """One read of the paired rows as ``(X_chosen, X_rejected, E_chosen, E_rejected)`` batches."""
        c_idx, r_idx = self.pairs
        if self.X is not None:
            for a in range(0, int(c_idx.shape[0]), self.chunk_rows):
                c, r = c_idx[a:a + self.chunk_rows], r_idx[a:a + self.chunk_rows]
                yield self.X[c], self.X[r], self.E[c], self.E[r]
            return
        for start, stop, Xb in self._stream():  # a paired source's block is [k chosen; k rejected]
            k = (stop - start) // 2
            yield Xb[:k], Xb[k:], self.E[start:start + k], self.E[start + k:stop]

    def _pairwise_grams(self, with_H: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        xp, P, d = self.xp, self.P, self.d
        XtX = xp.zeros((d, d), dtype=xp.float64)
        H: Any = xp.zeros((P * d, P * d), dtype=xp.float64) if with_H else None
        Fty = xp.zeros((P, d), dtype=xp.float64)
        for _, _, Xb in self.blocks():
            Xb = Xb.astype(xp.float64)
            XtX += Xb.T @ Xb
        for Xc, Xr, Ec, Er in self.pair_blocks():
            Xc, Xr = Xc.astype(xp.float64), Xr.astype(xp.float64)
            Z = ((Ec > 0).astype(Xc.dtype)[:, :, None] * Xc[:, None, :]
                 - (Er > 0).astype(Xr.dtype)[:, :, None] * Xr[:, None, :]).reshape(Xc.shape[0], P * d)
            Fty += Z.sum(axis=0).reshape(P, d).astype(xp.float64)
            if H is not None:
                H += (Z.T @ Z).astype(xp.float64)
        from coala_core.phase1.source import to_numpy

        return to_numpy(XtX), (None if H is None else to_numpy(H)), to_numpy(Fty)

    def accuracy(self, pred: Any) -> float:
        """Pairwise accuracy (share of pairs with score(chosen) > score(rejected)) on paired rows, else the
        share of rows with sign(pred) == y."""
        xp = self.xp
        if self.pairs is not None:
            return float(xp.mean((pred[self.pairs[0]] > pred[self.pairs[1]]).astype(xp.float64)))
        return float(xp.mean((xp.sign(pred) == self.y).astype(xp.float64)))

    # --- Gram matrices -------------------------------------------------------------------------------------
    def grams(self, with_H: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One pass: ``XtX`` (d, d), ``H`` (Pd, Pd) with blocks X'D_i D_j X (when ``with_H``), and
        ``Fty`` (P, d) with rows X'D_i y; all float64 numpy (accumulated in float64 across blocks).
        Pairwise objective: the loss rows are the pair differences D_i(X_w) X_w - D_i(X_l) X_l with target 1.
        The products are taken in float64 whatever the compute dtype: they define the u-step's problem, and with
        float32 products its fixed point moved by ~1e-7 relative, the size of tol 1e-6's dual tolerance (issue 10
        item 6: the polished solution could not pass the stopping rule)."""
        if self.pairwise:
            return self._pairwise_grams(with_H)
        if hasattr(self.source, "grams"):  # the same sums, map-reduced where the rows are (phase1/dask_source.py)
            return self.source.grams(self.standardizer, self.gates, with_H, self.dtype)
        xp, P, d = self.xp, self.P, self.d
        XtX = xp.zeros((d, d), dtype=xp.float64)
        H: Any = xp.zeros((P * d, P * d), dtype=xp.float64) if with_H else None
        Fty = xp.zeros((P, d), dtype=xp.float64)
        for start, stop, Xb in self.blocks():
            Xb = Xb.astype(xp.float64)  # products in float64 (see the docstring)
            Db = (self.E[start:stop] > 0).astype(Xb.dtype)
            yb = self.y[start:stop]
            XtX += (Xb.T @ Xb).astype(xp.float64)
            Fty += ((Db * yb[:, None]).T @ Xb).astype(xp.float64)
            if with_H:
                Z = (Db[:, :, None] * Xb[:, None, :]).reshape(Xb.shape[0], P * d)
                for i in range(P):
                    blk = (Z[:, i * d:(i + 1) * d].T @ Z[:, i * d:]).astype(xp.float64)
                    H[i * d:(i + 1) * d, i * d:] += blk
        if with_H:
            upper = xp.triu(H)
            H = upper + xp.triu(H, 1).T
        from coala_core.phase1.source import to_numpy

        return to_numpy(XtX), (to_numpy(H) if with_H else None), to_numpy(Fty)
