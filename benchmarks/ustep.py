"""Phase I u-step: the rows-space (Woodbury) solve against the Pd-space factor, on the same problem, same run.

A beta path of ``--betas`` values (rho follows beta, so each beta is a new rho) on k synthetic preference pairs
(the LM-like rows of benchmarks/solver.py), d = 576, P = 10, default settings otherwise; timed: set-up (Gram
matrices, the factor or the eigendecomposition) plus the path. Both solvers solve the same program: the
objectives at every beta must agree to the solver's tolerance, and the script says so.

    .venv/bin/python benchmarks/ustep.py                     # k = 250, 500, 1000 pairs
    .venv/bin/python benchmarks/ustep.py --pairs 400 --betas 3
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from solver import synthetic_pairs  # noqa: E402 - benchmarks/solver.py (this folder is on sys.path)

from coala_core.phase1.config import Phase1Config
from coala_core.phase1.data import PreparedRows
from coala_core.phase1.solver import Phase1Solver
from coala_core.phase1.source import PairArrays, PairRows


def run(chosen: np.ndarray, rejected: np.ndarray, betas: list[float], ustep: str) -> tuple[float, list[float], str]:
    cfg = Phase1Config(ustep=ustep, loss="mean")
    t0 = time.perf_counter()
    solver = Phase1Solver(PreparedRows(PairRows(PairArrays(chosen, rejected)), cfg), cfg)
    state, objectives = None, []
    for beta in betas:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result, state = solver.solve(beta, state=state)
        objectives.append(result.objective)
    return time.perf_counter() - t0, objectives, solver.ustep_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--betas", type=int, default=5)
    a = ap.parse_args()
    betas = list(np.geomspace(3e-2, 3e-3, a.betas))
    print(f"{'pairs':>6} {'P*d':>6} {'dense s':>9} {'woodbury s':>11} {'speed-up':>9} {'max rel obj diff':>17}")
    for k in a.pairs:
        chosen, rejected = synthetic_pairs(k, a.d, seed=0)
        t_dense, o_dense, kind_d = run(chosen, rejected, betas, "dense")
        t_wood, o_wood, kind_w = run(chosen, rejected, betas, "woodbury")
        assert (kind_d, kind_w) == ("dense", "woodbury")
        diff = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(o_wood, o_dense, strict=True))
        print(f"{k:>6} {10 * a.d:>6} {t_dense:>9.1f} {t_wood:>11.1f} {t_dense / t_wood:>8.1f}x {diff:>17.2e}", flush=True)


if __name__ == "__main__":
    main()
