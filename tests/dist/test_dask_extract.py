"""``run.task_runner: dask``: feature shards as mapped Prefect tasks on a Dask LocalCluster of two worker
processes give stores equal, element by element, to the single-process extraction; the pipeline's Phase I
then runs its passes (each ADMM iteration) on a LocalCluster too and records it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prefect_dask")
pytest.importorskip("distributed")

from coala_core.errors import ConfigError  # noqa: E402
from coala_core.features import ExtractionConfig, extract_features  # noqa: E402
from coala_core.testing import save_tiny_lm  # noqa: E402
from flows.config import PipelineConfig  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402
from storage.pairs import from_records, read_pairs, write_pairs  # noqa: E402
from tasks.refs import DatasetRef  # noqa: E402

SPLIT_SIZES = {"train": 22, "validation": 6, "test": 9}


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetRef]:
    root = tmp_path_factory.mktemp("dask-extract")
    model = save_tiny_lm(root / "tiny", chat_template=False)
    words = ["seven", "eight", "groups", "spoons", "count", "answer", "step", "stew"]
    rows, k = [], 0
    for split, n in SPLIT_SIZES.items():
        for i in range(n):
            k += 1
            w = words[k % len(words)]
            rows.append({"pair_id": f"p{k}", "prompt": [{"role": "user", "content": f"What is {w} times {i}?"}],
                         "chosen": f"Let us count the {w} together, {i} at a time.", "rejected": f"It is {k}.",
                         "source": "test", "group_id": f"g{k}", "split": split, "meta": "{}"})
    info = write_pairs(from_records(rows), root / "pairs.parquet")
    ref = DatasetRef(uri=str(info.path), digest=info.digest, n_rows=info.n_rows, splits=dict(SPLIT_SIZES))
    return model, ref


def _config(model: Path, workdir: Path, **run: object) -> PipelineConfig:
    return PipelineConfig.build({
        "run": {"workdir": str(workdir), "task_runner": "dask", "dask_workers": 2, **run},
        "dataset": {"input": "unused.jsonl"},
        "features": {"model": str(model), "max_tokens": 32, "batch_size": 4, "chunk_rows": 4, "device": "cpu",
                     "dtype": "float32"},
    })


def test_task_runner_is_validated() -> None:
    with pytest.raises(ConfigError, match="task_runner"):
        PipelineConfig.build({"run": {"task_runner": "ray"}, "dataset": {"input": "x"}})
    assert PipelineConfig.build({"dataset": {"input": "x"}}).run.task_runner == "thread"


def test_sharded_on_a_local_cluster_equals_one_process(harness, inputs, tmp_path: Path) -> None:
    from flows.scale import extract_on_dask
    from tasks.features import extract_features_task
    from tasks.stage import stage_output

    model, dataset = inputs
    config = _config(model, tmp_path / "work")
    counts = extract_on_dask(dataset, config)
    assert sorted(c["shard"] for c in counts) == [0.0, 1.0]
    assert all(c["rows"] > 0 for c in counts) and sum(c["rows"] for c in counts) == sum(SPLIT_SIZES.values())
    assert len({c["pid"] for c in counts}) == 2, counts  # two worker processes did the work
    output = stage_output(config.workdir, "features", extract_features_task, {"dataset": dataset, "config": config.features})

    reference = _one_process(dataset, config.features, tmp_path / "single")
    pairs = read_pairs(dataset.path)
    for split, n in SPLIT_SIZES.items():
        dist = FeatureStore.open(output / f"{split}.zarr", mode="r")
        one = reference[split]
        assert dist.is_complete and dist.n_rows == n and dist.n_chunks > 1
        assert dist.provenance == one.provenance
        c1, r1 = dist.read_all()
        c2, r2 = one.read_all()
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(r1, r2)
        assert list(dist.pair_ids()) == list(one.pair_ids())
        assert list(dist.pair_ids()) == [p for p, s in zip(pairs.column("pair_id").to_pylist(),
                                                           pairs.column("split").to_pylist(), strict=True) if s == split]

    # a rerun finds every chunk committed and loads no model
    again = extract_on_dask(dataset, config)
    assert sum(c["rows"] for c in again) == 0


def _one_process(dataset: DatasetRef, config: ExtractionConfig, root: Path) -> dict[str, FeatureStore]:
    """The single-process extraction, on one intra-op thread like a Dask worker process (which runs with
    OMP_NUM_THREADS=1): a float32 matmul split over another number of threads sums in another order and
    differs in the last bit, so bitwise equality is only defined at the same thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _extract_all(dataset, config, root)
    finally:
        torch.set_num_threads(threads)


def _extract_all(dataset: DatasetRef, config: ExtractionConfig, root: Path) -> dict[str, FeatureStore]:
    import pyarrow.compute as pc

    from coala_core.features import FeatureExtractor, load_model

    pairs = read_pairs(dataset.path)
    extractor = FeatureExtractor(load_model(config), config)
    out = {}
    for split in SPLIT_SIZES:
        rows = pairs.filter(pc.equal(pairs.column("split"), split))
        store = FeatureStore.create(root / f"{split}.zarr", n_rows=rows.num_rows, dim=extractor.loaded.hidden_size,
                                    dtype=config.store_dtype, chunk_rows=config.chunk_rows,
                                    provenance={**extractor.provenance(dataset.digest), "split": split})
        extract_features(rows, store, config, extractor=extractor, show_progress=False)
        out[split] = store
    return out


def test_pipeline_with_the_dask_task_runner(harness, inputs, tmp_path: Path) -> None:
    """The tiny pipeline with ``run.task_runner=dask``: the shards run as mapped tasks of the ``extract-shards``
    subflow, the feature stage then finds every chunk committed, and the run completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import coala_pipeline

    model, _ = inputs
    repo = Path(__file__).resolve().parents[2]
    overrides = {"features.model": str(model), "run.workdir": str(tmp_path), "run.system_metrics": False,
                 "run.task_runner": "dask", "run.dask_workers": 2}
    state = coala_pipeline(str(repo / "configs" / "tiny.yaml"), overrides, return_state=True)
    assert state.is_completed(), state
    report = state.result()
    assert 0.0 <= report.metrics["test/accuracy"] <= 1.0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        shards = [r for r in runs if client.read_flow(r.flow_id).name == "extract-shards"
                  and r.parent_task_run_id is not None]  # the pipeline's subflow (the test above calls it directly)
        assert len(shards) == 1 and shards[0].state.is_completed()
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[shards[0].id])))
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == ["extract-shard", "extract-shard"]
    assert {t.state.name for t in tasks} == {"Completed"}
    stores = list((tmp_path / "features").glob("*/*.zarr"))
    assert {p.name for p in stores} == {"train.zarr", "validation.zarr", "test.zarr"}
    assert all(FeatureStore.open(p, mode="r").is_complete for p in stores)

    # Phase I ran on a LocalCluster of two workers (every ADMM iteration there), and its run says so
    import json

    from mlflow import MlflowClient

    from tasks.tracking import tracking_uri

    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("coala-tiny")
    (p1,) = client.search_runs([exp.experiment_id], "tags.`coala.stage` = 'phase1'")
    assert p1.data.tags["coala.phase1.rows"] == "dask" and p1.data.tags["coala.phase1.dask_workers"] == "2"
    assert len(client.get_metric_history(p1.info.run_id, "admm/objective")) > 1
    (head_json,) = (tmp_path / "heads-phase1").glob("*/head.json")
    summary = json.loads(head_json.read_text())["training"]["phase1_summary"]
    assert summary["rows"] == "dask" and summary["dask_workers"] == 2 and summary["dask_tasks"] >= 1
