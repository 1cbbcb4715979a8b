"""Regularisation path and model selection for Phase I (issue 5, item 8).

Solve a geometric grid of ``path_n_betas`` values of beta from one step below beta_crit (the largest beta with
a nonzero solution: the cone program's critical beta, ``programs.relu_critical_beta``) down to
``path_min_ratio * beta_crit``, each solve warm-started from the previous state (ergodic averages restart)
and re-using the cached factorisations (the u-system does not depend on beta). Select beta by the held-out
pairwise accuracy of the network each solve ships (the recovered ReLU network, not the convex model) on the
validation rows (split by group by the caller); ties go to the larger beta. The path stops early once
``path_patience`` betas in a row have not beaten the last counted best by more than ``path_min_delta``, or once
``path_declines`` betas in a row have each fallen below the one before while below the best (the low betas are
the expensive ones). Optionally refit on train + validation at the selected beta.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from coala_core.errors import DataError
from coala_core.phase1.config import PATH_TOL_FACTOR, Phase1Config
from coala_core.phase1.fit import make_config, prepare
from coala_core.phase1.result import Phase1Result
from coala_core.phase1.source import ConcatRows, as_row_source

log = logging.getLogger("coala.phase1")


def beta_grid(beta_max: float, n_betas: int, min_ratio: float, *, include_max: bool = True) -> np.ndarray:
    """Geometric grid from beta_max down to min_ratio * beta_max (n_betas values, decreasing); with
    ``include_max=False`` the grid's first point is one geometric step below beta_max (where the solution is
    zero), so every point of the grid has a nonzero solution."""
    if not include_max:
        return beta_max * np.geomspace(1.0, min_ratio, n_betas + 1)[1:]
    if n_betas == 1:
        return np.array([beta_max])
    return beta_max * np.geomspace(1.0, min_ratio, n_betas)


def fit_phase1_path(X: Any, y: Any = None, config: Phase1Config | Mapping[str, Any] | None = None, *,
                    validation: Any, validation_y: Any = None, betas: Sequence[float] | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> Phase1Result:
    """Warm-started beta path with selection on ``validation`` pairwise accuracy.

    Returns the selected solve (or the refit on train + validation when ``refit``) with ``path``: one row
    per beta with beta, objective, objective_unscaled, train_accuracy, val_accuracy, n_active, iterations,
    seconds, converged, and the selection marked ``selected``. ``progress(event: dict)`` is called after every
    ADMM iteration (event keys: beta_index, n_betas, beta, iteration, max_iter, objective, residuals) and once
    per finished beta (``done: True``).
    """
    cfg = make_config(config, overrides)
    if validation is None:
        raise DataError("validation: the path selects beta on held-out rows; pass a validation source")
    t0 = time.perf_counter()
    solver = prepare(X, y, cfg, validation, validation_y, progress)
    # the grid starts one step below the largest beta with a nonzero solution (the cone program's critical
    # beta, computed exactly by NNLS on resident rows; the gated bound otherwise)
    grid = np.asarray(betas, dtype=np.float64) if betas is not None else beta_grid(
        solver.beta_crit, cfg.path_n_betas, cfg.path_min_ratio, include_max=False)
    tol = cfg.path_tol if cfg.path_tol is not None else PATH_TOL_FACTOR * cfg.tol
    table: list[dict[str, Any]] = []
    results: list[Phase1Result] = []
    state: Any = None
    best_state: Any = None  # the state of the best validation accuracy so far (first among ties), to refine
    since_best = 0  # betas solved since the validation accuracy last improved by more than path_min_delta
    counted = -np.inf  # the accuracy of that improvement (path_patience's reference)
    declines = 0  # betas in a row below the best, each lower than the one before (path_declines)
    for i, beta in enumerate(sorted(grid, reverse=True)):
        if ((cfg.path_patience and since_best >= cfg.path_patience)
                or (cfg.path_declines and declines >= cfg.path_declines)):
            log.info("Phase I path stopped after %d of %d betas: the validation accuracy has not improved on %.4f "
                     "for %d betas (path_patience %d), %d of them falling (path_declines %d)", i, len(grid),
                     max(r.val_accuracy for r in results), since_best, cfg.path_patience, declines,
                     cfg.path_declines)
            if progress is not None:
                progress({"beta_index": len(grid) - 1, "n_betas": len(grid), "beta": float(beta), "done": True,
                          "stopped_early": True})
            break
        solver.progress_context = {"beta_index": i, "n_betas": len(grid)}
        if cfg.program == "gated":
            res, state = solver.solve(float(beta), tol=tol, a0=state)
        else:
            res, state = solver.solve(float(beta), state=state, tol=tol)
        nonzero = any(r.n_active > 0 for r in (*results, res))  # zero solutions above the critical beta don't count
        if not results or res.val_accuracy > max(r.val_accuracy for r in results):
            best_state, declines = state, 0
        elif nonzero:
            declines = declines + 1 if res.val_accuracy < results[-1].val_accuracy else 0
        if res.val_accuracy > counted + cfg.path_min_delta:
            counted, since_best = res.val_accuracy, 0
        elif nonzero:
            since_best += 1
        results.append(res)
        table.append({"beta": float(beta), "objective": res.objective, "objective_unscaled": res.objective_unscaled,
                      "train_accuracy": res.train_accuracy, "val_accuracy": res.val_accuracy,
                      "n_active": res.n_active, "iterations": res.iterations, "seconds": res.seconds,
                      "converged": res.converged, "selected": False})
        log.info("Phase I beta %d/%d = %.4g reached in %d iterations (%s): objective %.6g, train accuracy %.4f, "
                 "validation accuracy %.4f, %d active neurons", i + 1, len(grid), beta, res.iterations,
                 "converged" if res.converged else "not converged", res.objective, res.train_accuracy,
                 res.val_accuracy, res.n_active)
        if progress is not None:
            progress({**solver.progress_context, "beta": float(beta), "done": True, "val_accuracy": res.val_accuracy,
                      "iteration": res.iterations})
    accs = np.array([row["val_accuracy"] for row in table])
    best = int(np.flatnonzero(accs == accs.max())[0])  # first = largest beta among ties
    table[best]["selected"] = True
    chosen = results[best]
    log.info("Phase I chose beta %.4g (validation accuracy %.4f) of %d on the path", chosen.beta,
             table[best]["val_accuracy"], len(table))
    if tol > cfg.tol and cfg.program != "gated" and best_state is not None:
        # the path ran at the looser path tolerance to select; the shipped solution continues to ``tol``
        solver.progress_context = {"beta_index": best, "n_betas": len(grid), "refine": True}
        refined, _ = solver.solve(chosen.beta, state=best_state, tol=cfg.tol)
        table[best]["refine_iterations"] = refined.iterations
        table[best]["refined_val_accuracy"] = refined.val_accuracy
        log.info("Phase I refined beta %.4g to tol %g in %d more iterations (%s): validation accuracy %.4f",
                 chosen.beta, cfg.tol, refined.iterations, "converged" if refined.converged else "not converged",
                 refined.val_accuracy)
        if progress is not None:
            progress({**solver.progress_context, "beta": chosen.beta, "done": True,
                      "val_accuracy": refined.val_accuracy, "iteration": refined.iterations})
        chosen = refined
    if cfg.refit:
        both = ConcatRows([as_row_source(X, y, cfg.chunk_rows),
                           as_row_source(validation, validation_y, cfg.chunk_rows)])
        refit_solver = prepare(both, None, cfg.replace(beta=chosen.beta))
        chosen, _ = refit_solver.solve()
    chosen.path = table
    chosen.history["path_seconds"] = [time.perf_counter() - t0]
    chosen.history["setup_seconds"] = [solver.setup_seconds]
    return chosen
