"""Issue 10 item 6: small problems converge at tol 1e-6 within 5,000 iterations at the default settings.

The table is ``benchmarks/solver.py``'s SMALL (a few hundred rows, d 8-10, P 6-8) at beta 3e-2 .. 1e-3; the
objective is checked against CVXPY/Clarabel. Before the polish (phase1/polish.py) 13 of these 16 cold solves
hit the 5,000-iteration cap (benchmarks/RESULTS.md, "Phase I rho (issue 10 item 6, 2026-11-30)").
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phase1_helpers import cvxpy_oracle, standardized, tiny

from coala_core.phase1.admm import run_admm
from coala_core.phase1.fit import make_config, prepare
from coala_core.phase1.polish import polish_state

SMALL = [(2, 300, 8, 8), (1, 200, 6, 8), (3, 212, 6, 10), (4, 400, 8, 10)]
BETAS = (3e-2, 1e-2, 3e-3, 1e-3)


@pytest.mark.parametrize("seed,n,P,d", SMALL)
def test_small_problems_converge_at_tol_1e6_within_5000_iterations(seed: int, n: int, P: int, d: int) -> None:
    X, y = tiny(seed, n=n, d=d)
    solver = prepare(X, y, make_config(None, {"n_patterns": P, "tol": 1e-6}))  # every other setting default
    assert solver.config.max_iter == 5000
    for beta in BETAS:
        res, _ = solver.solve(beta)
        assert res.converged, (beta, res.iterations)
        assert res.iterations <= 5000
        assert len(res.history["objective"]) == res.iterations
        ref = cvxpy_oracle(standardized(X, res), y, res.gates, beta, "relu")
        assert abs(res.objective - ref) <= 1e-6 * abs(ref), (beta, res.objective, ref)
        assert res.cone_violation <= 1e-6


def test_without_the_polish_the_table_hits_the_cap() -> None:
    """The failure the polish removes: the same solve with ``polish_every: 0`` does not reach tol 1e-6."""
    X, y = tiny(2, n=300, d=8)
    solver = prepare(X, y, make_config(None, {"n_patterns": 8, "tol": 1e-6, "polish_every": 0, "max_iter": 3000}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res, _ = solver.solve(1e-2)
    assert not res.converged and res.iterations == 3000


def test_polish_candidate_is_a_fixed_point_only_when_exact() -> None:
    """From a partly converged state the polish gives the oracle's objective; from the zero state it gives
    nothing, and an ADMM step from a candidate is kept only when it meets the stopping rule."""
    X, y = tiny(3, n=212, d=10)
    cfg = make_config(None, {"n_patterns": 6, "tol": 1e-6, "compute_dtype": "float64", "polish_every": 0})
    solver = prepare(X, y, cfg)
    beta = 1e-2
    from coala_core.phase1.admm import ADMMProblem, admm_step, init_state

    rho = solver.rho_for(beta)
    prob = ADMMProblem(solver.rows, solver.ustep, beta, solver.alpha, 1e-8, 1e-6, relaxation=cfg.relaxation)
    st0 = init_state(solver.rows, rho)
    assert polish_state(prob, st0) is None  # no active neuron yet
    st, _, converged, _ = run_admm(prob, st0, 300)
    assert not converged
    cand = polish_state(prob, st)
    assert cand is not None
    after, info = admm_step(prob, cand)
    assert info.r_primal <= 1e-10 and info.r_dual <= 1e-10  # a fixed point of the ADMM map (float64 rounding)
    res, _ = solver.solve(beta, max_iter=1)
    ref = cvxpy_oracle(standardized(X, res), y, res.gates, beta, "relu")
    assert abs(info.objective - ref) <= 1e-9 * ref
    np.testing.assert_allclose(np.asarray(after.z), np.asarray(cand.z), atol=1e-10)


def _exact_at(solver, prob, cand, X, y, beta: float) -> None:  # noqa: ANN001
    """``cand`` is a fixed point of the ADMM map at ``beta`` with the oracle's objective."""
    from coala_core.phase1.admm import admm_step

    assert cand is not None
    after, info = admm_step(prob, cand)
    res, _ = solver.solve(beta, max_iter=1)
    ref = cvxpy_oracle(standardized(X, res), y, res.gates, beta, "relu")
    assert info.r_primal <= 1e-9 and info.r_dual <= 1e-9  # measured 5e-12 .. 3e-10
    assert abs(info.objective - ref) <= 1e-9 * ref, (info.objective, ref)


def test_polish_adds_the_neurons_the_iterate_missed_and_starts_warm_from_another_beta() -> None:
    """Neurons the ADMM iterate has not found yet join the polish when their optimality condition fails: from
    a state that keeps only its largest neuron the polish still gives the oracle's solution. And a polish at a
    lower beta that starts from the last polish's solution (``polish_hint``, as a path does) is exact there too."""
    from dataclasses import replace

    from coala_core.phase1.admm import ADMMProblem, init_state

    X, y = tiny(3, n=212, d=10)
    cfg = make_config(None, {"n_patterns": 6, "tol": 1e-6, "compute_dtype": "float64", "polish_every": 0})
    solver = prepare(X, y, cfg)

    def problem(beta: float) -> ADMMProblem:
        return ADMMProblem(solver.rows, solver.ustep, beta, solver.alpha, 1e-8, 1e-6, relaxation=cfg.relaxation)

    beta = 1e-2
    prob = problem(beta)
    st, _, _, _ = run_admm(prob, init_state(solver.rows, solver.rho_for(beta)), 300)
    z = np.asarray(st.z).copy()
    norms = np.linalg.norm(z, axis=-1)
    assert (norms > 0).sum() >= 3  # the solution has several neurons
    keep = np.unravel_index(np.argmax(norms), norms.shape)
    only = np.zeros_like(z)
    only[keep] = z[keep]
    cand = polish_state(prob, replace(st, z=only))
    _exact_at(solver, prob, cand, X, y, beta)
    assert (np.linalg.norm(np.asarray(cand.z), axis=-1) > 0).sum() >= 3  # the others joined

    low = 3e-3
    prob_low = problem(low)
    warm = replace(cand, rho=solver.rho_for(low), polish_hint=cand.polish_hint)
    _exact_at(solver, prob_low, polish_state(prob_low, warm), X, y, low)
