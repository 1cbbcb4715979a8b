"""The pairwise Phase I program (issue 11 item 7) against CVXPY + Clarabel, and its use from the config."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phase1_helpers import pairwise_oracle, standardized

from coala_core.errors import ConfigError, DataError
from coala_core.phase1 import Phase1Config, fit_phase1, fit_phase1_path


def pairs(seed: int, k: int, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((k, d)), rng.standard_normal((k, d))
    u = rng.standard_normal(d)
    util = lambda x: np.maximum(x @ u, 0) - 0.5 * np.maximum(-x @ u, 0)  # noqa: E731
    first = util(a) - util(b) + 0.3 * rng.standard_normal(k) > 0
    c, r = np.where(first[:, None], a, b), np.where(first[:, None], b, a)
    return c.astype(np.float32).astype(np.float64), r.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("seed,k,P,beta", [(0, 20, 2, 0.02), (1, 25, 3, 0.005)])
def test_pairwise_matches_cvxpy(seed: int, k: int, P: int, beta: float) -> None:
    c, r = pairs(seed, k)
    res = fit_phase1((c, r), objective="pairwise", n_patterns=P, beta=beta, tol=1e-10, max_iter=30000,
                     compute_dtype="float64", drop_degenerate=False)
    ref = pairwise_oracle(standardized(c, res), standardized(r, res), res.gates, beta)
    assert res.converged
    assert abs(res.objective - ref) <= 1e-6 * abs(ref)
    assert res.cone_violation <= 1e-6
    assert res.objective_unscaled == pytest.approx(res.objective * k, rel=1e-12)  # n = pairs here
    # on the training rows the cones hold, so the network's margins are the convex model's
    np.testing.assert_allclose(res.score(c) - res.score(r), res.convex_score(c) - res.convex_score(r), atol=1e-6)


def test_pairwise_default_settings_close_to_cvxpy() -> None:
    c, r = pairs(2, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit_phase1((c, r), objective="pairwise", n_patterns=3, beta=0.01, drop_degenerate=False)
    ref = pairwise_oracle(standardized(c, res), standardized(r, res), res.gates, 0.01)
    assert abs(res.objective - ref) <= 1e-3 * abs(ref)
    assert res.cone_violation <= 1e-3


def test_pairwise_from_config_on_a_path() -> None:
    cfg = Phase1Config.build({"objective": "pairwise", "n_patterns": 2, "path_n_betas": 3, "max_iter": 300})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit_phase1_path(pairs(3, 30), config=cfg, validation=pairs(4, 20))
    assert res.config["objective"] == "pairwise" and len(res.path) == 3
    vc, vr = pairs(4, 20)
    assert res.val_accuracy == pytest.approx(float(np.mean(res.score(vc) > res.score(vr))), abs=1e-12)


def test_pairwise_needs_pairs_and_admm() -> None:
    c, r = pairs(5, 10)
    X, y = np.vstack([c, r]), np.r_[np.ones(10), -np.ones(10)]
    with pytest.raises(DataError, match="pairwise"):
        fit_phase1(X, y, objective="pairwise", max_iter=5)
    with pytest.raises(ConfigError, match="pairwise"):
        fit_phase1((c, r), objective="pairwise", solver="cronos", max_iter=5)
