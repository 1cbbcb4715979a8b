"""Phase II: convex, reference-free refit of the output layer theta2 with Theta1 frozen (method.md s. 5).

Training a whole head (Phase I then Phase II) is :func:`coala_core.engine.fit_head`.
"""

from coala_core.phase2.config import PAPER_PRESET, Phase2Config
from coala_core.phase2.fit import Phase2Result, fit_phase2, pair_metrics, select_phase2, training_pairs
from coala_core.phase2.head import RewardHead, random_relu_head
from coala_core.phase2.losses import LogisticDesign, build_design
from coala_core.phase2.solvers import SolverResult, accelerated_gradient, adamw, newton

__all__ = [
    "PAPER_PRESET",
    "LogisticDesign",
    "Phase2Config",
    "Phase2Result",
    "RewardHead",
    "SolverResult",
    "accelerated_gradient",
    "adamw",
    "build_design",
    "fit_phase2",
    "newton",
    "pair_metrics",
    "random_relu_head",
    "select_phase2",
    "training_pairs",
]
