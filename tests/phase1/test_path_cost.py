"""What a beta path costs (issue 10 item 6): the grid's start from a bound on the critical beta, early stopping
by validation (``path_patience``), and warm polishes that start from the previous beta's exact solution."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phase1_helpers import tiny
from test_path import pairs

from coala_core.phase1 import fit_phase1, fit_phase1_path, programs
from coala_core.phase1.fit import make_config, prepare


def _critical(X: np.ndarray, y: np.ndarray, **cfg: object) -> tuple[float, bool, float]:
    solver = prepare(X, y, make_config(None, dict(n_patterns=4, drop_degenerate=False, **cfg)))
    return solver.beta_crit, solver.beta_crit_exact, solver.beta_max


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cone_bound_brackets_the_exact_critical_beta(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the exact-NNLS size the grid starts from an accelerated-gradient bound: never below the exact
    critical beta (a start below it would skip betas), well below the gated bound, and within a grid step of
    the exact value."""
    X, y = tiny(seed, n=160, d=8)
    exact, is_exact, gated = _critical(X, y)
    assert is_exact
    monkeypatch.setattr(programs, "NNLS_MAX_SIZE", 10)
    bound, bound_exact, gated2 = _critical(X, y)
    assert not bound_exact and gated2 == gated
    assert exact * (1 - 1e-9) <= bound <= gated
    assert bound <= 1.25 * exact < gated  # one geometric step of a 12-beta grid over 1e-3 is 0.53x


def _patience_stop(accs: list[float], k: int, min_delta: float) -> int:
    """Where ``path_patience = k`` stops: after the first run of k betas none of which beats the last counted
    best by more than ``min_delta`` (that best moves only on such a gain)."""
    best, since = -1.0, 0
    for i, acc in enumerate(accs):
        if since >= k:
            return i
        best, since = (acc, 0) if acc > best + min_delta else (best, since + 1)
    return len(accs)


def _declines_stop(accs: list[float], k: int, min_delta: float) -> int:
    """Where ``path_declines = k`` stops: after the first k betas in a row, each below the one before and below
    the best so far."""
    run = 0
    for i, acc in enumerate(accs):
        if run >= k:
            return i
        run = run + 1 if i and acc < accs[i - 1] and acc < max(accs[:i]) else 0
    return len(accs)


@pytest.mark.parametrize("rule,seeds,min_delta", [("path_patience", (1, 30, 101, 40), 0.005),
                                                   ("path_patience", (1, 30, 101, 40), 0.03),
                                                   ("path_declines", (3, 40, 103, 60), 0.005)])
def test_stopping_rules_keep_the_full_paths_prefix(rule: str, seeds: tuple[int, int, int, int],
                                                   min_delta: float) -> None:
    """With ``path_patience = 2`` (or ``path_declines = 2``, the other rule off) the path is the full path's prefix
    up to where that rule stops, and it selects the best of that prefix (larger beta on ties). With 40
    validation pairs one pair is 0.025: ``path_min_delta`` 0.03 makes one-pair gains not count."""
    train, val = pairs(seeds[0], seeds[1], d=12), pairs(seeds[2], seeds[3], d=12)
    cfg = dict(n_patterns=4, path_n_betas=10, path_min_ratio=1e-3, tol=1e-5, max_iter=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = fit_phase1_path(train, validation=val, path_patience=0, path_declines=0, **cfg)
        short = fit_phase1_path(train, validation=val, **{"path_patience": 0, "path_declines": 0, rule: 2},
                                path_min_delta=min_delta, **cfg)
    accs = [row["val_accuracy"] for row in full.path]
    assert len(accs) == 10
    stop = (_patience_stop if rule == "path_patience" else _declines_stop)(accs, 2, min_delta)
    assert stop < 10, f"the data was chosen so the rule stops early: {accs}"
    assert [r["beta"] for r in short.path] == [r["beta"] for r in full.path[:stop]]
    assert [r["val_accuracy"] for r in short.path] == pytest.approx(accs[:stop], abs=1e-12)
    chosen = int(np.argmax(accs[:stop]))
    assert short.beta == full.path[chosen]["beta"] and short.path[chosen]["selected"]


def test_zero_solutions_do_not_use_up_the_patience() -> None:
    """Betas above the critical beta (zero network, accuracy 0) do not count: a grid that starts above it still
    reaches the nonzero solutions."""
    train, val = pairs(1, 30, d=12), pairs(101, 40, d=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        probe = fit_phase1_path(train, validation=val, n_patterns=4, path_n_betas=2, max_iter=2000)
        crit = probe.path[0]["beta"] / np.geomspace(1.0, 1e-3, 3)[1]  # the grid's first point is one step below
        betas = [8 * crit, 4 * crit, 2 * crit, 0.5 * crit, 0.1 * crit]
        res = fit_phase1_path(train, validation=val, n_patterns=4, betas=betas, path_patience=2, max_iter=2000)
    assert [r["n_active"] for r in res.path][:3] == [0, 0, 0]
    assert len(res.path) == 5 and res.n_active > 0


def test_warm_path_costs_at_most_3x_a_cold_solve_and_reaches_the_same_optimum() -> None:
    """The small path of ``benchmarks/solver.py --path-table`` (150 training / 60 validation pairs, d = 8,
    P = 6, 6 betas, tol 1e-4, the defaults otherwise): warm polishes start from the previous beta's exact solution,
    so the whole path takes at most 3x the iterations of one cold solve at the selected beta (it took 11.6x when
    warm polishes started from ADMM's iterate after 5 iterations), and ends at the cold solve's objective."""
    w = np.ones(8) / np.sqrt(8)

    def util(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ w, 0) - 0.5 * np.maximum(-(x @ w), 0)

    rng_pairs = []
    for seed, k in ((0, 150), (1, 60)):
        rng = np.random.default_rng(seed)
        a, b = rng.standard_normal((k, 8)), rng.standard_normal((k, 8))
        better = util(a) + 0.5 * rng.standard_normal(k) > util(b)
        rng_pairs.append((np.where(better[:, None], a, b), np.where(better[:, None], b, a)))
    train, val = rng_pairs
    cfg = dict(n_patterns=6, path_n_betas=6, path_min_ratio=1e-2, tol=1e-4, max_iter=5000)
    res = fit_phase1_path(train, validation=val, **cfg)
    cold = fit_phase1(train, beta=res.beta, **{k: v for k, v in cfg.items() if not k.startswith("path")})
    its = sum(r["iterations"] + r.get("refine_iterations", 0) for r in res.path)
    assert all(r["converged"] for r in res.path) and cold.converged
    assert its <= 3 * cold.iterations, (its, cold.iterations, [r["iterations"] for r in res.path])
    assert res.objective == pytest.approx(cold.objective, rel=1e-6)
