"""The Phase I engine: one prepared problem, solved at one or many beta values with warm starts.

:class:`Phase1Solver` owns the prepared rows, the Gram matrices (X'X, H, F'y; one pass at set-up) and the
u-step solver whose factorisations are cached per rho, so a path of beta values re-uses them. ``solve``
returns a :class:`Phase1Result` and the final solver state (to warm-start the next solve).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from coala_core.errors import ConfigError
from coala_core.phase1.admm import ADMMProblem, ADMMState, init_state, rescale_state, run_admm
from coala_core.phase1.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from coala_core.phase1.config import ABS_TOL_FACTOR, Phase1Config
from coala_core.phase1.cronos import NystromCGUStep
from coala_core.phase1.data import PreparedRows
from coala_core.phase1.gated import solve_gated
from coala_core.phase1.linalg import StructuredUStep, WoodburyUStep, woodbury_pays
from coala_core.phase1.polish import polish_applies
from coala_core.phase1.programs import critical_beta, evaluate, network_accuracy, recover_network, relu_critical_beta
from coala_core.phase1.result import Phase1Result
from coala_core.phase1.source import to_numpy

log = logging.getLogger("coala.phase1")
#: on a warm start (the next beta of a path) the first polish attempt comes after this many iterations: the
#: previous beta's neurons are often already the right ones, and the polish starts from the previous beta's
#: exact solution (``ADMMState.polish_hint``). Measured on ``benchmarks/solver.py --path-table`` (6 betas):
#: path iterations 302 with 5, 62 with 1 (benchmarks/RESULTS.md, "Phase I path cost (issue 10 item 6)")
POLISH_FIRST_WARM = 1
LOG_EVERY = 200  # INFO line with the residuals every LOG_EVERY ADMM iterations (shown in Prefect's run log)


def shipped_accuracy(rows: PreparedRows, v: Any, w: Any, program: str) -> float:
    """Accuracy on ``rows`` (pairwise when paired) of the network recovered from (v, w): the head that is
    shipped, not the convex model sum_i D_i X (v_i - w_i) (they differ where the cones do not hold)."""
    theta1, theta2, idx = recover_network(to_numpy(v), to_numpy(w), program)
    return network_accuracy(rows, theta1, theta2, idx, program)


class Phase1Solver:
    """Prepared Phase I problem; ``solve(beta)`` runs the configured program and solver."""

    def __init__(self, rows: PreparedRows, config: Phase1Config, val_rows: PreparedRows | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.rows, self.config, self.val_rows = rows, config, val_rows
        #: called after every ADMM iteration with {beta, iteration, objective, r_primal, r_dual, ...} plus
        #: ``progress_context`` (the path sets beta_index and n_betas there)
        self.progress = progress
        self.progress_context: dict[str, Any] = {}
        t0 = time.perf_counter()
        n, P, d = rows.n, rows.P, rows.d
        if config.objective == "pairwise" and config.solver == "cronos":
            raise ConfigError("objective: 'pairwise' is solved by solver='admm' only (cronos mode is pointwise)")
        self.scale_n = float(rows.n_loss) if config.loss == "sum" else 1.0  # internal objective = 1/n-scaled
        woodbury = config.solver == "admm" and config.program == "relu" and (
            config.ustep == "woodbury" or (config.ustep == "auto" and woodbury_pays(
                n, rows.n_loss, P, d, rows.resident, config.memory_budget_mb)))
        if woodbury and not rows.resident:
            raise ConfigError("ustep: 'woodbury' needs the rows resident; raise memory_budget_mb or use 'dense'")
        #: the u-step in use: ``woodbury`` (rows space) or ``dense`` (the Pd x Pd factor or its PCG)
        self.ustep_kind = "woodbury" if woodbury else "dense"
        need_H = (config.solver == "admm" and not woodbury) or config.program == "gated"
        if need_H and (P * d) ** 2 * 8 > max(config.memory_budget_mb, 64.0) * 2**20 * 4:
            raise ConfigError(
                f"n_patterns: the Gram H of size {P * d}x{P * d} (float64) exceeds 4x memory_budget_mb="
                f"{config.memory_budget_mb}; lower n_patterns or raise memory_budget_mb")
        self.XtX, self.H, self.Fty = rows.grams(with_H=need_H)
        #: the gated program's critical beta max_i ||X'D_i y|| / n (config's loss convention)
        self.beta_max = critical_beta(self.Fty, rows.n_loss) * self.scale_n
        #: the largest beta with a nonzero solution (exact for the cone program on resident rows)
        self.beta_crit, self.beta_crit_exact = self.beta_max, True
        if config.program == "relu":
            crit, self.beta_crit_exact = relu_critical_beta(rows, self.Fty, None if rows.pairwise else self.XtX)
            self.beta_crit = crit * self.scale_n
        self.alpha = config.constraint_scale if config.constraint_scale is not None else 1.0 / np.sqrt(n)
        if woodbury:
            self.ustep: Any = WoodburyUStep(rows, self.XtX, self.Fty, self.alpha)
        elif config.solver == "admm":
            self.ustep = StructuredUStep(self.XtX, self.H, self.Fty, rows.n_loss, self.alpha, rows.xp,
                                              config.factor_max_dim, config.pcg_tol, config.pcg_max_iter)
        else:
            self.ustep = NystromCGUStep(rows, self.Fty, self.alpha, config.nystrom_rank, config.cg_max_iter,
                                        config.cg_tol, config.seed)
        #: whether the ADMM solves try the active-set polish (phase1/polish.py; resident, small problems)
        self.polishes = (config.solver == "admm" and config.program == "relu" and config.iterate == "last"
                         and config.polish_every > 0 and polish_applies(rows))
        self.setup_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------------------------------------------
    def solve(self, beta: float | None = None, *, state: ADMMState | None = None, tol: float | None = None,
              max_iter: int | None = None, a0: Any = None) -> tuple[Phase1Result, Any]:
        """Solve at ``beta`` (config's loss convention) from ``state`` (warm start) or from zero."""
        cfg = self.config
        beta = cfg.beta if beta is None else float(beta)
        beta_int = beta / self.scale_n
        tol = cfg.tol if tol is None else tol
        max_iter = cfg.max_iter if max_iter is None else max_iter
        t0 = time.perf_counter()
        if cfg.program == "gated":
            a, converged, hist = solve_gated(self.rows, self.H, self.Fty, beta_int, tol, cfg.gated_max_iter,
                                             a0=a0, seed=cfg.seed)
            v, w, new_state, iters = to_numpy(a), np.zeros_like(to_numpy(a)), a, len(hist["step"])
            if not converged:
                warnings.warn(f"gated Phase I did not converge in {cfg.gated_max_iter} iterations",
                              RuntimeWarning, stacklevel=2)
        else:
            v, w, converged, hist, new_state, iters = self._solve_relu(beta, beta_int, tol, max_iter, state)
        return self._result(beta, beta_int, v, w, converged, hist, iters, time.perf_counter() - t0), new_state

    def _solve_relu(self, beta: float, beta_int: float, tol: float, max_iter: int, state: ADMMState | None
                    ) -> tuple[np.ndarray, np.ndarray, bool, dict[str, list[float]], ADMMState, int]:
        cfg, rows = self.config, self.rows
        eps_abs = cfg.abs_tol if cfg.abs_tol is not None else ABS_TOL_FACTOR * tol
        eps_rel = cfg.rel_tol if cfg.rel_tol is not None else tol
        cronos = cfg.solver == "cronos"
        prob = ADMMProblem(rows, self.ustep, beta_int, self.alpha, eps_abs, eps_rel,
                           adaptive_rho=cfg.adaptive_rho and not cronos, rho_mu=cfg.rho_mu, rho_tau=cfg.rho_tau,
                           rho_adapt_until=cfg.rho_adapt_until, rho_adapt_every=cfg.rho_adapt_every,
                           relaxation=1.0 if cronos else cfg.relaxation, report="u" if cronos else "z")
        fp = fingerprint(rows.n, rows.d, rows.gates, beta, cfg.program)
        hist: dict[str, list[float]] = {}
        start_k = 0
        rho = self.rho_for(beta_int)
        warm = state is not None
        if state is None:
            state = init_state(rows, rho)
        else:  # warm start: ergodic averages restart at each beta (they average this solve's iterates only)
            start_k = state.k
            state = replace(state, z_sum=state.z_sum * 0.0, n_avg=0)
            if self.polishes:  # the primal iterate only: the duals restart at 0 (measured, see polish_applies)
                state = self._rescale_rho(replace(state, lam=state.lam * 0.0, nu=state.nu * 0.0), rho)
            elif cfg.rho_rule == "beta" and state.rho != rho:
                state = self._rescale_rho(state, rho)
        ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
        if ckpt is not None and cfg.resume and ckpt.exists():
            state, hist = load_checkpoint(ckpt, fp, rows.y)
            start_k = state.k
        every = cfg.checkpoint_every

        def on_iteration(st: ADMMState, info: Any) -> None:
            if self.val_rows is not None and (st.k % cfg.eval_every == 0):
                it = st.u if cronos else st.z
                hist.setdefault("val_accuracy", []).append(shipped_accuracy(self.val_rows, it[0], it[1], "relu"))
            elif self.val_rows is not None:
                hist.setdefault("val_accuracy", []).append(float("nan"))
            if ckpt is not None and every and st.k % every == 0:
                save_checkpoint(ckpt, st, hist, fp)
            if (st.k - start_k) % LOG_EVERY == 0:
                log.info("Phase I ADMM beta=%g iteration %d/%d: objective %.6g, r_primal %.3e, r_dual %.3e, "
                         "cone violation %.3e", beta, st.k - start_k, max_iter, info.objective, info.r_primal,
                         info.r_dual, info.cone_violation)
            if self.progress is not None:
                self.progress({**self.progress_context, "beta": beta, "iteration": st.k - start_k,
                               "max_iter": max_iter, "objective": info.objective, "r_primal": info.r_primal,
                               "r_dual": info.r_dual, "cone_violation": info.cone_violation})

        anderson = cfg.anderson_memory if (not cronos and cfg.iterate == "last") else 0
        polish_every = cfg.polish_every if self.polishes else 0
        state, _, converged, hist = run_admm(prob, state, start_k + max_iter, fixed_iters=cronos, history=hist,
                                             on_iteration=on_iteration, anderson=anderson,
                                             polish_every=polish_every,
                                             polish_first=POLISH_FIRST_WARM if warm else None)
        if ckpt is not None and every:
            save_checkpoint(ckpt, state, hist, fp)
        if not converged and not cronos:
            warnings.warn(f"Phase I ADMM did not reach tol={tol} in {max_iter} iterations (beta={beta:g})",
                          RuntimeWarning, stacklevel=3)
        # cronos mode returns u (as the authors' code does); its cone violation is reported with its objective
        last = state.u if cronos else state.z
        z = state.z_sum / max(state.n_avg, 1) if cfg.iterate == "ergodic" else last
        return to_numpy(z[0]), to_numpy(z[1]), converged, hist, state, state.k - start_k

    def rho_for(self, beta_int: float) -> float:
        """The ADMM penalty of the 1/n-scaled problem at beta (internal units): ``rho_rule``."""
        cfg = self.config
        if cfg.rho_rule == "beta" and cfg.solver == "admm":
            return max(cfg.rho_beta_factor * beta_int, cfg.rho_min)
        return cfg.rho / self.scale_n

    def _rescale_rho(self, st: ADMMState, rho: float) -> ADMMState:
        """A warm-start state for a new rho (admm.rescale_state: one pass over X, on the workers for Dask rows)."""
        return rescale_state(self.rows, st, rho, self.alpha)

    def _result(self, beta: float, beta_int: float, v: np.ndarray, w: np.ndarray, converged: bool,
                hist: dict[str, list[float]], iters: int, seconds: float) -> Phase1Result:
        cfg, rows = self.config, self.rows
        ev = evaluate(rows, v, w, beta_int, cfg.program)
        theta1, theta2, idx = recover_network(v, w, cfg.program)
        std = rows.standardizer
        mean = std.mean if std.mean is not None else np.zeros(rows.d_raw)
        scale = std.scale if std.scale is not None else np.ones(rows.d_raw)
        # accuracies of the shipped (recovered) network; the convex model's training accuracy is kept in history
        hist["convex_train_accuracy"] = [ev.accuracy]
        train_acc = network_accuracy(rows, theta1, theta2, idx, cfg.program)
        val_acc = (network_accuracy(self.val_rows, theta1, theta2, idx, cfg.program) if self.val_rows is not None
                   else float("nan"))
        return Phase1Result(
            objective=ev.objective, objective_unscaled=ev.objective_unscaled, v=v, w=w, gates=rows.gates.copy(),
            theta1=theta1, theta2=theta2, neuron_pattern=idx, mean=mean, scale=scale, program=cfg.program,
            beta=beta, converged=converged, iterations=iters, cone_violation=ev.cone_violation,
            train_accuracy=train_acc, val_accuracy=val_acc,
            pattern_shares=np.asarray(rows.pattern_report.shares, dtype=np.float64), history=hist,
            seconds=seconds, config=cfg.to_dict(),
        )
