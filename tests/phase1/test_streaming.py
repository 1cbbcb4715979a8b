"""Streamed equals in-memory; pair sources; patterns agree across chunkings; prefetch."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import tiny

from coala_core.errors import DataError
from coala_core.phase1 import PairArrays, fit_phase1
from coala_core.phase1.source import prefetch

BASE = dict(n_patterns=3, beta=0.01, tol=1e-9, max_iter=5000, compute_dtype="float64", drop_degenerate=False)


def test_streamed_equals_in_memory() -> None:
    X, y = tiny(9, n=37)
    ref = fit_phase1(X, y, **BASE)
    assert ref.converged
    for chunk in (4, 16, 1000):
        got = fit_phase1(X, y, chunk_rows=chunk, memory_budget_mb=0.0, **BASE)
        np.testing.assert_array_equal(got.gates, ref.gates)
        assert got.objective == pytest.approx(ref.objective, rel=1e-6, abs=0)
        np.testing.assert_allclose(got.v, ref.v, atol=1e-6)
        np.testing.assert_allclose(got.w, ref.w, atol=1e-6)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)


def test_streamed_float32_matches_in_memory() -> None:
    X, y = tiny(10, n=50)
    cfg = dict(BASE, compute_dtype="float32", tol=1e-5, max_iter=3000)
    ref = fit_phase1(X, y, **cfg)
    got = fit_phase1(X, y, chunk_rows=7, memory_budget_mb=0.0, **cfg)
    assert got.objective == pytest.approx(ref.objective, rel=1e-5)


class FakeStore:
    """The FeatureStore iteration contract: iter_chunks -> (start, stop, chosen, rejected)."""

    def __init__(self, chosen: np.ndarray, rejected: np.ndarray, chunk_rows: int) -> None:
        self.inner = PairArrays(chosen, rejected, chunk_rows)
        self.n_rows, self.dim = self.inner.n_rows, self.inner.dim

    def iter_chunks(self):  # noqa: ANN201
        yield from self.inner.iter_chunks()


def test_store_pairs_are_chosen_plus_rejected_minus() -> None:
    rng = np.random.default_rng(11)
    chosen = rng.standard_normal((20, 5)).astype(np.float32) + 0.4
    rejected = rng.standard_normal((20, 5)).astype(np.float32)
    res_store = fit_phase1(FakeStore(chosen, rejected, 6), **dict(BASE, memory_budget_mb=0.0))
    res_rows = fit_phase1(FakeStore(chosen, rejected, 20), **BASE)
    assert res_store.objective == pytest.approx(res_rows.objective, rel=1e-6)
    # pairwise accuracy from the score matches the reported training accuracy
    acc = float(np.mean(res_store.convex_score(chosen) > res_store.convex_score(rejected)))
    assert res_store.train_accuracy == pytest.approx(acc, abs=1e-12)


def test_prefetch_propagates_errors_and_order() -> None:
    assert list(prefetch(iter(range(50)))) == list(range(50))

    def bad():  # noqa: ANN202
        yield 1
        raise DataError("boom at row 3")

    with pytest.raises(DataError, match="row 3"):
        list(prefetch(bad()))
