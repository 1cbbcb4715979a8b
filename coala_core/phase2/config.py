"""Phase II configuration: loss, pairing, solver and the validation grid.

``preset: paper`` reproduces the authors' released code: random unmatched pairs capped at 2,000, margin 1.0,
beta 2.5, gamma 0.5, AdamW with lr 1e-4, weight decay 1e-4, 500 epochs, batch 128, no grid search. Any field
given explicitly overrides the preset. The default (``preset: convex``) is the pairwise Bradley-Terry loss on
prompt-matched pairs solved by Newton's method, with beta, gamma and l2 chosen on the validation split. ``linear_term: true`` gives the head a skip
connection: Phase II then fits the ReLU units' output weights and a linear function of the standardised
features together (one convex program; the linear Bradley-Terry probe is the case of zero ReLU weights).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from coala_core.config import StageConfig

PAPER_PRESET: dict[str, Any] = {
    "loss": "pairwise",
    "pairing": "random",
    "max_pairs": 2000,
    "margin": 1.0,
    "beta": 2.5,
    "gamma": 0.5,
    "l2": 0.0,
    "solver": "adamw",
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "epochs": 500,
    "batch_size": 128,
    "select": False,
    "init": "random",
}


class Phase2Config(StageConfig):
    """Phase II: refit theta2 (m,) with Theta1 frozen (method.md section 5)."""

    preset: Literal["convex", "paper"] = "convex"
    loss: Literal["pairwise", "pointwise"] = "pairwise"
    pairing: Literal["matched", "random"] = "matched"
    max_pairs: int | None = Field(default=None, ge=1)
    beta: float = Field(default=1.0, gt=0)
    gamma: float = 0.0
    margin: float = 0.0
    l2: float = Field(default=1e-3, ge=0)
    solver: Literal["newton", "agd", "adamw"] = "newton"
    init: Literal["zeros", "phase1", "random"] = "zeros"
    max_iter: int = Field(default=100, ge=1, description="Newton iterations")
    agd_max_iter: int = Field(default=5000, ge=1)
    tol: float = Field(default=1e-9, gt=0, description="stop when ||grad||_2 <= tol")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=128, ge=1)
    adamw_backend: Literal["numpy", "torch"] = "numpy"
    history_every: int = Field(default=1, ge=1, description="record metrics every k iterations/epochs")
    seed: int = 0
    select: bool = True
    linear_term: bool = Field(default=False, description=(
        "add a linear function of the standardised features to the head (theta2 grows from m to m + d): "
        "the head nests the linear Bradley-Terry probe and stays one convex program in theta2"))
    beta_grid: list[float] = Field(default_factory=lambda: [1.0, 2.5])
    gamma_grid: list[float] = Field(default_factory=lambda: [0.0, 0.5])
    l2_grid: list[float] = Field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": PAPER_PRESET}

    @model_validator(mode="after")
    def _check_grids(self) -> Phase2Config:
        for name in ("beta_grid", "l2_grid"):
            values = getattr(self, name)
            if self.select and not values:
                raise ValueError(f"{name} must be non-empty when select is true")
        if any(b <= 0 for b in self.beta_grid):
            raise ValueError(f"beta_grid values must be > 0, got {self.beta_grid}")
        if any(v < 0 for v in self.l2_grid):
            raise ValueError(f"l2_grid values must be >= 0, got {self.l2_grid}")
        return self
