"""The Phase I, Phase II and evaluate stage bodies called with ``.fn`` (no Prefect engine): one engine call
each, one MLflow run each, and the head.json that ``coala train`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PROV, make_pairs, write_store

from coala_core.engine.fit import fit_head
from coala_core.engine.sources import SubsetPairs
from coala_core.engine.spec import HeadSpec
from storage.heads import head_digest, load_head, save_head
from storage.pairs import from_records, write_pairs
from tasks.evaluation import evaluate_task
from tasks.refs import DatasetRef, FeaturesRef, StoreRef
from tasks.stage import TrackingContext
from tasks.tracking import client_for, ensure_experiment
from tasks.training import phase1_task, phase2_task

SPEC = HeadSpec.build({"phase1": {"n_patterns": 3, "path_n_betas": 2, "max_iter": 40, "tol": 1e-3},
                       "phase2": {"l2_grid": [0.1], "gamma_grid": [0.0], "beta_grid": [1.0]}})


@pytest.fixture()
def own_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri (called by TrackingContext.client) exports MLFLOW_TRACKING_URI for the whole
    process: start without it, and monkeypatch removes this test's value at teardown."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_stage_bodies_write_the_cli_head_and_one_run_each(tmp_path: Path, own_tracking_uri) -> None:
    chosen, rejected = make_pairs(60, 4)
    parts = {"train": np.arange(40), "validation": np.arange(40, 50), "test": np.arange(50, 60)}
    stores, records = {}, []
    for split, rows in parts.items():
        ids = [f"p{i:05d}" for i in rows]
        store = write_store(tmp_path / f"{split}.zarr", chosen[rows], rejected[rows], chunk_rows=8, ids=ids)
        stores[split] = StoreRef(uri=str(store.uri), digest=f"{split}-digest-0000", split=split, n_rows=len(rows),
                                 dim=4, provenance=PROV)
        records += [{"pair_id": i, "prompt": "q", "chosen": "a", "rejected": "b", "source": "s", "group_id": i,
                     "split": split} for i in ids]
    info = write_pairs(from_records(records), tmp_path / "pairs.parquet")
    dataset = DatasetRef(uri=str(tmp_path / "pairs.parquet"), digest=info.digest, n_rows=60)
    features = FeaturesRef(stores=stores)
    client = client_for(tmp_path)
    exp = ensure_experiment(client, "engine-units", tmp_path)
    parent = client.create_run(exp, run_name="parent").info.run_id
    tracking = TrackingContext(uri=client._tracking_client.tracking_uri, experiment_id=exp, parent_run_id=parent,
                               system_metrics=False)
    p1 = phase1_task.fn(features, SPEC.phase1, SPEC.train, workdir=tmp_path, output=tmp_path / "h1", tracking=tracking)
    p2 = phase2_task.fn(p1, features, SPEC.phase2, workdir=tmp_path, output=tmp_path / "h2", tracking=tracking)
    report = evaluate_task.fn(p2, features, dataset, ["test"], 20, 0, workdir=tmp_path, output=tmp_path / "rep",
                              tracking=tracking)
    assert p2.digest == head_digest(tmp_path / "h2") and p1.metrics["flops"] > 0 and p2.metrics["flops"] > 0
    # the CLI's engine call on the same stores writes the same head and record (timings aside)
    cli = fit_head(SubsetPairs(_open(stores["train"]), np.arange(40)), _open(stores["validation"]), SPEC)
    save_head(tmp_path / "cli", cli.head, provenance=PROV, **cli.record.head_json())
    a, b = (json.loads((tmp_path / d / "head.json").read_text()) for d in ("cli", "h2"))
    assert a["training"]["phase2_summary"] == b["training"]["phase2_summary"] and a["config"] == b["config"]
    np.testing.assert_allclose(load_head(tmp_path / "cli").theta2, load_head(tmp_path / "h2").theta2, atol=1e-9)
    assert 0.0 <= report.metrics["test/accuracy"] <= 1.0 and report.metrics["flops"] > 0
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["coala.stage"] for r in runs) == ["evaluate", "phase1", "phase2"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def _open(ref: StoreRef):
    from storage.feature_store import FeatureStore

    return FeatureStore.open(ref.uri, mode="r")
