"""Fit Phase II: refit theta2 (m,) on frozen first-layer features, and choose beta, gamma, l2 on validation.

``Xw`` and ``Xl`` are the hidden features ``x~ = relu(standardised(f) @ Theta1)`` of chosen and rejected
responses, (n, m) each, row i of both being pair i. The objective is that of
:mod:`coala_core.phase2.losses`; the solver is named by :class:`Phase2Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from coala_core.errors import DimensionMismatchError, NonFiniteError
from coala_core.phase2.config import Phase2Config
from coala_core.phase2.losses import LogisticDesign, build_design
from coala_core.phase2.solvers import SolverResult, accelerated_gradient, adamw, newton


@dataclass
class Phase2Result:
    """theta2 (m,), the solver's diagnostics and a per-iteration history of loss and pair metrics."""

    theta2: np.ndarray
    objective: float
    grad_norm: float
    iterations: int
    converged: bool
    config: Phase2Config
    n_train_pairs: int
    history: list[dict[str, float]] = field(default_factory=list)
    selection: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "grad_norm": self.grad_norm,
            "iterations": self.iterations,
            "converged": self.converged,
            "solver": self.config.solver,
            "loss": self.config.loss,
            "beta": self.config.beta,
            "gamma": self.config.gamma,
            "margin": self.config.margin,
            "l2": self.config.l2,
            "n_train_pairs": self.n_train_pairs,
        }


def _check_pairs(name: str, Xw: np.ndarray, Xl: np.ndarray, m: int | None = None) -> None:
    if Xw.ndim != 2 or Xw.shape != Xl.shape:
        raise DimensionMismatchError(f"{name}: chosen {Xw.shape} and rejected {Xl.shape} must both be (n, m)")
    if m is not None and Xw.shape[1] != m:
        raise DimensionMismatchError(f"{name}: expected width m = {m}, got {Xw.shape[1]}")
    if Xw.shape[0] == 0:
        raise DimensionMismatchError(f"{name}: no pairs")
    for part, arr in (("chosen", Xw), ("rejected", Xl)):
        if not np.all(np.isfinite(arr)):
            raise NonFiniteError(f"{name}: {part} features contain NaN or infinite values")


def training_pairs(Xw: np.ndarray, Xl: np.ndarray, config: Phase2Config) -> tuple[np.ndarray, np.ndarray]:
    """The rows Phase II trains on: matched pairs, or (paper mode) chosen and rejected rows shuffled
    independently into unmatched pairs; either way at most ``max_pairs`` of them, chosen with ``seed``."""
    rng = np.random.default_rng(config.seed)
    n = Xw.shape[0]
    k = n if config.max_pairs is None else min(n, config.max_pairs)
    if config.pairing == "random":
        return Xw[rng.permutation(n)[:k]], Xl[rng.permutation(n)[:k]]
    if k < n:
        rows = np.sort(rng.choice(n, size=k, replace=False))
        return Xw[rows], Xl[rows]
    return Xw, Xl


def pair_metrics(D: np.ndarray, theta2: np.ndarray) -> dict[str, float]:
    """Accuracy, mean sigmoid margin and mean margin of pairs with feature differences ``D`` (n, m)."""
    margin = D @ theta2
    return {
        "accuracy": float(np.mean(margin > 0)),
        "sigmoid_margin": float(np.mean(expit(margin))),
        "margin": float(np.mean(margin)),
    }


def _initial_theta(m: int, config: Phase2Config, theta_init: np.ndarray | None) -> np.ndarray:
    if config.init == "phase1" and theta_init is not None:
        return np.asarray(theta_init, dtype=np.float64).copy()
    if config.init == "random":
        bound = 1.0 / np.sqrt(m)  # torch.nn.Linear's default initialisation
        return np.random.default_rng(config.seed).uniform(-bound, bound, size=m)
    return np.zeros(m)


def solve(design: LogisticDesign, theta0: np.ndarray, config: Phase2Config, observe=None) -> SolverResult:
    """Run the configured solver on a built design."""
    every = config.history_every
    if config.solver == "newton":
        return newton(design, theta0, max_iter=config.max_iter, tol=config.tol, observe=observe, every=every)
    if config.solver == "agd":
        return accelerated_gradient(
            design, theta0, max_iter=config.agd_max_iter, tol=config.tol, observe=observe, every=every
        )
    return adamw(
        design, theta0, lr=config.lr, weight_decay=config.weight_decay, epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed, backend=config.adamw_backend, observe=observe,
        every=every,
    )


