"""``run.task_runner: dask``: feature shards as mapped Prefect tasks on a Dask LocalCluster of two worker
processes give stores equal, element by element, to the single-process extraction."""

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
