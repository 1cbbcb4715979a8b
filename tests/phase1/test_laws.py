"""Laws: zero above the critical beta, cronos mode improves, patterns, input validation, checkpoints."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phase1_helpers import cvxpy_solution, standardized, tiny

from coala_core.errors import ConfigError, DataError, DimensionMismatchError, NonFiniteError, ProvenanceMismatchError
from coala_core.phase1 import Phase1Config, fit_phase1
from coala_core.phase1.fit import make_config, prepare


@pytest.mark.parametrize("program", ["relu", "gated"])
def test_beta_above_critical_gives_zero(program: str) -> None:
    X, y = tiny(12, n=30)
    solver = prepare(X, y, make_config(None, dict(n_patterns=3, program=program, drop_degenerate=False)))
    assert solver.beta_crit <= solver.beta_max * (1 + 1e-12) and solver.beta_crit_exact
    res, _ = solver.solve(1.01 * solver.beta_max, tol=1e-8)
    assert res.n_active == 0
    assert np.abs(res.v).max() == 0 and np.abs(res.w).max() == 0
    assert res.objective == pytest.approx(0.5 * np.mean(y**2))
    below, _ = solver.solve(0.05 * solver.beta_max, tol=1e-8)
    assert below.n_active > 0 and below.objective < res.objective


def test_relu_critical_beta_is_where_the_oracle_leaves_zero() -> None:
    """The cone program's critical beta (NNLS per neuron group) is below the gated bound, and CVXPY finds the
    zero network just above it and a nonzero one just below it."""
    X, y = tiny(12, n=30)
    solver = prepare(X, y, make_config(None, dict(n_patterns=3, drop_degenerate=False, compute_dtype="float64")))
    crit = solver.beta_crit
    assert 0 < crit < 0.9 * solver.beta_max
    Xs = standardized(X, fit_phase1(X, y, n_patterns=3, drop_degenerate=False, max_iter=1))
    above = cvxpy_solution(Xs, y, solver.rows.gates, 1.01 * crit)
    below = cvxpy_solution(Xs, y, solver.rows.gates, 0.99 * crit)
    assert max(np.linalg.norm(a, axis=1).max() for a in above) < 1e-5
    assert max(np.linalg.norm(a, axis=1).max() for a in below) > 1e-3


def test_cronos_mode_at_the_paper_settings_returns_u() -> None:
    """The paper preset (rho = 1e-4, 6 iterations, last iterate) as the authors run it: the returned iterate is
    u, a non-trivial network on separable-ish data, reported with its cone violation."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((200, 8))
    y = np.where(X @ rng.standard_normal(8) > 0, 1.0, -1.0)
    res = fit_phase1(X, y, preset="paper")
    assert res.config["solver"] == "cronos" and res.config["rho"] == 1e-4 and res.iterations == 6
    assert res.n_active > 0 and res.train_accuracy >= 0.85
    assert res.objective_unscaled < 0.5 * np.sum(y**2)  # below the zero network's
    assert res.cone_violation > 0 and res.summary()["cone_violation"] == res.cone_violation
    assert res.history["objective"][-1] == pytest.approx(res.objective, rel=1e-6)  # history reports u too
    assert res.history["cone_violation"][-1] == pytest.approx(res.cone_violation, rel=1e-5)


def test_paper_preset_defaults_and_overrides() -> None:
    cfg = Phase1Config.build({"preset": "paper"})
    assert (cfg.n_patterns, cfg.beta, cfg.rho, cfg.nystrom_rank, cfg.max_iter, cfg.cg_max_iter) == (
        10, 1e-3, 1e-4, 20, 6, 32)
    assert cfg.loss == "sum" and cfg.solver == "cronos"
    assert Phase1Config.build({"preset": "paper"}, max_iter=50).max_iter == 50
    with pytest.raises(ConfigError, match="n_patterns"):
        Phase1Config.build(n_patterns=0)
    with pytest.raises(ConfigError, match="bogus"):
        Phase1Config.build(bogus=1)


def test_degenerate_patterns_are_resampled() -> None:
    rng = np.random.default_rng(14)
    X = rng.standard_normal((200, 4))
    X[:, 0] += 30.0  # raw rows in a narrow cone: most gates give near-constant patterns without centring
    y = np.sign(rng.standard_normal(200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit_phase1(X, y, n_patterns=6, standardize=False, max_iter=50, min_pattern_share=0.05)
    assert res.gates.shape[1] <= 6
    assert np.all((res.pattern_shares >= 0.05) & (res.pattern_shares <= 0.95))
    keys = {tuple((X @ res.gates[:, i] >= 0).tolist()) for i in range(res.gates.shape[1])}
    assert len(keys) == res.gates.shape[1]


def test_bad_input_is_named() -> None:
    X, y = tiny(15, n=20)
    y_bad = y.copy()
    y_bad[4] = 0.5
    with pytest.raises(DataError, match="row 4"):
        fit_phase1(X, y_bad)
    X_bad = X.copy()
    X_bad[7, 2] = np.nan
    with pytest.raises(NonFiniteError, match="row 7"):
        fit_phase1(X_bad, y)
    with pytest.raises(DimensionMismatchError, match="labels"):
        fit_phase1(X, y[:-1])
    res = fit_phase1(X, y, n_patterns=2, max_iter=20)
    with pytest.raises(DimensionMismatchError, match=r"\(n, 5\)"):
        res.score(np.zeros((3, 6)))


def test_checkpoint_resume_equals_uninterrupted(tmp_path) -> None:  # noqa: ANN001
    X, y = tiny(16, n=30)
    base = dict(n_patterns=3, beta=0.01, tol=1e-14, drop_degenerate=False, compute_dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = fit_phase1(X, y, max_iter=40, **base)
        ck = tmp_path / "state.npz"
        fit_phase1(X, y, max_iter=25, checkpoint_path=str(ck), checkpoint_every=10, **base)
        assert ck.exists()
        with np.load(ck, allow_pickle=False) as data:
            assert int(data["scalars"][1]) == 25
        resumed = fit_phase1(X, y, max_iter=15, checkpoint_path=str(ck), resume=True, **base)
    np.testing.assert_allclose(resumed.v, full.v, atol=1e-12)
    assert resumed.history["objective"] == pytest.approx(full.history["objective"], rel=1e-12)
    with pytest.raises(ProvenanceMismatchError):
        fit_phase1(X, y, max_iter=5, checkpoint_path=str(ck), resume=True, **dict(base, beta=0.5))
