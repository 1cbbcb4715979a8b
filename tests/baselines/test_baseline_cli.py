"""``coala baseline`` (same-feature heads, labelled for what they are; zero-shot likelihood scores) and
``coala evaluate --cv K`` on a tiny synthetic store with likelihood columns; degenerate heads are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from coala_cli.main import app
from coala_core.phase2 import random_relu_head
from storage.feature_store import FeatureStore
from storage.heads import save_head
from storage.pairs import from_records, write_pairs

D_HIDDEN = 6
PROV = {"model_id": "tiny", "layers": [-1], "hidden_size": D_HIDDEN, "pooling": "response_mean",
        "logprob_features": True, "dataset_digest": "abc"}


@pytest.fixture()
def store_dir(tmp_path):
    rng = np.random.default_rng(0)
    n = 180
    u = rng.standard_normal(D_HIDDEN)
    hid_w = rng.standard_normal((n, D_HIDDEN)) + 0.4 * u
    hid_l = rng.standard_normal((n, D_HIDDEN))
    # likelihood columns: loglik carries a weak signal, pmi a strong one
    aux_w = np.stack([rng.standard_normal(n) + 0.2, rng.standard_normal(n) + 1.5], axis=1)
    aux_l = np.stack([rng.standard_normal(n), rng.standard_normal(n)], axis=1)
    chosen = np.hstack([hid_w, aux_w]).astype(np.float32)
    rejected = np.hstack([hid_l, aux_l]).astype(np.float32)
    ids = [f"p{i:03d}" for i in range(n)]
    store = FeatureStore.create(tmp_path / "feat.zarr", n_rows=n, dim=D_HIDDEN + 2, chunk_rows=64, provenance=PROV)
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], ids[a:b])
    splits = ["train"] * 110 + ["validation"] * 35 + ["test"] * 35
    records = [{"pair_id": ids[i], "prompt": [{"role": "user", "content": f"q{i // 3}"}], "chosen": "good",
                "rejected": "bad", "source": "s", "group_id": f"g{i // 3}", "split": splits[i]} for i in range(n)]
    write_pairs(from_records(records), tmp_path / "pairs.parquet")
    return tmp_path


def test_baseline_heads_are_labelled_and_include_zero_shot(store_dir):
    out = store_dir / "cmp"
    res = CliRunner().invoke(app, ["baseline", "--features", str(store_dir / "feat.zarr"), "--pairs",
                                   str(store_dir / "pairs.parquet"), "--output", str(out), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "comparison.json").read_text())
    names = [r["head"] for r in table]
    assert names[0] == "random_relu_phase2" and "coala" not in names  # a random first layer is not COALA
    assert {"linear_bt", "relu_net_adamw", "zero_shot_pmi", "zero_shot_loglik"} <= set(names)
    pmi = next(r for r in table if r["head"] == "zero_shot_pmi")
    assert pmi["accuracy"] > 0.75 and pmi["selected"] == "nothing fit (zero-shot)"


def test_evaluate_cv_every_pair_once_with_paired_comparisons(store_dir):
    runner = CliRunner()
    feat, pairs = str(store_dir / "feat.zarr"), str(store_dir / "pairs.parquet")
    head = str(store_dir / "head")
    cfg = store_dir / "train.yaml"
    cfg.write_text("phase1:\n  n_patterns: 3\n  path_n_betas: 4\n  max_iter: 300\n"
                   "phase2:\n  beta_grid: [1.0]\n  l2_grid: [0.01]\n")
    res = runner.invoke(app, ["train", "--features", feat, "--pairs", pairs, "--output", head, "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    out = store_dir / "cv"
    res = runner.invoke(app, ["evaluate", "--head", head, "--features", feat, "--pairs", pairs, "--output", str(out),
                              "--cv", "3", "--baselines", "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    cv = json.loads((out / "cv.json").read_text())
    assert cv["k"] == 3 and cv["n_pairs"] == 180
    methods = list(cv["methods"])
    assert methods[0] == "coala" and set(methods) == {"coala", "linear_bt", "relu_net_adamw", "zero_shot_pmi",
                                                      "zero_shot_loglik"}
    assert len(cv["comparisons"]) == 10  # every pair of 5 methods once
    folds = np.array(cv["per_pair"]["fold"])
    assert sorted(set(folds.tolist())) == [0, 1, 2] and folds.size == 180  # every pair held out exactly once
    groups = np.array([f"g{int(p[1:]) // 3}" for p in cv["per_pair"]["pair_id"]])
    assert all(np.unique(folds[groups == g]).size == 1 for g in np.unique(groups))
    for m in cv["methods"].values():
        assert m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    report = (out / "report.md").read_text()
    assert "Cross-validated comparison (3 folds" in report and "McNemar" in report
    assert "McNemar p" in res.output or "McNemar p" in res.stdout


def test_a_zero_head_reads_chance_and_is_flagged(store_dir):
    rng = np.random.default_rng(1)
    head = random_relu_head(D_HIDDEN + 2, 4, seed=0, features=rng.standard_normal((20, D_HIDDEN + 2)))
    head = head.with_theta2(np.zeros(4), 1.0)
    save_head(store_dir / "zero", head, config={}, provenance=PROV, metrics={})
    out = store_dir / "ev"
    res = CliRunner().invoke(app, ["evaluate", "--head", str(store_dir / "zero"), "--features",
                                   str(store_dir / "feat.zarr"), "--pairs", str(store_dir / "pairs.parquet"),
                                   "--output", str(out), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert "warning: head on test: degenerate head" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["metrics"]["accuracy"] == 0.5
    assert any("degenerate head" in w for w in metrics["warnings"])
    assert "## Warnings" in (out / "report.md").read_text()
