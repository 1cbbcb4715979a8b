"""Cached references are relative to the workdir: a moved workdir keeps working, a copied one reads its own files.

Before: Prefect's cached results held absolute paths, so a moved workdir broke the cache and a copied one
silently read the original's stores.
"""

from __future__ import annotations

import pytest
from prefect.serializers import JSONSerializer

from tasks.refs import WORKDIR_ENV, DatasetRef, FeaturesRef, HeadRef, StoreRef


def refs(wd):
    store = StoreRef(uri=str(wd / "features" / "abc" / "train.zarr"), split="train", n_rows=3, dim=4, digest="d" * 64,
                     files={"manifest": str(wd / "features" / "abc" / "train.manifest.json")})
    head = HeadRef(uri=f"file://{wd / 'heads' / 'h1'}", digest="e" * 64, phase="phase2", dim=4, width=8,
                   files={"head": str(wd / "heads" / "h1")})
    data = DatasetRef(uri="/elsewhere/input.parquet", digest="f" * 64, n_rows=3)  # outside the workdir: kept absolute
    return FeaturesRef(stores={"train": store}), head, data


def test_json_form_is_workdir_relative_and_reads_back_in_the_new_workdir(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "wd", tmp_path / "b" / "wd-copy"
    monkeypatch.setenv(WORKDIR_ENV, str(a))
    ser = JSONSerializer()
    blobs = [ser.dumps(r) for r in refs(a)]
    assert all(str(a) not in blob.decode() for blob in blobs)
    assert b"@workdir/features/abc/train.zarr" in blobs[0]

    monkeypatch.setenv(WORKDIR_ENV, str(b))  # the workdir moved or copied: the cached results resolve here
    features, head, data = (ser.loads(blob) for blob in blobs)
    assert features["train"].uri == str(b / "features" / "abc" / "train.zarr")
    assert features["train"].files["manifest"] == str(b / "features" / "abc" / "train.manifest.json")
    assert head.uri == str(b / "heads" / "h1") and head.files["head"] == str(b / "heads" / "h1")
    assert data.uri == "/elsewhere/input.parquet"
    assert features.cache_token() == refs(a)[0].cache_token()  # the identity is the content digest, not the place

    monkeypatch.delenv(WORKDIR_ENV)
    with pytest.raises(ValueError, match="COALA_WORKDIR is not set"):
        ser.loads(blobs[0])


def test_python_form_stays_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKDIR_ENV, str(tmp_path))
    features, _, _ = refs(tmp_path)
    assert features["train"].model_dump()["uri"] == str(tmp_path / "features" / "abc" / "train.zarr")
    assert features["train"].path == tmp_path / "features" / "abc" / "train.zarr"
