"""Phase II's linear term (``phase2.linear_term``): the head is the ReLU network plus a linear function of the
standardised features, fit as one convex program in theta2 (m + d,)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_pairs, write_store

from coala_core.baselines.linear_bt import fit_linear_bt
from coala_core.engine.fit import fit_first_layer, fit_head, fit_output_layer
from coala_core.engine.sources import SubsetPairs, score_source
from coala_core.engine.spec import HeadSpec
from coala_core.errors import DimensionMismatchError
from coala_core.phase2.head import RewardHead, random_relu_head
from coala_core.phase2.losses import build_design
from storage.heads import head_digest, load_head, save_head

SPEC = HeadSpec.build({
    "phase1": {"n_patterns": 3, "path_n_betas": 3, "max_iter": 80, "tol": 1e-4, "compute_dtype": "float64"},
    "phase2": {"linear_term": True, "l2_grid": [1e-2, 1.0], "gamma_grid": [0.0], "beta_grid": [1.0]},
})


def _hand_score(head: RewardHead, f: np.ndarray) -> np.ndarray:
    """The reward written out by hand: relu units then the linear term on (f - mean) / scale."""
    z = (f.astype(np.float64) - head.mean) / head.scale
    zb = np.hstack([z, np.ones((len(z), 1))]) if head.bias else z
    m = head.width
    return np.maximum(zb @ head.theta1, 0.0) @ head.theta2[:m] + z @ head.theta2[m:]


def test_forward_is_the_relu_units_plus_a_linear_function():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((20, 6))
    base = random_relu_head(6, 4, seed=1, features=f)
    head = base.with_linear_term()
    assert head.n_hidden == 4 + 6 and head.theta2.shape == (10,)
    np.testing.assert_allclose(head.score(f), base.score(f))  # the new weights start at zero
    theta2 = rng.standard_normal(10)
    head = head.with_theta2(theta2, 1.0)
    assert head.linear
    np.testing.assert_allclose(head.score(f), _hand_score(head, f), rtol=1e-12, atol=1e-12)
    with pytest.raises(DimensionMismatchError, match="theta2"):
        RewardHead(theta1=head.theta1, theta2=np.zeros(4), mean=head.mean, scale=head.scale, gates=head.gates,
                   linear=True)


def test_phase2_with_the_linear_term_is_at_least_as_good_as_the_linear_probe_on_its_objective():
    """The linear probe is the linear-term head with zero ReLU output weights, so at the same (beta, l2) the
    convex Phase II optimum can only be lower; both are solved to a gradient-norm certificate."""
    chosen, rejected = make_pairs(120, 5, seed=3)
    tr, va = slice(0, 90), slice(90, 120)
    spec = SPEC.replace(phase2=SPEC.phase2.replace(l2_grid=[1e-1], beta_grid=[1.0], gamma_grid=[0.0]))
    trained = fit_head((chosen[tr], rejected[tr]), (chosen[va], rejected[va]), spec)
    head = trained.head
    assert head.linear and trained.phase2 is not None and trained.phase2.grad_norm < 1e-6
    Hw, Hl = head.hidden(chosen[tr]), head.hidden(rejected[tr])
    design = build_design(Hw, Hl, beta=1.0, l2=1e-1)
    probe = fit_linear_bt(chosen[tr], rejected[tr], chosen[va], rejected[va], l2_grid=(1e-1,))
    # the probe standardises with the pairs' own moments; the head with the Phase I moments: compare each
    # objective on the head's design, the probe's weights mapped onto the head's standardisation
    w_on_head = probe.w * head.scale / probe.scale
    offset_free = np.concatenate([np.zeros(head.width), w_on_head])
    assert design.value(head.theta2) <= design.value(offset_free) + 1e-9
    assert trained.record.phase2_summary["grad_norm"] < 1e-6


def test_a_linear_term_head_round_trips_through_disk_and_scores_chunk_by_chunk(tmp_path):
    chosen, rejected = make_pairs(80, 5, seed=2)
    store = write_store(tmp_path / "f.zarr", chosen, rejected, chunk_rows=16)
    trained = fit_head(SubsetPairs(store, np.arange(60)), SubsetPairs(store, np.arange(60, 80)), SPEC)
    save_head(tmp_path / "h", trained.head, **trained.record.head_json())
    loaded = load_head(tmp_path / "h", expected_dim=5)
    assert loaded.linear and loaded.theta2.shape == (loaded.width + 5,)
    r_w, r_l = score_source(loaded, store)
    np.testing.assert_allclose(r_w, trained.head.score(chosen), atol=1e-12)
    np.testing.assert_allclose(r_l, _hand_score(loaded, rejected), atol=1e-9)
    save_head(tmp_path / "h2", trained.head, **trained.record.head_json())
    assert head_digest(tmp_path / "h") == head_digest(tmp_path / "h2")
    plain = fit_output_layer(fit_first_layer(SubsetPairs(store, np.arange(60)), SubsetPairs(store, np.arange(60, 80)),
                                             SPEC), SubsetPairs(store, np.arange(60)),
                             SubsetPairs(store, np.arange(60, 80)),
                             SPEC.replace(phase2=SPEC.phase2.replace(linear_term=False)))
    assert not plain.head.linear and plain.head.theta2.shape == (plain.head.width,)
