"""Paired statistics: exact McNemar on constructed tables (by hand and against scipy's binomtest), paired
bootstrap intervals, ties counted as 1/2, and the degeneracy warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from coala_core.evaluation import evaluate_rewards, pairwise_accuracy
from coala_core.evaluation.degenerate import chance_path_warning, head_warnings, reward_warnings, tied_selection_warning
from coala_core.evaluation.stats import compare_methods, mcnemar_exact, pair_scores, paired_difference


def _table(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=float)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=float)
    return a, b


def test_mcnemar_exact_by_hand():
    # 2x2 table: 40 both right, 9 only A, 2 only B, 20 neither. Discordant n = 11, min(b, c) = 2:
    # p = 2 * P[X <= 2 | Bin(11, 1/2)] = 2 * (1 + 11 + 55) / 2**11 = 134 / 2048
    a, b = _table(40, 9, 2, 20)
    res = mcnemar_exact(a, b)
    assert (res.b, res.c, res.n_discordant) == (9, 2, 11)
    assert res.p_value == pytest.approx(134 / 2048, rel=1e-12)
    assert mcnemar_exact(b, a).p_value == pytest.approx(res.p_value)  # symmetric


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (5, 5), (122, 87), (87, 122), (30, 1), (0, 13), (7, 8)])
def test_mcnemar_matches_scipy_binomtest(only_a, only_b):
    a, b = _table(50, only_a, only_b, 10)
    res = mcnemar_exact(a, b)
    expected = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert res.p_value == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_issue_example_122_vs_87_is_significant_at_5_percent():
    a, b = _table(300, 122, 87, 100)
    assert 0.01 < mcnemar_exact(a, b).p_value < 0.05


def test_ties_count_half_everywhere():
    r_w = np.array([1.0, 0.0, 2.0, 0.0])
    r_l = np.array([0.0, 0.0, 3.0, 0.0])
    assert pair_scores(r_w, r_l).tolist() == [1.0, 0.5, 0.0, 0.5]
    assert pairwise_accuracy(r_w, r_l) == 0.5
    zero = evaluate_rewards(np.zeros(10), np.zeros(10), n_boot=20)
    assert zero.metrics["accuracy"] == 0.5  # a zero head is at chance, not 0.0
    assert zero.metrics["rewards/accuracies"] == 0.0  # TRL's own name keeps TRL's strict definition


def test_zero_head_against_a_method_is_a_test_of_that_method_against_chance():
    rng = np.random.default_rng(0)
    right = rng.random(200) < 0.7
    zero = np.full(200, 0.5)
    res = mcnemar_exact(right.astype(float), zero)
    assert (res.b, res.c) == (int(right.sum()), int((~right).sum()))
    assert res.p_value == pytest.approx(binomtest(int(right.sum()), 200, 0.5).pvalue)


def test_paired_difference_interval_is_narrower_than_unpaired_for_correlated_methods():
    rng = np.random.default_rng(3)
    n = 600
    easy = rng.random(n) < 0.6
    a = (easy | (rng.random(n) < 0.10)).astype(float)
    b = easy.astype(float)
    diff, lo, hi = paired_difference(a, b, n_boot=500, seed=1)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert lo <= diff <= hi and lo > 0  # A is right on every pair B is, and more
    # unpaired, the two accuracies' intervals would overlap: each is about +-0.04 wide
    se_unpaired = math.sqrt(a.var() / n + b.var() / n)
    assert (hi - lo) < 2 * 1.96 * se_unpaired


def test_paired_difference_resamples_groups():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(30), 20).astype(str)
    effect = rng.random(30)[np.repeat(np.arange(30), 20)] < 0.5  # A wins whole groups at a time
    a, b = effect.astype(float), (~effect).astype(float)
    _, lo_p, hi_p = paired_difference(a, b, n_boot=400, seed=0)
    _, lo_g, hi_g = paired_difference(a, b, groups, n_boot=400, seed=0)
    assert (hi_g - lo_g) > 2 * (hi_p - lo_p)


def test_compare_methods_every_pair_once():
    rng = np.random.default_rng(5)
    rewards = {m: (rng.standard_normal(50), rng.standard_normal(50)) for m in ("a", "b", "c")}
    rows = compare_methods(rewards, n_boot=50)
    assert [(r.a, r.b) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    for r in rows:
        sa, sb = pair_scores(*rewards[r.a]), pair_scores(*rewards[r.b])
        assert r.difference == pytest.approx(sa.mean() - sb.mean())
        assert (r.only_a, r.only_b) == (int(np.sum(sa > sb)), int(np.sum(sa < sb)))


def test_reward_warnings():
    rng = np.random.default_rng(6)
    base = 1e-4 + 1e-6 * rng.standard_normal(100)  # the issue's APS head: rewards ~1e-4, margins ~1e-6
    warn = reward_warnings(base, base + 1e-6 * rng.standard_normal(100), beta=1.0)
    assert len(warn) == 1 and "near-constant rewards" in warn[0]
    assert "exact ties" in reward_warnings(np.zeros(10), np.zeros(10))[0]
    assert reward_warnings(rng.standard_normal(100), rng.standard_normal(100)) == []


def test_selection_and_path_warnings():
    tied = [{"val_accuracy": 0.521}, {"val_accuracy": 0.521}, {"val_accuracy": 0.521}]
    assert "all 3 selection points tied" in tied_selection_warning(tied, "Phase II grid")[0]
    assert tied_selection_warning([{"val_accuracy": 0.5}, {"val_accuracy": 0.6}], "x") == []
    path = [{"val_accuracy": a} for a in (0.5, 0.52, 0.47, 0.55)]
    assert "never leaves chance" in chance_path_warning(path, 90)[0]  # band 0.5 +- 0.103
    assert chance_path_warning(path, 2000) == []  # band 0.5 +- 0.022: 0.55 is outside
    meta = {"training": {"phase1_path": path, "phase2_selection": tied, "n_validation": 90}}
    assert len(head_warnings(meta, np.zeros(5), np.zeros(5))) == 3
