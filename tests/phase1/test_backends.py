"""numpy equals cupy (runs only with a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import tiny

from coala_core.phase1 import fit_phase1
from coala_core.phase1.source import to_numpy


@pytest.mark.parametrize("program,solver", [("relu", "admm"), ("gated", "admm"), ("relu", "cronos")])
def test_backend_agrees_with_numpy(xp, program: str, solver: str) -> None:  # noqa: ANN001
    X, y = tiny(30, n=60)
    kw = dict(n_patterns=3, beta=0.01, program=program, solver=solver, tol=1e-9, max_iter=3000,
              compute_dtype="float64", drop_degenerate=False)
    ref = fit_phase1(X, y, **kw)
    got = fit_phase1(xp.asarray(X), xp.asarray(y), **kw)
    np.testing.assert_array_equal(got.gates, ref.gates)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)
    np.testing.assert_allclose(got.v, ref.v, atol=1e-6)
    np.testing.assert_allclose(to_numpy(got.score(xp.asarray(X))), ref.score(X), atol=1e-6)


def test_streamed_cupy_from_numpy_store(xp) -> None:  # noqa: ANN001
    X, y = tiny(31, n=50)
    kw = dict(n_patterns=3, beta=0.01, tol=1e-9, max_iter=3000, compute_dtype="float64", drop_degenerate=False)
    ref = fit_phase1(X, y, **kw)
    backend = "numpy" if xp is np else "cupy"
    got = fit_phase1(X, y, backend=backend, memory_budget_mb=0.0, chunk_rows=16, **kw)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)
