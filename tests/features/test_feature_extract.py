"""Extraction into a FeatureStore: equality with texts run alone, resume after kill -9, refusal to append
with another config, sharding, the attention vector saved with the store, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tiny_lm import make_pairs

from coala_core.errors import ProvenanceMismatchError
from coala_core.features import ExtractionConfig, FeatureExtractor, attention_vector, extract_features, load_model
from coala_core.features.batching import GroupRunner
from storage import FeatureStore, write_pairs

ROOT = Path(__file__).resolve().parents[2]


def _setup(model_dir: Path, uri: str, n: int = 20, **cfg_kw):
    cfg = ExtractionConfig.build(model=str(model_dir), chunk_rows=4, batch_size=3, max_tokens=40, **cfg_kw)
    ex = FeatureExtractor(load_model(cfg), cfg)
    table = make_pairs(n)
    store = FeatureStore.open_or_create(
        uri, n_rows=n, dim=ex.dim, dtype=cfg.store_dtype, chunk_rows=cfg.chunk_rows, provenance=ex.provenance("digest-1")
    )
    return cfg, ex, table, store


def test_store_rows_equal_each_pair_run_alone(tiny_model_dir, tmp_path):
    cfg, ex, table, store = _setup(tiny_model_dir, str(tmp_path / "s.zarr"))
    stats = extract_features(table, store, cfg, extractor=ex, show_progress=False)
    store.verify()
    chosen, rejected = store.read_all()
    assert store.pair_ids().tolist() == table.column("pair_id").to_pylist()
    prompts = table.column("prompt").to_pylist()
    alone = [ex.pair_features([p], [c], [r], GroupRunner(ex.engine.run, 2))
             for p, c, r in zip(prompts, table.column("chosen").to_pylist(), table.column("rejected").to_pylist(), strict=True)]
    np.testing.assert_allclose(chosen, np.concatenate([a[0] for a in alone]), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(rejected, np.concatenate([a[1] for a in alone]), atol=1e-5, rtol=1e-5)
    assert stats.rows == 20 and stats.texts == 40 and stats.chunks == 5
    # real tokens: each pair's shared prefix once plus both response parts
    assert stats.tokens == sum(len(g.prefix) + len(g.parts[0]) + len(g.parts[1]) for a in alone for g in a[2])
    assert stats.truncations > 0 and 0 < stats.padding_efficiency <= 1 and stats.tokens_per_second > 0
    again = extract_features(table, store, cfg, extractor=ex, show_progress=False)
    assert again.rows == 0 and again.skipped_chunks == 5


def test_refuses_to_append_with_a_different_config(tiny_model_dir, tmp_path):
    uri = str(tmp_path / "s.zarr")
    cfg, ex, table, store = _setup(tiny_model_dir, uri)
    extract_features(table, store, cfg, extractor=ex, show_progress=False, shard=(0, 2))
    for change in ({"pooling": "last"}, {"max_tokens": 41}, {"layers": (1,)}, {"share_prefix": False}):
        other_cfg = cfg.replace(**change)
        other = FeatureExtractor(ex.loaded, other_cfg)
        with pytest.raises(ProvenanceMismatchError, match={"share_prefix": "truncation"}.get(next(iter(change)), next(iter(change)))):
            FeatureStore.open_or_create(uri, n_rows=20, dim=32, chunk_rows=4, provenance=other.provenance("digest-1"))
    with pytest.raises(ProvenanceMismatchError, match="dataset_digest"):
        FeatureStore.open_or_create(uri, n_rows=20, dim=32, chunk_rows=4, provenance=ex.provenance("digest-2"))
    # a batch-size change is not a different config: the same store is reused
    same = FeatureExtractor(ex.loaded, cfg.replace(batch_size=7))
    FeatureStore.open_or_create(uri, n_rows=20, dim=32, chunk_rows=4, provenance=same.provenance("digest-1"))


def test_sharded_extraction_equals_unsharded(tiny_model_dir, tmp_path):
    cfg, ex, table, full = _setup(tiny_model_dir, str(tmp_path / "full.zarr"), n=22)
    extract_features(table, full, cfg, extractor=ex, show_progress=False)
    sharded = FeatureStore.open_or_create(str(tmp_path / "sh.zarr"), n_rows=22, dim=32, chunk_rows=4, provenance=ex.provenance("digest-1"))
    seen = []
    for i in (2, 0, 1):
        s = extract_features(table, sharded, cfg, extractor=ex, shard=(i, 3), show_progress=False)
        seen.append(s.rows)
    assert sum(seen) == 22 and all(r > 0 for r in seen)
    np.testing.assert_allclose(sharded.read_all()[0], full.read_all()[0], atol=1e-6)
    np.testing.assert_allclose(sharded.read_all()[1], full.read_all()[1], atol=1e-6)
    assert sharded.pair_ids().tolist() == full.pair_ids().tolist()


def test_attention_vector_is_saved_with_the_store(tiny_model_dir, tmp_path):
    cfg, ex, table, store = _setup(tiny_model_dir, str(tmp_path / "a.zarr"), n=6, pooling="attention", attention_seed=7)
    extract_features(table, store, cfg, extractor=ex, show_progress=False)
    saved = store.read_extra("attention_vector")
    np.testing.assert_array_equal(saved, attention_vector(32, 7))
    assert store.provenance["attention_seed"] == 7 and len(store.provenance["attention_vector_sha256"]) == 64
    assert not np.allclose(attention_vector(32, 7), attention_vector(32, 8))


WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from tiny_lm import make_pairs
    from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
    from storage import FeatureStore
    cfg = ExtractionConfig.build(model={model!r}, chunk_rows=2, batch_size=3, max_tokens=40)
    ex = FeatureExtractor(load_model(cfg), cfg)
    table = make_pairs(24)
    store = FeatureStore.open_or_create({uri!r}, n_rows=24, dim=32, chunk_rows=2, provenance=ex.provenance("digest-1"))
    def progress(ev):
        if ev.committed:  # events also come per model batch (committed=False)
            print("committed", ev.chunk_index, flush=True)
            time.sleep(0.4)
    extract_features(table, store, cfg, extractor=ex, progress=progress, show_progress=False)
    print("finished", flush=True)
    """
)


