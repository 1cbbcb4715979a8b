"""Cross-validation streamed from real Zarr feature stores: folds are row index sets over the stores, the
methods get ``SubsetPairs`` views, and the result equals the in-memory CV on the same rows (same folds, same
seeds). A memory budget below the data size still runs the COALA head (its Phase I streams); a baseline that
must hold its rows stops with an error naming the budget. No product CV path reads a store whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from coala_core.baselines import fit_linear_bt, fit_relu_net
from coala_core.baselines.methods import cv_fitters
from coala_core.engine.fit import fit_head
from coala_core.engine.spec import HeadSpec
from coala_core.errors import ConfigError, DimensionMismatchError
from coala_core.evaluation.cv import (
    HELD_BYTES_PER_VALUE,
    ConcatPairs,
    cross_validate,
    cross_validate_pairs,
    load_rows,
    summarise_cv,
)
from storage.feature_store import FeatureStore
from storage.heads import load_head, save_head
from storage.pairs import from_records, write_pairs

PROV = {"model_id": "tiny", "layer": -1, "pooling": "mean", "dataset_digest": "abc"}
SPEC = HeadSpec.build({
    "phase1": {"n_patterns": 3, "path_n_betas": 3, "max_iter": 60, "tol": 1e-3, "compute_dtype": "float64"},
    "phase2": {"l2_grid": [1e-2, 1.0], "gamma_grid": [0.0], "beta_grid": [1.0]},
})
N, D = 96, 5


def _pairs(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    chosen = (rng.standard_normal((n, d)) + u).astype(np.float32)
    rejected = rng.standard_normal((n, d)).astype(np.float32)
    groups = np.array([f"g{i // 3}" for i in range(n)])  # conversations of three pairs
    return chosen, rejected, groups


def _store(path: Path, chosen: np.ndarray, rejected: np.ndarray, first: int = 0, chunk_rows: int = 16) -> FeatureStore:
    n, d = chosen.shape
    store = FeatureStore.create(path, n_rows=n, dim=d, chunk_rows=chunk_rows, provenance=PROV)
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], [f"p{first + i:05d}" for i in range(a, b)])
    return store


def _no_read_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: FeatureStore) -> None:
        raise AssertionError(f"{self.uri}: read whole by the CV path")

    monkeypatch.setattr(FeatureStore, "read_all", refuse)


def _array_fitters(spec: HeadSpec) -> dict:
    return {"coala": lambda Fw, Fl, Vw, Vl: fit_head((Fw, Fl), (Vw, Vl), spec).head,
            "linear_bt": lambda Fw, Fl, Vw, Vl: fit_linear_bt(Fw, Fl, Vw, Vl),
            "relu_net_adamw": lambda Fw, Fl, Vw, Vl: fit_relu_net(Fw, Fl, Vw, Vl, width=4, seed=0, epochs=5)}


def test_streamed_cv_over_stores_equals_the_in_memory_cv(tmp_path, monkeypatch):
    """Two stores (as one flow run's splits) read one after another in chunks of 7 rows = the stacked arrays:
    same folds, same out-of-fold rewards of the COALA head and both baselines (up to the summation order of
    the streamed column moments), same summary."""
    chunk_rows = 7
    C, R, groups = _pairs()
    a = _store(tmp_path / "a.zarr", C[:40], R[:40], 0, chunk_rows)
    b = _store(tmp_path / "b.zarr", C[40:], R[40:], 40, chunk_rows)
    memory = cross_validate(C, R, groups, _array_fitters(SPEC), k=3, seed=1)
    _no_read_all(monkeypatch)
    fitters = cv_fitters(SPEC, baselines=False, width=4, seed=0, provenance=PROV, dim=D)
    from coala_core.evaluation.cv import rows_fitter

    fitters["linear_bt"] = rows_fitter(_array_fitters(SPEC)["linear_bt"], 1.0, "linear_bt")
    fitters["relu_net_adamw"] = rows_fitter(_array_fitters(SPEC)["relu_net_adamw"], 1.0, "relu_net_adamw")
    streamed = cross_validate_pairs(ConcatPairs([a, b]), groups, fitters, k=3, seed=1)
    np.testing.assert_array_equal(streamed.folds, memory.folds)
    assert list(streamed.rewards) == list(memory.rewards)
    for name in memory.rewards:
        for got, want in zip(streamed.rewards[name], memory.rewards[name], strict=True):
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    s, m = summarise_cv(streamed, n_boot=50), summarise_cv(memory, n_boot=50)
    for name in m["methods"]:
        assert s["methods"][name]["accuracy"] == m["methods"][name]["accuracy"]
        assert s["methods"][name]["beta_per_fold"] == m["methods"][name]["beta_per_fold"]
    assert m["methods"]["coala"]["accuracy"] > 0.6  # the planted preference is learnt out of fold


def test_a_budget_below_the_data_size_streams_the_coala_head(tmp_path, monkeypatch):
    """Phase I with a memory budget below the rows' size streams them on every pass; the CV result equals the
    one with the rows resident (same beta grid, same iterations). A baseline that holds its rows refuses that
    budget by name."""
    C, R, groups = _pairs()
    store = _store(tmp_path / "f.zarr", C, R)
    budget = 0.004  # MB
    assert 2 * N * D * 8 > budget * 2**20  # the Phase I rows (float64) do not fit
    betas = [1e-3, 3e-3, 1e-2]
    # the same ADMM iterations either way: the active-set polish runs on resident rows only (phase1/polish.py)
    resident = SPEC.replace(train=SPEC.train.replace(phase1_betas=betas),
                            phase1=SPEC.phase1.replace(polish_every=0))
    small = resident.replace(phase1=resident.phase1.replace(memory_budget_mb=budget))
    _no_read_all(monkeypatch)
    want = cross_validate_pairs(store, groups, cv_fitters(resident, baselines=False, width=4, seed=0,
                                                          provenance=PROV, dim=D), k=3, seed=0)
    got = cross_validate_pairs(store, groups, cv_fitters(small, baselines=False, width=4, seed=0, provenance=PROV,
                                                         dim=D), k=3, seed=0)
    for g, w in zip(got.rewards["coala"], want.rewards["coala"], strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)
    assert np.mean(got.rewards["coala"][0] > got.rewards["coala"][1]) > 0.6
    with_baselines = cv_fitters(small, baselines=True, width=4, seed=0, provenance=PROV, dim=D)
    with pytest.raises(ConfigError, match=r"linear_bt \(train rows\).*memory_budget_mb=0\.004"):
        cross_validate_pairs(store, groups, with_baselines, k=3, seed=0)


def test_load_rows_budget_counts_the_working_copies(tmp_path):
    C, R, _ = _pairs(40, 3)
    store = _store(tmp_path / "f.zarr", C, R)
    need_mb = 40 * 3 * HELD_BYTES_PER_VALUE / 2**20
    Fw, Fl = load_rows(store, need_mb, "x")
    np.testing.assert_array_equal(Fw, C)
    np.testing.assert_array_equal(Fl, R)
    with pytest.raises(ConfigError, match="x: holds its 40 pairs x 3 features"):
        load_rows(store, need_mb * 0.99, "x")


def test_concat_pairs_and_group_errors(tmp_path):
    C, R, groups = _pairs(20, 3)
    a = _store(tmp_path / "a.zarr", C, R)
    b = _store(tmp_path / "b.zarr", C[:, :2].copy(), R[:, :2].copy(), 20)
    with pytest.raises(DimensionMismatchError, match="different feature widths"):
        ConcatPairs([a, b])
    with pytest.raises(DimensionMismatchError, match="19 labels for 20"):
        cross_validate_pairs(a, groups[:19], {"m": lambda tr, va: None}, k=2)


def _pairs_file(path: Path, n: int, splits: list[str]) -> None:
    records = [{"pair_id": f"p{i:05d}", "prompt": [{"role": "user", "content": f"q{i}"}], "chosen": "good",
                "rejected": "bad", "source": "s", "group_id": f"g{i // 3}", "split": splits[i]} for i in range(n)]
    write_pairs(from_records(records[::-1]), path)


def test_flow_cv_task_streams_the_split_stores(tmp_path, monkeypatch):
    """``tasks.evaluation_cv.cross_validate_stores`` (the evaluate stage's ``evaluation.cv_folds``) on one
    store per split, never read whole; equal to the in-memory CV of the stacked splits."""
    from storage.pairs import read_pairs
    from tasks.evaluation_cv import cross_validate_stores
    from tasks.refs import FeaturesRef, StoreRef

    C, R, groups = _pairs()
    splits = ["test"] * 24 + ["train"] * 56 + ["validation"] * 16  # stores in sorted split order: test, train, val
    _pairs_file(tmp_path / "pairs.parquet", N, splits)
    refs = {}
    for split, (lo, hi) in {"test": (0, 24), "train": (24, 80), "validation": (80, 96)}.items():
        _store(tmp_path / f"{split}.zarr", C[lo:hi], R[lo:hi], lo)
        refs[split] = StoreRef(uri=str(tmp_path / f"{split}.zarr"), digest=f"{split}-digest", split=split,
                               n_rows=hi - lo, dim=D, provenance=PROV)
    trained = fit_head((C[24:80], R[24:80]), (C[80:], R[80:]), SPEC)
    save_head(tmp_path / "head", trained.head, provenance=PROV, **trained.record.head_json())
    head = load_head(tmp_path / "head")
    _no_read_all(monkeypatch)
    got = cross_validate_stores(head, FeaturesRef(stores=refs), read_pairs(tmp_path / "pairs.parquet"), k=3,
                                n_boot=50, seed=0)
    fitters = {k: v for k, v in _array_fitters(HeadSpec.build(head.meta["config"])).items() if k != "relu_net_adamw"}
    want = summarise_cv(cross_validate(C, R, groups, fitters, k=3, seed=0), n_boot=50, seed=0, reference="coala")
    assert list(got["methods"]) == ["coala", "linear_bt", "relu_net_adamw"]
    assert got["n_pairs"] == N and sum(f["n_test"] for f in got["folds"]) == N
    for name, m in want["methods"].items():  # the AdamW net (the slow one) is compared in the first test
        assert got["methods"][name]["accuracy"] == pytest.approx(m["accuracy"], abs=1e-12)
        assert got["methods"][name]["fold_accuracy"] == pytest.approx(m["fold_accuracy"], abs=1e-12)
    with pytest.raises(ConfigError, match="memory_budget_mb=0.001"):
        cross_validate_stores(head, FeaturesRef(stores=refs), read_pairs(tmp_path / "pairs.parquet"), k=3,
                              n_boot=50, seed=0, memory_budget_mb=0.001)


def test_cli_evaluate_cv_streams_under_a_budget(tmp_path, monkeypatch):
    """``coala evaluate --cv`` reads the store chunk by chunk: a head trained with a budget below the data size
    cross-validates; with ``--baselines`` at that budget it stops with a one-line error naming it (exit 1)."""
    from coala_cli.main import app

    C, R, _ = _pairs()
    _store(tmp_path / "feat.zarr", C, R)
    _pairs_file(tmp_path / "pairs.parquet", N, ["train"] * 64 + ["validation"] * 16 + ["test"] * 16)
    feat, pairs = str(tmp_path / "feat.zarr"), str(tmp_path / "pairs.parquet")
    cfg = tmp_path / "train.yaml"
    cfg.write_text("phase1:\n  n_patterns: 3\n  path_n_betas: 3\n  max_iter: 60\n  memory_budget_mb: 0.004\n"
                   "phase2:\n  beta_grid: [1.0]\n  l2_grid: [0.01]\n")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--features", feat, "--pairs", pairs, "--output", str(tmp_path / "head"),
                              "--config", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    _no_read_all(monkeypatch)
    common = ["evaluate", "--head", str(tmp_path / "head"), "--features", feat, "--pairs", pairs, "--cv", "3",
              "--n-boot", "50"]
    res = runner.invoke(app, [*common, "--output", str(tmp_path / "cv")])
    assert res.exit_code == 0, res.output
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["n_pairs"] == N and list(cv["methods"]) == ["coala"]
    assert cv["metadata"]["spec"]["phase1"]["memory_budget_mb"] == 0.004
    res = runner.invoke(app, [*common, "--baselines", "--output", str(tmp_path / "cv2")])
    assert res.exit_code == 1
    assert "memory_budget_mb=0.004" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, [*common, "--baselines", "--memory-budget-mb", "64", "--output", str(tmp_path / "cv3")])
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "cv3" / "cv.json").read_text())["methods"]) == {"coala", "linear_bt",
                                                                                   "relu_net_adamw"}
