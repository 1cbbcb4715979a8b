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


MAKE_STORE = """
import json, sys
from pathlib import Path
from mlflow.entities import RunStatus
from tasks.tracking import client_for, ensure_experiment

wd = Path(sys.argv[1])
client = client_for(wd)
exp = ensure_experiment(client, "coala-tiny", wd)
run = client.create_run(exp, run_name="head")
(wd / "head.json").write_text("original")
client.log_artifact(run.info.run_id, str(wd / "head.json"), "head")
client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
client.create_registered_model("coala-tiny-head")
client.create_model_version("coala-tiny-head", f"{run.info.artifact_uri}/head", run.info.run_id)
print(json.dumps([exp, run.info.run_id]))
"""


def _mlflow_workdir(wd):
    """A workdir's embedded MLflow store as a pipeline leaves it (made by another process, as a pipeline would):
    experiment, a run with an artifact, a registered version, all with absolute artifact locations."""
    import json
    import subprocess
    import sys

    from harness import ENV, REPO

    out = subprocess.run([sys.executable, "-c", MAKE_STORE, str(wd)], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_moved_or_copied_workdir_logs_and_reads_mlflow_artifacts_in_itself(tmp_path, monkeypatch, how):
    """Before: MLflow kept `<original>/mlartifacts` in its database, so a pipeline on a copied workdir logged its
    artifacts into the original's folder (seen: 150 new files there) and loaded the registered head from it."""
    import shutil

    from flows.runtime import pipeline_session
    from tasks.tracking import client_for

    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(k, raising=False)
    a, b = tmp_path / "a" / "wd", tmp_path / "b" / "wd"
    a.mkdir(parents=True)
    exp, run_id = _mlflow_workdir(a)
    b.parent.mkdir()
    (shutil.copytree if how == "copied" else shutil.move)(a, b)
    before = sorted(p.relative_to(a) for p in a.rglob("*")) if how == "copied" else None

    with pipeline_session(b):  # what `coala pipeline run` holds on its workdir
        client = client_for(b)
        assert client.get_experiment(exp).artifact_location == (b / "mlartifacts").as_uri()
        assert client.get_run(run_id).info.artifact_uri.startswith((b / "mlartifacts").as_uri() + "/")
        version = client.get_model_version("coala-tiny-head", "1")
        assert str(b / "mlartifacts") in version.source
        (b / "y.txt").write_text("new")
        new = client.create_run(exp, run_name="next")
        client.log_artifact(new.info.run_id, str(b / "y.txt"), "head")
        client.log_artifact(run_id, str(b / "y.txt"), "late")
    assert (b / "mlartifacts" / new.info.run_id / "artifacts" / "head" / "y.txt").is_file()
    assert (b / "mlartifacts" / run_id / "artifacts" / "late" / "y.txt").is_file()
    if how == "copied":  # the original is untouched
        assert sorted(p.relative_to(a) for p in a.rglob("*")) == before
    else:  # the old place is not made again
        assert not a.exists()


def test_score_on_a_copied_workdir_loads_the_head_from_the_copy(tmp_path, monkeypatch):
    """`coala score/generate --model-uri models:/...` resolve through tasks.model_uri.resolve: on a copy that no
    pipeline has run in yet, the registered head is read from the copy, never from the original."""
    import shutil

    from tasks.model_uri import resolve
    from tasks.tracking import default_tracking_uri

    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(k, raising=False)
    a, b = tmp_path / "a" / "wd", tmp_path / "b" / "wd"
    a.mkdir(parents=True)
    _, run_id = _mlflow_workdir(a)
    shutil.copytree(a, b)
    (b / "mlartifacts" / run_id / "artifacts" / "head" / "head.json").write_text("copy")
    resolved = resolve("models:/coala-tiny-head/1", tracking_uri=default_tracking_uri(b))
    try:
        assert (resolved.head_dir / "head.json").read_text() == "copy"
    finally:
        resolved.cleanup()
    assert (a / "mlartifacts" / run_id / "artifacts" / "head" / "head.json").read_text() == "original"
