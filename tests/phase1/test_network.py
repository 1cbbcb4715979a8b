"""The recovered ReLU network predicts what the convex model predicts where the cones hold."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import tiny

from coala_core.phase1 import Phase1Result, fit_phase1


@pytest.mark.parametrize("bias", [False, True])
def test_network_equals_convex_model(bias: bool) -> None:
    X, y = tiny(6, n=40)
    res = fit_phase1(X, y, n_patterns=4, beta=0.01, tol=1e-10, max_iter=20000, compute_dtype="float64",
                     bias=bias, drop_degenerate=False)
    assert res.cone_violation <= 1e-7
    assert res.theta1.shape == (X.shape[1] + bias, res.n_active)
    assert res.theta2.shape == (res.n_active,)
    assert res.n_active > 0
    np.testing.assert_allclose(res.score(X), res.convex_score(X), atol=1e-6)
    # off the training rows the cones need not hold, but the network is still defined
    assert np.isfinite(res.score(np.random.default_rng(0).standard_normal((7, X.shape[1])))).all()


def test_arrays_round_trip_scores_the_same() -> None:
    X, y = tiny(7, n=30)
    res = fit_phase1(X, y, n_patterns=3, beta=0.01, tol=1e-6, max_iter=3000, drop_degenerate=False)
    arrays = res.to_arrays()
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    back = Phase1Result.from_arrays(arrays, res.summary())
    np.testing.assert_array_equal(back.score(X), res.score(X))


def test_gated_network_scores_like_gated_model() -> None:
    X, y = tiny(8, n=30)
    res = fit_phase1(X, y, n_patterns=3, beta=0.01, program="gated", tol=1e-10, drop_degenerate=False)
    np.testing.assert_allclose(res.score(X), res.convex_score(X), atol=1e-9)
    assert res.cone_violation == 0.0