def fit_phase2(
    Xw: np.ndarray,
    Xl: np.ndarray,
    config: Phase2Config | None = None,
    *,
    Xw_val: np.ndarray | None = None,
    Xl_val: np.ndarray | None = None,
    theta_init: np.ndarray | None = None,
    warm_start: np.ndarray | None = None,
    **overrides: Any,
) -> Phase2Result:
    """Fit theta2 with the configured loss and solver (no grid search; see :func:`select_phase2`).

    The history records, per recorded iteration, the training loss, the gradient norm and the pair metrics
    (accuracy, sigmoid margin, mean margin of ``r = x~ . theta2``) on the training pairs and, if given, on
    held-out pairs ``(Xw_val, Xl_val)``. ``warm_start`` (m,) replaces the configured initial point (used by
    :func:`select_phase2` along its l2 grid, where the optimum does not depend on the start).
    """
    config = (config or Phase2Config()).replace(**overrides) if overrides else (config or Phase2Config())
    Xw = np.asarray(Xw, dtype=np.float64)
    Xl = np.asarray(Xl, dtype=np.float64)
    _check_pairs("Phase II training pairs", Xw, Xl)
    m = Xw.shape[1]
    D_val = None
    if Xw_val is not None and Xl_val is not None:
        Xw_val, Xl_val = np.asarray(Xw_val, np.float64), np.asarray(Xl_val, np.float64)
        _check_pairs("Phase II validation pairs", Xw_val, Xl_val, m)
        D_val = Xw_val - Xl_val
    Tw, Tl = training_pairs(Xw, Xl, config)
    design = build_design(
        Tw, Tl, loss=config.loss, beta=config.beta, gamma=config.gamma, margin=config.margin, l2=config.l2
    )
    D_train = Xw - Xl  # metrics on all (matched) training pairs
    history: list[dict[str, float]] = []

    def observe(it: int, theta2: np.ndarray, loss: float, gnorm: float) -> None:
        row = {"iteration": float(it), "loss": loss, "grad_norm": gnorm}
        row.update({f"train/{k}": v for k, v in pair_metrics(D_train, theta2).items()})
        if D_val is not None:
            row.update({f"val/{k}": v for k, v in pair_metrics(D_val, theta2).items()})
        history.append(row)

    start = np.asarray(warm_start, np.float64).copy() if warm_start is not None else _initial_theta(m, config, theta_init)
    result = solve(design, start, config, observe)
    return Phase2Result(
        theta2=result.theta2, objective=result.objective, grad_norm=result.grad_norm,
        iterations=result.iterations, converged=result.converged, config=config,
        n_train_pairs=design.n if config.loss == "pairwise" else Tw.shape[0], history=history,
    )


def validation_log_loss(D: np.ndarray, theta2: np.ndarray, beta: float) -> float:
    """Mean -log sigmoid(beta * margin) of held-out pairs: the Bradley-Terry log loss of the head."""
    return float(np.mean(np.logaddexp(0.0, -beta * (D @ theta2))))


def select_phase2(
    Xw: np.ndarray,
    Xl: np.ndarray,
    Xw_val: np.ndarray,
    Xl_val: np.ndarray,
    config: Phase2Config | None = None,
    *,
    theta_init: np.ndarray | None = None,
) -> Phase2Result:
    """Fit every (beta, gamma, l2) of the config's grids and keep the best on the validation pairs.

    The criterion is validation pairwise accuracy, ties broken by the lower validation Bradley-Terry log
    loss. The winner is refit with the full history; the table of all candidates is ``result.selection``.
    With ``select: false`` this is :func:`fit_phase2` with validation metrics.
    """
    config = config or Phase2Config()
    if not config.select:
        return fit_phase2(Xw, Xl, config, Xw_val=Xw_val, Xl_val=Xl_val, theta_init=theta_init)
    D_val = np.asarray(Xw_val, np.float64) - np.asarray(Xl_val, np.float64)
    gammas = config.gamma_grid or [config.gamma]
    # Newton's optimum is unique for l2 > 0, so along each (beta, gamma) the l2 grid runs from the most
    # regularised value down, each fit warm-started at the previous one (a few Newton steps instead of a cold
    # solve, which on near-separable pairs at small l2 ran to its iteration cap); first-order solvers' results
    # depend on the start, so they keep the configured one.
    warm = config.solver == "newton"
    fits: dict[tuple[float, float, float], Any] = {}
    for beta in config.beta_grid:
        for gamma in gammas:
            prev: np.ndarray | None = None
            for l2 in sorted(config.l2_grid, reverse=True):
                cfg = config.replace(beta=beta, gamma=gamma, l2=l2, history_every=10**9)
                start: np.ndarray | None = prev if (warm and prev is not None and l2 > 0) else None
                fit = fit_phase2(Xw, Xl, cfg, theta_init=theta_init, warm_start=start)
                fits[(beta, gamma, l2)] = fit
                prev = fit.theta2
    table: list[dict[str, Any]] = []
    best_key, best_cfg = None, config
    for beta in config.beta_grid:
        for gamma in gammas:
            for l2 in config.l2_grid:
                fit = fits[(beta, gamma, l2)]
                val = pair_metrics(D_val, fit.theta2)
                row = {
                    "beta": beta, "gamma": gamma, "l2": l2,
                    "train_accuracy": pair_metrics(np.asarray(Xw) - np.asarray(Xl), fit.theta2)["accuracy"],
                    "val_accuracy": val["accuracy"],
                    "val_log_loss": validation_log_loss(D_val, fit.theta2, beta),
                    "grad_norm": fit.grad_norm, "converged": fit.converged,
                }
                table.append(row)
                key = (-row["val_accuracy"], row["val_log_loss"])
                if best_key is None or key < best_key:
                    best_key, best_cfg = key, config.replace(beta=beta, gamma=gamma, l2=l2)
    for row in table:
        row["chosen"] = (row["beta"], row["gamma"], row["l2"]) == (best_cfg.beta, best_cfg.gamma, best_cfg.l2)
    best = fit_phase2(Xw, Xl, best_cfg, Xw_val=Xw_val, Xl_val=Xl_val, theta_init=theta_init)
    best.selection = table
    return best
