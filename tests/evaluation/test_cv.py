"""Group K-fold cross-validation: folds never split a group, every pair is held out exactly once, the
inner validation split is by group too, and out-of-fold scoring of real heads (linear BT and COALA at their
default settings) recovers a planted preference direction."""

from __future__ import annotations

import numpy as np
import pytest

from coala_core.baselines import fit_linear_bt
from coala_core.errors import ConfigError, DataError
from coala_core.evaluation.cv import cross_validate, group_folds, inner_split, summarise_cv


def _groups(seed: int = 0, n_groups: int = 37) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, size=n_groups)
    labels = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    return labels[rng.permutation(labels.size)]


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_folds_never_split_a_group_and_cover_every_pair_once(k, seed):
    groups = _groups(seed)
    folds = group_folds(groups, k, seed=seed)
    assert folds.shape == groups.shape and set(folds.tolist()) == set(range(k))  # one fold per pair, all used
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == groups.size and sizes.max() - sizes.min() <= 8  # balanced up to one group


def test_folds_are_seeded():
    groups = _groups(2)
    assert np.array_equal(group_folds(groups, 5, seed=3), group_folds(groups, 5, seed=3))
    assert not np.array_equal(group_folds(groups, 5, seed=3), group_folds(groups, 5, seed=4))


def test_fold_errors():
    with pytest.raises(ConfigError, match="at least 2"):
        group_folds(["a", "b"], 1)
    with pytest.raises(DataError, match="only 2 groups"):
        group_folds(["a", "b", "b"], 3)


def test_inner_split_is_by_group():
    groups = _groups(3)
    val = inner_split(groups, 0.2, seed=0)
    assert 0 < val.sum() < groups.size
    for g in np.unique(groups):
        assert np.unique(val[groups == g]).size == 1
    assert val.mean() >= 0.2


def _planted(n_groups: int = 60, per: int = 6, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    groups = np.repeat([f"c{i}" for i in range(n_groups)], per)
    u = rng.standard_normal(d)
    C, R = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    swap = (C - R) @ u + 0.5 * rng.standard_normal(n) < 0  # chosen is the one further along u (noisy)
    C[swap], R[swap] = R[swap].copy(), C[swap].copy()
    return C, R, groups


def test_cross_validate_scores_every_pair_out_of_fold():
    C, R, groups = _planted()
    seen = []

    def fit(Fw, Fl, Vw, Vl):
        # the held-out fold's rows never reach the fitter
        seen.append({tuple(r) for r in np.vstack([Fw, Vw])})
        return fit_linear_bt(Fw, Fl, Vw, Vl)

    folds_seen = []
    res = cross_validate(C, R, groups, {"linear_bt": fit}, k=5, seed=0, on_fold=folds_seen.append)
    r_w, r_l = res.rewards["linear_bt"]
    assert np.isfinite(r_w).all() and np.isfinite(r_l).all()
    assert len(folds_seen) == 5 and sum(f["n_test"] for f in folds_seen) == C.shape[0]
    for f, rows_fit in enumerate(seen):
        held = {tuple(r) for r in C[res.folds == f]}
        assert not (held & rows_fit)
    summary = summarise_cv(res, n_boot=200)
    m = summary["methods"]["linear_bt"]
    assert m["accuracy"] > 0.8 and m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(m)


def test_cv_compares_methods_and_flags_a_zero_head():
    C, R, groups = _planted(seed=1)

    class Zero:
        beta = 1.0

        def score(self, F):
            return np.zeros(len(F))

    fitters = {"linear_bt": lambda a, b, c, d: fit_linear_bt(a, b, c, d), "zero": lambda *a: Zero()}
    summary = summarise_cv(cross_validate(C, R, groups, fitters, k=4), n_boot=200, reference="linear_bt")
    assert summary["methods"]["zero"]["accuracy"] == 0.5  # chance, not 0.0
    (cmp,) = summary["comparisons"]
    assert (cmp["a"], cmp["b"]) == ("linear_bt", "zero")
    assert cmp["difference"] > 0.3 and cmp["ci_lo"] > 0 and cmp["p_value"] < 1e-6
    assert any("zero (fold 0): degenerate head" in w for w in summary["warnings"])
    assert not any(w.startswith("linear_bt") for w in summary["warnings"])


def test_cv_with_the_convex_head_at_default_settings():
    from coala_core.engine import fit_head

    C, R, groups = _planted(n_groups=30, per=4, d=5, seed=2)

    def fit(Fw, Fl, Vw, Vl):
        return fit_head((Fw, Fl), (Vw, Vl)).head

    summary = summarise_cv(cross_validate(C, R, groups, {"coala": fit}, k=2), n_boot=100)
    assert summary["methods"]["coala"]["accuracy"] > 0.75
    assert summary["n_pairs"] == 120 and len(summary["folds"]) == 2
