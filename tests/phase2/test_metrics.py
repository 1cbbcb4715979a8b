"""Metrics on hand-computed examples; bootstrap coverage in a simulation; monotonicity statistic."""

from __future__ import annotations

import numpy as np
import pytest

from coala_core.evaluation import (
    bootstrap_ci,
    evaluate_rewards,
    expected_calibration_error,
    monotonicity,
    pairwise_accuracy,
    per_source,
    reliability_table,
    sigmoid_margin,
    trl_rewards,
)

R_W = np.array([2.0, 1.0, 0.0, 3.0])
R_L = np.array([1.0, 1.0, 1.0, 0.0])


def test_pair_metrics_by_hand():
    assert pairwise_accuracy(R_W, R_L) == 0.625  # the tie counts 1/2 (TRL's rewards/accuracies: wrong)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    assert sigmoid_margin(R_W, R_L) == pytest.approx(np.mean([sig(1), 0.5, sig(-1), sig(3)]))
    assert trl_rewards(R_W, R_L) == {
        "rewards/chosen": 1.5, "rewards/rejected": 0.75, "rewards/margins": 0.75, "rewards/accuracies": 0.5}


def test_reliability_and_ece_by_hand():
    # p: 0.9 and 0.8 correct, 0.3 wrong (confidence 0.7), 0.6 correct
    p = np.array([0.9, 0.8, 0.3, 0.6])
    table = reliability_table(p, n_bins=5)  # bins of width 0.1 over [0.5, 1]
    counts = [r["count"] for r in table]
    assert counts == [0, 1, 1, 1, 1]
    assert table[2]["accuracy"] == 0.0 and table[2]["confidence"] == pytest.approx(0.7)
    expected = (abs(1 - 0.6) + abs(0 - 0.7) + abs(1 - 0.8) + abs(1 - 0.9)) / 4
    assert expected_calibration_error(p, n_bins=5) == pytest.approx(expected)


def test_per_source_breakdown():
    out = per_source(R_W, R_L, ["a", "a", "b", "b"])
    assert out["a"]["accuracy"] == 0.75 and out["b"]["accuracy"] == 0.5  # a's tie counts 1/2
    assert out["a"]["rewards/margins"] == 0.5 and out["b"]["rewards/margins"] == 1.0


def test_bootstrap_interval_covers_true_accuracy_in_simulation():
    rng = np.random.default_rng(0)
    true_acc, n, trials = 0.65, 150, 120
    covered = 0
    for t in range(trials):
        correct = rng.random(n) < true_acc
        lo, hi = bootstrap_ci(lambda c: float(np.mean(c)), correct, n_boot=400, seed=t)
        covered += lo <= true_acc <= hi
    # nominal 95%: with 120 trials the share lies in [0.88, 0.99] with overwhelming probability
    assert 0.88 <= covered / trials <= 0.995


def test_group_bootstrap_is_wider_for_clustered_pairs():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 10)
    group_effect = rng.standard_normal(40)[groups]
    x = group_effect + 0.1 * rng.standard_normal(400)
    pairs = bootstrap_ci(np.mean, x, n_boot=300)
    by_group = bootstrap_ci(np.mean, x, n_boot=300, groups=groups.astype(str))
    assert (by_group[1] - by_group[0]) > 2 * (pairs[1] - pairs[0])


def test_monotonicity_statistic():
    assert monotonicity([0.5, 0.6, 0.6, 0.7]) == {"share_monotone": 1.0, "spearman": pytest.approx(0.9486832980505138),
                                                   "max_reversal": 0.0}
    m = monotonicity([1.0, 0.8, 0.9, 0.5], increasing=False)
    assert m["share_monotone"] == pytest.approx(2 / 3) and m["max_reversal"] == pytest.approx(0.1)


def test_evaluate_rewards_bundle():
    ev = evaluate_rewards(R_W, R_L, beta=2.0, sources=["a", "a", "b", "b"], n_boot=50)
    assert ev.metrics["accuracy"] == 0.625 and ev.metrics["rewards/accuracies"] == 0.5
    assert set(ev.by_source) == {"a", "b"}
    lo, hi = ev.ci["accuracy"]
    assert 0.0 <= lo <= 0.625 <= hi <= 1.0
    assert set(ev.to_dict()) >= {"metrics", "ci95", "by_source", "reliability"}
