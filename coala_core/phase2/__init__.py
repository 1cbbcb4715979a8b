"""Phase II: convex, reference-free refit of the output layer theta2 with Theta1 frozen (method.md s. 5)."""

from coala_core.phase2.config import PAPER_PRESET, Phase2Config
from coala_core.phase2.fit import Phase2Result, fit_phase2, pair_metrics, select_phase2, training_pairs
from coala_core.phase2.head import RewardHead, hidden_features, random_relu_head
from coala_core.phase2.losses import LogisticDesign, build_design
from coala_core.phase2.solvers import SolverResult, accelerated_gradient, adamw, newton
from coala_core.phase2.training import TrainConfig, TrainResult, align_to_store, train_head

__all__ = [
    "PAPER_PRESET",
    "LogisticDesign",
    "Phase2Config",
    "Phase2Result",
    "RewardHead",
    "SolverResult",
    "TrainConfig",
    "TrainResult",
    "align_to_store",
    "train_head",
    "accelerated_gradient",
    "adamw",
    "build_design",
    "fit_phase2",
    "hidden_features",
    "newton",
    "pair_metrics",
    "random_relu_head",
    "select_phase2",
    "training_pairs",
]