def test_resume_after_kill_9_equals_uninterrupted_run(tiny_model_dir, tmp_path):
    uri = str(tmp_path / "killed.zarr")
    code = WORKER.format(tests=str(Path(__file__).parent), model=str(tiny_model_dir), uri=uri)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    try:
        committed = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("committed"):
                committed += 1
            if committed == 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the worker must have been killed mid-extraction"
    store = FeatureStore.open(uri)
    done = store.completed_chunks()
    assert 3 <= len(done) < store.n_chunks
    cfg = ExtractionConfig.build(model=str(tiny_model_dir), chunk_rows=2, batch_size=3, max_tokens=40)
    ex = FeatureExtractor(load_model(cfg), cfg)
    table = make_pairs(24)
    store = FeatureStore.open_or_create(uri, n_rows=24, dim=32, chunk_rows=2, provenance=ex.provenance("digest-1"))
    resumed = extract_features(table, store, cfg, extractor=ex, show_progress=False)
    assert resumed.skipped_chunks == len(done) and resumed.rows == 24 - 2 * len(done)
    ref = FeatureStore.create(str(tmp_path / "ref.zarr"), n_rows=24, dim=32, chunk_rows=2, provenance=ex.provenance("digest-1"))
    extract_features(table, ref, cfg, extractor=ex, show_progress=False)
    store.verify()
    assert store.pair_ids().tolist() == ref.pair_ids().tolist()
    for a, b in zip(store.read_all(), ref.read_all(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_cli_extract_resumes_and_refuses_mismatch(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from coala_cli.features import app

    pairs = tmp_path / "pairs.parquet"
    write_pairs(make_pairs(10), pairs)
    args = ["extract", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--max-tokens", "32", "--batch-size", "4", "--quiet"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--store-root", str(tmp_path / "stores")])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["complete"] and out["rows"] == 10 and Path(out["store"]).name.startswith("feat-")
    again = runner.invoke(app, [*args, "--store-root", str(tmp_path / "stores"), "--batch-size", "2"])
    assert again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["rows"] == 0
    other = runner.invoke(app, [*args, "--output", out["store"], "--pooling", "last"])
    assert other.exit_code == 1 and "pooling" in other.output
    bad = runner.invoke(app, [*args, "--output", str(tmp_path / "x.zarr"), "--shard", "3/2"])
    assert bad.exit_code == 1 and "shard" in bad.output
