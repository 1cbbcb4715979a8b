"""Head save/load roundtrip and checks; baselines; CLI smoke test on a tiny synthetic feature store."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coala_cli.main import app
from coala_core.baselines import fit_linear_bt
from coala_core.errors import DimensionMismatchError, MissingInputError, ProvenanceMismatchError
from coala_core.phase2 import RewardHead, random_relu_head
from storage.feature_store import FeatureStore
from storage.heads import load_head, save_head
from storage.pairs import from_records, write_pairs

PROV = {"model_id": "tiny", "layer": -1, "pooling": "mean", "dataset_digest": "abc"}


def test_head_roundtrip_and_dimension_errors(tmp_path):
    rng = np.random.default_rng(0)
    head = random_relu_head(6, 4, seed=1, features=rng.standard_normal((30, 6))).with_theta2(
        rng.standard_normal(4), beta=2.5)
    save_head(tmp_path / "h", head, config={"phase2": {"beta": 2.5}}, provenance=PROV, metrics={"acc": 0.7})
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["head.json", "head.safetensors"]
    back = load_head(tmp_path / "h", expected_dim=6, expected_provenance={**PROV, "dataset_digest": "other"})
    f = rng.standard_normal((5, 6))
    np.testing.assert_array_equal(back.score(f), head.score(f))
    assert back.beta == 2.5 and back.meta["config"]["phase2"]["beta"] == 2.5
    with pytest.raises(DimensionMismatchError, match="width 6.*width 7"):
        load_head(tmp_path / "h", expected_dim=7)
    with pytest.raises(ProvenanceMismatchError, match="pooling"):
        load_head(tmp_path / "h", expected_provenance={**PROV, "pooling": "last"})
    with pytest.raises(DimensionMismatchError):
        back.score(rng.standard_normal((2, 5)))
    with pytest.raises(MissingInputError):
        load_head(tmp_path / "nope")
    with pytest.raises(DimensionMismatchError, match="theta2"):
        RewardHead(theta1=np.zeros((6, 4)), theta2=np.zeros(3), mean=np.zeros(6), scale=np.ones(6),
                   gates=np.zeros((6, 2)))


def test_gated_head_with_bias():
    rng = np.random.default_rng(2)
    gates = rng.standard_normal((4, 3))
    theta1 = rng.standard_normal((4, 2))
    head = RewardHead(theta1=theta1, theta2=np.ones(2), mean=np.zeros(3), scale=np.ones(3), gates=gates,
                      program="gated", bias=True, pattern=np.array([2, 0]))
    f = rng.standard_normal((7, 3))
    Z = np.c_[f, np.ones(7)]
    expected = ((Z @ gates[:, [2, 0]] >= 0) * (Z @ theta1)).sum(axis=1)
    np.testing.assert_allclose(head.score(f), expected)


def test_linear_bt_recovers_direction():
    rng = np.random.default_rng(3)
    u = np.array([1.0, -1.0, 0.0, 0.0])
    Fw, Fl = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    swap = ((Fw - Fl) @ u) < 0
    Fw[swap], Fl[swap] = Fl[swap].copy(), Fw[swap].copy()
    head = fit_linear_bt(Fw[:300], Fl[:300], Fw[300:], Fl[300:])
    cos = head.w / head.scale @ u / (np.linalg.norm(head.w / head.scale) * np.linalg.norm(u))
    assert cos > 0.95 and np.mean(head.score(Fw[300:]) > head.score(Fl[300:])) > 0.95


@pytest.fixture()
def tiny_store(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 160, 8
    u = rng.standard_normal(d)
    chosen = (rng.standard_normal((n, d)) + 0.5 * u).astype(np.float32)
    rejected = rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"p{i:03d}" for i in range(n)]
    store = FeatureStore.create(tmp_path / "feat.zarr", n_rows=n, dim=d, chunk_rows=64, provenance=PROV)
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], ids[a:b])
    splits = ["train"] * 100 + ["validation"] * 30 + ["test"] * 30
    records = [{"pair_id": ids[i], "prompt": [{"role": "user", "content": f"q{i // 2}"}], "chosen": "good",
                "rejected": "bad", "source": "s1" if i % 2 else "s2", "group_id": f"g{i // 2}", "split": splits[i]}
               for i in range(n)]
    order = rng.permutation(n)  # the pairs file need not be in store order
    write_pairs(from_records([records[i] for i in order]), tmp_path / "pairs.parquet")
    return tmp_path


def test_cli_train_evaluate_score_baseline(tiny_store):
    runner = CliRunner()
    feat, pairs, head = str(tiny_store / "feat.zarr"), str(tiny_store / "pairs.parquet"), str(tiny_store / "head")
    cfg = tiny_store / "cfg.yaml"
    cfg.write_text("phase1:\n  n_patterns: 4\n  path_n_betas: 4\n  max_iter: 200\nphase2:\n  l2_grid: [0.01, 1.0]\n")
    res = runner.invoke(app, ["train", "--features", feat, "--pairs", pairs, "--output", head, "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    meta = json.loads((tiny_store / "head" / "head.json").read_text())
    assert meta["training"]["phase1_path"] and meta["config"]["phase2"]["l2"] in (0.01, 1.0)
    out = tiny_store / "eval"
    res = runner.invoke(app, ["evaluate", "--head", head, "--features", feat, "--pairs", pairs, "--output", str(out),
                              "--n-boot", "50", "--baselines"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["metrics"]["n_pairs"] == 30 and metrics["test"]["metrics"]["accuracy"] > 0.6
    assert {r["head"] for r in metrics["baselines"]} == {"coala", "linear_bt", "relu_net_adamw"}
    report = (out / "report.md").read_text()
    assert "Phase I beta path" in report and "Chosen Phase I beta" in report
    for png in ("phase2_curves.png", "beta_path.png", "margins_test.png", "reliability_test.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["score", "--head", head, "--features", feat, "--output", str(tiny_store / "s.parquet")])
    assert res.exit_code == 0, res.output
    scores = pq.read_table(tiny_store / "s.parquet")
    assert scores.num_rows == 160 and scores.column_names[:3] == ["pair_id", "reward_chosen", "reward_rejected"]
    res = runner.invoke(app, ["baseline", "--features", feat, "--pairs", pairs, "--head", head, "--n-boot", "20"])
    assert res.exit_code == 0 and "linear_bt" in res.output
    res = runner.invoke(app, ["evaluate", "--head", str(tiny_store / "missing"), "--features", feat,
                              "--output", str(out)])
    assert res.exit_code == 1 and "head not found" in res.output
