"""Metrics and evaluation of reward heads on held-out preference pairs (method.md section 6)."""

from coala_core.evaluation.evaluate import Evaluation, evaluate_head, evaluate_rewards
from coala_core.evaluation.metrics import (
    bootstrap_ci,
    expected_calibration_error,
    log_loss,
    monotonicity,
    pair_summary,
    pairwise_accuracy,
    per_source,
    preference_probability,
    reliability_table,
    sigmoid_margin,
    trl_rewards,
)

__all__ = [
    "Evaluation",
    "bootstrap_ci",
    "evaluate_head",
    "evaluate_rewards",
    "expected_calibration_error",
    "log_loss",
    "monotonicity",
    "pair_summary",
    "pairwise_accuracy",
    "per_source",
    "preference_probability",
    "reliability_table",
    "sigmoid_margin",
    "trl_rewards",
]
