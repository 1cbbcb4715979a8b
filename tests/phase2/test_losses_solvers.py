"""Phase II losses and solvers: finite differences, oracle optimum, monotone decrease, AdamW parity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize
from sklearn.linear_model import LogisticRegression

from coala_core.errors import ConfigError, DimensionMismatchError
from coala_core.phase2 import (
    Phase2Config,
    accelerated_gradient,
    adamw,
    build_design,
    fit_phase2,
    newton,
    select_phase2,
    training_pairs,
)


def _pairs(n=60, m=6, seed=0, shift=0.3):
    rng = np.random.default_rng(seed)
    Xw = np.maximum(rng.standard_normal((n, m)) + shift, 0.0)
    Xl = np.maximum(rng.standard_normal((n, m)), 0.0)
    return Xw, Xl


@pytest.mark.parametrize("loss", ["pairwise", "pointwise"])
@pytest.mark.parametrize("beta,gamma,margin,l2", [(1.0, 0.0, 0.0, 0.0), (2.5, 0.5, 1.0, 0.1)])
def test_gradient_and_hessian_match_finite_differences(loss, beta, gamma, margin, l2):
    Xw, Xl = _pairs()
    design = build_design(Xw, Xl, loss=loss, beta=beta, gamma=gamma, margin=margin, l2=l2)
    theta = np.random.default_rng(1).standard_normal(design.m) * 0.3
    num_grad = approx_fprime(theta, design.value, 1e-7)
    np.testing.assert_allclose(design.gradient(theta), num_grad, rtol=1e-5, atol=1e-6)
    num_hess = np.stack([approx_fprime(theta, lambda t, j=j: design.gradient(t)[j], 1e-7) for j in range(design.m)])
    np.testing.assert_allclose(design.hessian(theta), num_hess, rtol=1e-4, atol=1e-5)


def test_loss_values_by_hand():
    # one pair, one feature: pairwise loss log(1 + exp(-(beta * theta * (xw - xl) - gamma)))
    design = build_design(np.array([[2.0]]), np.array([[0.5]]), beta=2.0, gamma=0.5)
    assert design.value(np.array([1.0])) == pytest.approx(np.log1p(np.exp(-(2.0 * 1.5 - 0.5))))
    # pointwise Eq. 9: rows (2, +1) and (0.5, -1): mean log(1 + exp(-beta y theta x + gamma))
    design = build_design(np.array([[2.0]]), np.array([[0.5]]), loss="pointwise", beta=2.0, gamma=0.5)
    expected = np.mean([np.log1p(np.exp(-4.0 + 0.5)), np.log1p(np.exp(1.0 + 0.5))])
    assert design.value(np.array([1.0])) == pytest.approx(expected)


def test_newton_matches_sklearn_logistic_regression():
    Xw, Xl = _pairs(n=80, m=5, seed=3)
    l2 = 0.05
    design = build_design(Xw, Xl, loss="pointwise", l2=l2)
    res = newton(design, np.zeros(design.m), tol=1e-12)
    X = np.vstack([Xw, Xl])
    y = np.r_[np.ones(len(Xw)), np.zeros(len(Xl))]
    # sklearn: C * sum log-loss + 0.5 ||w||^2  ==  n C * (mean log-loss + (1 / (2 n C)) ||w||^2)
    clf = LogisticRegression(C=1.0 / (l2 * len(X)), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(res.theta2, clf.coef_.ravel(), rtol=1e-5, atol=1e-6)
    assert res.converged and res.grad_norm <= 1e-12


def test_shifted_pairwise_newton_matches_scipy():
    Xw, Xl = _pairs(n=50, m=4, seed=5)
    design = build_design(Xw, Xl, beta=2.5, gamma=0.5, margin=1.0, l2=0.01)
    res = newton(design, np.zeros(4))
    ref = minimize(design.value, np.zeros(4), jac=design.gradient, method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(res.theta2, ref.x, atol=1e-6)
    assert res.objective <= ref.fun + 1e-12


@pytest.mark.parametrize("solver", [newton, accelerated_gradient])
def test_monotone_loss_decrease(solver):
    Xw, Xl = _pairs(n=120, m=8, seed=7)
    design = build_design(Xw, Xl, beta=2.5, gamma=0.5, l2=1e-3)
    res = solver(design, np.full(8, 0.5), tol=1e-9)
    assert np.all(np.diff(res.losses) <= 1e-14)
    assert res.converged


def test_agd_reaches_newton_optimum():
    Xw, Xl = _pairs(n=100, m=6, seed=2)
    design = build_design(Xw, Xl, l2=1e-2)
    a = newton(design, np.zeros(6), tol=1e-12)
    b = accelerated_gradient(design, np.zeros(6), tol=1e-9, max_iter=20_000)
    np.testing.assert_allclose(a.theta2, b.theta2, atol=1e-6)


def test_newton_warns_without_optimum_on_separable_pairs():
    Xw = np.array([[2.0, 0.0], [1.5, 0.5]])
    Xl = np.array([[0.0, 0.0], [0.5, 0.5]])
    design = build_design(Xw, Xl, l2=0.0)
    with pytest.warns(RuntimeWarning, match="optimum does not exist"):
        res = newton(design, np.zeros(2), max_iter=8, tol=1e-12)
    assert not res.converged


def test_adamw_numpy_equals_torch():
    Xw, Xl = _pairs(n=70, m=5, seed=4)
    design = build_design(Xw, Xl, beta=2.5, gamma=0.5, margin=1.0)
    kw = dict(lr=1e-2, weight_decay=1e-2, epochs=5, batch_size=16, seed=3)
    a = adamw(design, np.full(5, 0.1), backend="numpy", **kw)
    b = adamw(design, np.full(5, 0.1), backend="torch", **kw)
    np.testing.assert_allclose(a.theta2, b.theta2, rtol=1e-10, atol=1e-12)
    assert a.losses[-1] < a.losses[0]


def test_paper_preset_and_random_pairing():
    cfg = Phase2Config(preset="paper")
    assert (cfg.beta, cfg.gamma, cfg.margin, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.batch_size, cfg.max_pairs) == (
        2.5, 0.5, 1.0, 1e-4, 1e-4, 500, 128, 2000)
    assert cfg.solver == "adamw" and cfg.pairing == "random" and not cfg.select
    assert Phase2Config(preset="paper", epochs=3).epochs == 3
    Xw = np.arange(3000, dtype=float)[:, None] * np.ones((1, 2))
    Tw, Tl = training_pairs(Xw, -Xw, cfg)
    assert Tw.shape == (2000, 2) and Tl.shape == (2000, 2)
    assert np.mean(Tw[:, 0] == -Tl[:, 0]) < 0.01  # unmatched
    with pytest.raises(ConfigError, match="solver"):
        Phase2Config.build(solver="lbfgs")


def test_fit_history_and_selection():
    Xw, Xl = _pairs(n=120, m=6, seed=9)
    res = fit_phase2(Xw[:80], Xl[:80], Phase2Config(select=False), Xw_val=Xw[80:], Xl_val=Xl[80:])
    assert res.converged and res.history[0]["iteration"] == 0
    assert {"loss", "grad_norm", "train/accuracy", "val/sigmoid_margin"} <= set(res.history[-1])
    sel = select_phase2(Xw[:80], Xl[:80], Xw[80:], Xl[80:], Phase2Config(l2_grid=[1e-3, 1.0], beta_grid=[1.0]))
    assert len(sel.selection) == 4 and sum(r["chosen"] for r in sel.selection) == 1
    best = max(sel.selection, key=lambda r: (r["val_accuracy"], -r["val_log_loss"]))
    assert best["chosen"] and sel.config.l2 == best["l2"]
    with pytest.raises(DimensionMismatchError):
        fit_phase2(Xw, Xl[:, :3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_phase2(Xw, Xl, Phase2Config(solver="agd", l2=1e-2))


def test_selection_warm_starts_along_l2_and_reaches_each_cold_optimum():
    """The grid's Newton fits are warm-started from the next larger l2: every table row is the cold solve's
    optimum (same validation metrics, same certificate), in fewer Newton iterations in total."""
    Xw, Xl = _pairs(n=160, m=30, seed=4)
    cfg = Phase2Config(l2_grid=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], beta_grid=[1.0, 2.5], gamma_grid=[0.0])
    sel = select_phase2(Xw[:100], Xl[:100], Xw[100:], Xl[100:], cfg)
    warm_iters, cold_iters = 0, 0
    for row in sel.selection:
        cold = fit_phase2(Xw[:100], Xl[:100], cfg.replace(beta=row["beta"], gamma=row["gamma"], l2=row["l2"]))
        cold_iters += cold.iterations
        D_val = Xw[100:] - Xl[100:]
        assert np.mean(D_val @ cold.theta2 > 0) == pytest.approx(row["val_accuracy"])
        assert row["grad_norm"] <= cfg.tol * 1e3 and row["converged"]
    for beta in cfg.beta_grid:
        prev = None
        for l2 in sorted(cfg.l2_grid, reverse=True):
            c = cfg.replace(beta=beta, l2=l2)
            w = fit_phase2(Xw[:100], Xl[:100], c, warm_start=prev)
            cold = fit_phase2(Xw[:100], Xl[:100], c)
            np.testing.assert_allclose(w.theta2, cold.theta2, rtol=1e-6, atol=1e-7)
            warm_iters += w.iterations
            prev = w.theta2
    assert warm_iters < cold_iters
