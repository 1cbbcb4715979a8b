"""``coala score`` and ``coala generate`` end to end on the tiny LM: texts are scored by exactly the feature
path that filled the training store, provenance is checked, bad input is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import pair_rows
from typer.testing import CliRunner

from coala_cli.main import app


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store_and_pairs(tmp_path_factory, tiny_lm: Path):
    """A feature store extracted by the training code path (extract_features) for a small pairs file."""
    from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
    from storage.feature_store import FeatureStore
    from storage.pairs import from_records, write_pairs

    d = tmp_path_factory.mktemp("store")
    info = write_pairs(from_records(pair_rows(6)), d / "pairs.parquet")
    cfg = ExtractionConfig.build(model=str(tiny_lm), max_tokens=64, device="cpu", dtype="float32", chunk_rows=32, batch_size=4)
    ex = FeatureExtractor(load_model(cfg), cfg)
    table = pq.read_table(info.path)
    store = FeatureStore.create(d / "f.zarr", n_rows=table.num_rows, dim=ex.loaded.hidden_size, chunk_rows=32,
                                provenance={**ex.provenance(info.digest), "split": "test"})
    extract_features(table, store, cfg, extractor=ex, show_progress=False)
    return d / "f.zarr", info.path


def test_score_texts_equals_the_training_store_path(head_dir, tiny_lm, store_and_pairs, tmp_path) -> None:
    store, pairs = store_and_pairs
    out_pairs = tmp_path / "pairs_scores.parquet"
    r = _run("score", "--model-uri", head_dir, "--features", store, "--pairs", pairs, "--output", out_pairs)
    assert r.exit_code == 0, r.output
    by_store = pq.read_table(out_pairs).to_pylist()
    assert {"prompt", "chosen", "rejected", "reward_chosen"} <= set(by_store[0])  # pair texts carried along
    # the chosen texts as (prompt, response) rows: prompts as text (single user turn) or message lists
    rows = []
    for row in by_store:
        prompt = row["prompt"][0]["content"] if len(row["prompt"]) == 1 else row["prompt"]
        rows.append({"id": row["pair_id"], "prompt": prompt, "response": row["chosen"]})
    inp = tmp_path / "texts.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "scores.jsonl"
    r = _run("score", "--model-uri", head_dir, "--input", inp, "--backbone", tiny_lm, "--output", out, "--batch-size", "2")
    assert r.exit_code == 0, r.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["id"] for s in scored] == [x["id"] for x in rows]
    np.testing.assert_allclose([s["reward"] for s in scored], [b["reward_chosen"] for b in by_store], rtol=1e-5, atol=1e-7)
    prov = json.loads((tmp_path / "scores.jsonl.provenance.json").read_text())
    for key in ("model_id", "model_revision", "layers", "pooling", "max_tokens", "compute_dtype"):
        assert key in prov
    assert prov["pooling"] == "mean" and prov["max_tokens"] == 64

    pq_out = tmp_path / "scores.parquet"
    r = _run("score", "--model-uri", head_dir, "--input", inp, "--backbone", tiny_lm, "--output", pq_out)
    assert r.exit_code == 0, r.output
    t = pq.read_table(pq_out)
    np.testing.assert_allclose(t.column("reward").to_pylist(), [s["reward"] for s in scored], rtol=1e-6)
    assert json.loads(t.schema.metadata[b"coala.provenance"])["model_revision"] == prov["model_revision"]


def test_score_refuses_another_backbone(head_dir, tmp_path) -> None:
    from coala_core.testing import save_tiny_lm

    other = save_tiny_lm(tmp_path / "other-llama", seed=1)
    inp = tmp_path / "t.jsonl"
    inp.write_text(json.dumps({"prompt": "What is seven times eight?", "response": "Fifty six."}) + "\n")
    r = _run("score", "--model-uri", head_dir, "--input", inp, "--backbone", other, "--output", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "features do not match the head" in r.output and "model_revision" in r.output
    assert not (tmp_path / "o.jsonl").exists()


def test_score_local_backbone_must_be_named(head_dir, tmp_path) -> None:
    inp = tmp_path / "t.jsonl"
    inp.write_text(json.dumps({"prompt": "Hi", "response": "Hello."}) + "\n")
    r = _run("score", "--model-uri", head_dir, "--input", inp, "--output", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "--backbone" in r.output


def test_score_input_missing_column_is_one_clear_error(head_dir, tiny_lm, tmp_path) -> None:
    inp = tmp_path / "t.jsonl"
    inp.write_text(json.dumps({"prompt": "Hi", "response": "Hello."}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    r = _run("score", "--model-uri", head_dir, "--input", inp, "--backbone", tiny_lm, "--output", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "t.jsonl:2" in r.output and "response" in r.output
    assert "Traceback" not in r.output


def test_non_finite_features_are_refused(head_dir, tiny_lm) -> None:
    import torch

    from coala_core.errors import NonFiniteError
    from tasks.model_uri import load_scorer

    s = load_scorer(head_dir, backbone=str(tiny_lm))
    with torch.no_grad():
        s.extractor.loaded.model.model.norm.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite features"):
        s.score([[{"role": "user", "content": "Hi"}]], ["Hello."])


def test_generate_command_writes_jsonl(head_dir, tiny_lm, tmp_path) -> None:
    out = tmp_path / "gen.jsonl"
    r = _run("generate", "--model-uri", head_dir, "--backbone", tiny_lm, "--prompt", "What is seven times eight?",
             "--prompt", "Julia has twelve spoons.", "--mode", "rerank", "--n", "3", "--max-new-tokens", "6", "--output", out)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(row["mode"] == "rerank" for row in rows)
    for row in rows:
        rewards = [float("-inf") if c["reward"] is None else c["reward"] for c in row["candidates"]]  # null: empty reply
        assert len(rewards) == 3 and rewards == sorted(rewards, reverse=True) and row["response"] == row["candidates"][0]["text"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": [{"role": "user", "content": "Hi"}]}) + "\n")
    r = _run("generate", "--model-uri", head_dir, "--backbone", tiny_lm, "--prompts", prompts, "--mode", "guided",
             "--max-new-tokens", "4", "--output", out)
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert row["id"] == "a" and row["mode"] == "guided" and isinstance(row["response"], str)
    r = _run("generate", "--model-uri", head_dir, "--backbone", tiny_lm, "--prompt", "Hi", "--mode", "beam")
    assert r.exit_code == 2 and "'beam' is not one of" in r.output
