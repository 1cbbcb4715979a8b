"""Configuration of Phase I: the convex two-layer ReLU program and its solvers.

One frozen pydantic model, :class:`Phase1Config`, validated at the edge. Objective conventions
(method.md section 4): with ``loss="mean"`` (default) the squared loss is scaled by 1/n,

    (1/(2n)) || sum_i D_i X (v_i - w_i) - y ||^2 + beta * sum_i (||v_i||_2 + ||w_i||_2),

so ``beta`` keeps its meaning when n changes; ``loss="sum"`` is the paper's unscaled loss. Both objectives
are always reported. ``preset="paper"`` gives the authors' defaults (method.md section 9).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from coala_core.config import StageConfig

#: The authors' defaults (method.md section 9): 6 ADMM iterations of a Nystrom-PCG u-step, unscaled loss.
PAPER_PRESET: dict[str, Any] = {
    "n_patterns": 10,
    "beta": 1e-3,
    "rho": 1e-4,
    "loss": "sum",
    "solver": "cronos",
    "program": "relu",
    "standardize": False,
    "bias": False,
    "constraint_scale": 1.0,
    "nystrom_rank": 20,
    "cg_max_iter": 32,
    "cg_tol": 1e-6,
    "max_iter": 6,
    "adaptive_rho": False,
    "drop_degenerate": False,
    "iterate": "last",
    "rho_rule": "fixed",
}


#: The absolute part of the Boyd tolerances is multiplied by sqrt(#entries) (2nP cone rows), so it is taken
#: 100x below ``tol``; with abs = tol the solver stopped on MathDial features with cone violations ~5e-4.
ABS_TOL_FACTOR = 1e-2


#: the path's solves stop at this multiple of ``tol`` unless ``path_tol`` is set, and only the selected beta
#: continues to ``tol``. Measured (benchmarks/RESULTS.md, "Phase I path cost"): on 1,942 SmolLM2 MathDial pairs
#: (d = 576, P = 10, defaults) the path took 2,963 iterations at 10x and 2,139 at 30x with the same selected beta
#: and validation accuracies within one pair of 241 (a cold solve there: 725); 6,918 / 3,463 iterations at 1x / 10x
#: on the small path of benchmarks/solver.py
PATH_TOL_FACTOR = 30.0


class Phase1Config(StageConfig):
    """Phase I solver configuration.

    Fields follow method.md: ``n_patterns`` is P (2P neurons), ``beta`` the group-lasso weight, ``rho`` the
    ADMM penalty. ``solver="admm"`` is the exact structured u-step, ``"cronos"`` the authors' Nystrom-PCG
    u-step run for a fixed ``max_iter`` iterations.
    """

    preset: Literal["default", "paper"] = "default"
    # the program
    program: Literal["relu", "gated"] = "relu"
    #: ``pointwise``: chosen rows +1, rejected rows -1 (the paper); ``pairwise``: the loss
    #: (1/(2n)) ||sum_i (D_i(X_w) X_w - D_i(X_l) X_l)(v_i - w_i) - 1||^2 over the n pairs (issue 11 item 7)
    objective: Literal["pointwise", "pairwise"] = "pointwise"
    n_patterns: int = Field(10, ge=1, le=4096)
    beta: float = Field(1e-3, gt=0.0)
    loss: Literal["mean", "sum"] = "mean"
    seed: int = Field(0, ge=0)
    standardize: bool = True
    bias: bool = False
    drop_degenerate: bool = True
    min_pattern_share: float = Field(0.02, ge=0.0, lt=0.5)
    max_resample_rounds: int = Field(20, ge=0)
    # the solver
    solver: Literal["admm", "cronos"] = "admm"
    rho: float = Field(1.0, gt=0.0)  # used when rho_rule == "fixed"
    #: ``beta``: rho = max(rho_beta_factor * beta, rho_min) on the 1/n-scaled problem with standardised rows
    #: (per beta, so a path changes rho with beta; measured on small problems, benchmarks/RESULTS.md "Phase I
    #: solver (issue 10 items 4-6)": the best fixed rho grew like 100 beta for beta in 1e-3..3e-2; not measured below 1e-3,
    #: hence the floor); ``fixed``: ``rho`` as given (the paper preset)
    rho_rule: Literal["fixed", "beta"] = "beta"
    rho_beta_factor: float = Field(100.0, gt=0.0)
    rho_min: float = Field(0.1, gt=0.0)
    constraint_scale: float | None = Field(None, gt=0.0)
    adaptive_rho: bool = False  # measured: on SmolLM2 MathDial features residual balancing slowed convergence
    rho_mu: float = Field(5.0, gt=1.0)  # tolerated ratio of normalised primal to dual residual
    rho_tau: float = Field(100.0, gt=1.0)  # largest factor of one rho change
    rho_adapt_until: int = Field(1000, ge=0)
    rho_adapt_every: int = Field(25, ge=1)
    relaxation: float = Field(1.6, gt=0.0, lt=2.0)  # measured ~2x fewer iterations than 1.0
    anderson_memory: int = Field(0, ge=0, le=50)  # safeguarded Anderson acceleration (0 = off)
    #: after ``polish_every`` ADMM iterations (5 on a warm start), solve the program exactly on the neurons found
    #: so far and keep it when one ADMM iteration from it meets the stopping rule; the wait doubles after each miss
    #: (phase1/polish.py; 0 = off; resident rows of a modest size only, ``polish.polish_applies``)
    polish_every: int = Field(25, ge=0)
    max_iter: int = Field(5000, ge=1)  # the small problems of benchmarks/solver.py reach tol 1e-6 well within it
    tol: float = Field(1e-4, gt=0.0)
    abs_tol: float | None = Field(None, gt=0.0)
    rel_tol: float | None = Field(None, gt=0.0)
    iterate: Literal["last", "ergodic"] = "last"
    factor_max_dim: int = Field(8192, ge=1)
    #: how the exact u-step is solved: ``dense`` factors the Pd x Pd system (Gram H, one factor per rho),
    #: ``woodbury`` works in the space of the loss rows (resident rows, no H, one eigendecomposition for every
    #: rho); ``auto`` takes woodbury when the rows are resident, fewer than P d and their n x n matrices fit
    #: ``memory_budget_mb`` (linalg.woodbury_pays)
    ustep: Literal["auto", "dense", "woodbury"] = "auto"
    pcg_max_iter: int = Field(200, ge=1)
    pcg_tol: float = Field(1e-10, gt=0.0)
    gated_max_iter: int = Field(5000, ge=1)
    # cronos mode
    nystrom_rank: int = Field(20, ge=1)
    cg_max_iter: int = Field(32, ge=1)
    cg_tol: float = Field(1e-6, gt=0.0)
    # data movement
    backend: Literal["auto", "numpy", "cupy"] = "auto"
    compute_dtype: Literal["float32", "float64"] = "float32"
    chunk_rows: int = Field(4096, ge=1)
    memory_budget_mb: float = Field(2048.0, ge=0.0)
    prefetch: bool = True
    eval_every: int = Field(1, ge=1)
    # checkpoints
    checkpoint_path: str | None = None
    checkpoint_every: int = Field(0, ge=0)
    resume: bool = False
    # regularisation path
    path_n_betas: int = Field(12, ge=1)
    path_min_ratio: float = Field(1e-3, gt=0.0, lt=1.0)
    #: tolerance of the path's solves; None = PATH_TOL_FACTOR x tol. When looser than ``tol``, the selected beta's
    #: solve continues from its own state to ``tol`` (the shipped solution meets ``tol``; the others only select)
    path_tol: float | None = Field(None, gt=0.0)
    #: the path stops after this many betas in a row without a better validation accuracy than the best so far
    #: (the lower betas cost the most iterations; 0 = solve the whole grid). Measured in benchmarks/RESULTS.md,
    #: "Phase I path cost (issue 10 item 6)"
    path_patience: int = Field(3, ge=0)
    #: the path also stops once the validation accuracy has fallen below the best at this many betas in a row, each
    #: lower than the one before (Prechelt's "UP" early-stopping criterion, 1998; 0 = off). Measured on 8 real
    #: paths (benchmarks/RESULTS.md, "Phase I path cost"): it kept every selection and saved up to a quarter
    path_declines: int = Field(2, ge=0)
    #: a validation accuracy must beat the last counted best by more than this to reset ``path_patience`` (Keras's
    #: ``min_delta``; 0.005 is one pair in 200: on a few hundred validation pairs a one-pair gain is noise). The
    #: selection is still the best accuracy of all betas solved
    path_min_delta: float = Field(0.005, ge=0.0, lt=1.0)
    refit: bool = False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": PAPER_PRESET}

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.memory_budget_mb < 0:
            raise ValueError("memory_budget_mb must be >= 0")
        return self

    @property
    def eps_abs(self) -> float:
        """Absolute tolerance of the Boyd stopping rule (defaults to ``tol``)."""
        return self.abs_tol if self.abs_tol is not None else ABS_TOL_FACTOR * self.tol

    @property
    def eps_rel(self) -> float:
        """Relative tolerance of the Boyd stopping rule (defaults to ``tol``)."""
        return self.rel_tol if self.rel_tol is not None else self.tol
