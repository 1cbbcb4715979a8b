"""`coala features verify STORE` finds damaged chunks (exit 1, chunk and rows named) and `--repair` restores them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from storage.feature_store import FeatureStore
from storage.pairs import read_pairs


def extract(cli, tmp_path, pairs_file, tiny_lm, out):
    cfg = tmp_path / "features.yaml"
    cfg.write_text("features:\n  chunk_rows: 8\n  max_tokens: 32\n  batch_size: 8\n")
    res = cli("features", "extract", "--pairs", pairs_file, "--model", tiny_lm, "--output", out, "--config", cfg, "--quiet")
    assert res.exit_code == 0, res.output
    return FeatureStore.open(out)


def test_verify_reports_bad_chunks_and_repair_reextracts_them(cli, tmp_path, pairs_file, tiny_lm):
    out = tmp_path / "fs.zarr"
    before = extract(cli, tmp_path, pairs_file, tiny_lm, out).read_all()
    res = cli("features", "verify", out)
    assert res.exit_code == 0 and json.loads(res.stdout.strip().splitlines()[-1])["ok"] is True

    (out / "chosen" / "c" / "1" / "0").unlink()  # a deleted chunk file
    f = out / "rejected" / "c" / "2" / "0"
    f.write_bytes(f.read_bytes()[:10])  # a truncated one
    res = cli("features", "verify", out)
    assert res.exit_code == 1
    assert "chunk 1 (rows 8-15)" in res.stderr and "chunk 2 (rows 16-23)" in res.stderr
    assert "Traceback" not in res.output

    res = cli("features", "verify", out, "--repair")
    assert res.exit_code == 1 and "--repair needs --pairs" in res.stderr

    res = cli("features", "verify", out, "--repair", "--pairs", pairs_file, "--model", tiny_lm, "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["repaired_chunks"] == [1, 2]
    after = FeatureStore.open(out)
    after.verify()
    for a, b in zip(before, after.read_all(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_repair_with_other_pairs_is_refused(cli, tmp_path, pairs_file, tiny_lm):
    out = tmp_path / "fs.zarr"
    extract(cli, tmp_path, pairs_file, tiny_lm, out)
    (out / "chosen" / "c" / "0" / "0").unlink()
    other = tmp_path / "other.parquet"
    pq.write_table(read_pairs(pairs_file).slice(0, 20).replace_schema_metadata(None), other)  # plain pyarrow
    res = cli("features", "verify", out, "--repair", "--pairs", other, "--model", tiny_lm, "--quiet")
    assert res.exit_code == 1 and "differs from the dataset digest" in res.stderr


def test_pairs_file_written_by_polars_gets_its_digest_from_its_rows(cli, tmp_path, pairs_file, tiny_lm):
    import polars as pl

    subset = tmp_path / "subset.parquet"
    df = pl.read_parquet(pairs_file).filter(pl.col("split") != "test")
    df.write_parquet(subset)
    out = tmp_path / "sub.zarr"
    store = extract(cli, tmp_path, subset, tiny_lm, out)
    assert store.n_rows == df.height
    from storage.pairs import pairs_digest

    assert store.provenance["dataset_digest"] == pairs_digest(df)
