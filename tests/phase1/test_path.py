"""Regularisation path: starts at zero, warm-started, selects by validation pairwise accuracy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from coala_core.errors import DataError
from coala_core.phase1 import fit_phase1, fit_phase1_path
from coala_core.phase1.fit import make_config, prepare


def pairs(seed: int, k: int, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = np.ones(d) / np.sqrt(d)
    chosen = rng.standard_normal((k, d))
    rejected = rng.standard_normal((k, d))
    better = chosen @ w + 0.5 * rng.standard_normal(k) > rejected @ w
    c = np.where(better[:, None], chosen, rejected)
    r = np.where(better[:, None], rejected, chosen)
    return c.astype(np.float32), r.astype(np.float32)


def test_path_selects_by_validation() -> None:
    train, val = pairs(20, 40), pairs(21, 30)
    cfg = dict(n_patterns=3, path_n_betas=6, path_min_ratio=1e-3, tol=1e-6, max_iter=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit_phase1_path(train, validation=val, **cfg)
    table = res.path
    assert table is not None and len(table) == 6
    betas = [row["beta"] for row in table]
    assert betas == sorted(betas, reverse=True)
    assert table[0]["n_active"] > 0  # starts one step below the largest beta with a nonzero solution
    sel = [row for row in table if row["selected"]]
    assert len(sel) == 1 and sel[0]["beta"] == res.beta
    assert sel[0]["val_accuracy"] == max(row["val_accuracy"] for row in table)
    # the selection metric is the validation accuracy of the shipped network (the recovered ReLU head)
    c, r = val
    assert res.val_accuracy == pytest.approx(float(np.mean(res.score(c) > res.score(r))), abs=1e-12)
    assert sel[0]["val_accuracy"] == res.val_accuracy
    # warm-started path result equals a cold solve at the selected beta
    cold = fit_phase1(train, beta=res.beta, **{k: v for k, v in cfg.items() if not k.startswith("path")})
    assert cold.objective == pytest.approx(res.objective, rel=1e-3)


def test_path_refit_uses_train_and_validation() -> None:
    train, val = pairs(22, 30), pairs(23, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit_phase1_path(train, validation=val, n_patterns=2, path_n_betas=3, max_iter=300, refit=True)
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    ref = fit_phase1(both, n_patterns=2, beta=res.beta, max_iter=300)
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)


def test_path_needs_validation() -> None:
    with pytest.raises(DataError, match="validation"):
        fit_phase1_path(pairs(24, 10), validation=None)


def test_ergodic_averages_restart_at_each_beta() -> None:
    """On a path the ergodic average at a beta averages that beta's iterates only: its objective equals a cold
    ergodic solve's (they differed by 3% when the averages leaked across betas)."""
    train = pairs(25, 40)
    cfg = dict(n_patterns=3, iterate="ergodic", tol=1e-7, max_iter=4000, compute_dtype="float64",
               drop_degenerate=False)
    solver = prepare(train, None, make_config(None, cfg))
    betas = solver.beta_crit * np.array([0.5, 0.2, 0.05])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        state = None
        for beta in betas:
            warm, state = solver.solve(float(beta), state=state)
        cold, _ = solver.solve(float(betas[-1]))
    assert warm.objective == pytest.approx(cold.objective, rel=2e-3)
    assert state.n_avg == warm.iterations
