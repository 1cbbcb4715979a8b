"""Feature extraction scaled out: ``coala features extract --shard I/N`` as a task mapped over shards.

On the Dask task runner (``run.task_runner: dask``) the shard tasks run on the cluster's workers, each loading
the model once and filling its contiguous chunk range of every split's store; the stores are created once
between them (under the store lock) and every chunk commits whole, so the result is the one store the
single-process extraction writes. The stage task that follows (tasks/features.py) then finds every chunk
committed, verifies the stores and records them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc
from prefect import task

from coala_core.errors import MissingInputError
from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
from storage.feature_store import FeatureStore
from storage.pairs import read_pairs
from tasks.features import SPLITS
from tasks.refs import DatasetRef
from tasks.stage import retry_transient


@task(name="extract-shard", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def extract_shard_task(shard: int, n_shards: int, dataset: DatasetRef, config: ExtractionConfig,
                       output: Path) -> dict[str, float]:
    """Shard ``shard`` of ``n_shards`` of every split's store under ``output``; returns the shard's counts.

    A shard with nothing pending (a rerun) does not load the model.
    """
    pairs = read_pairs(dataset.path)
    extractor: FeatureExtractor | None = None
    totals = {"shard": float(shard), "pid": float(os.getpid()), "rows": 0.0, "tokens": 0.0, "computed_tokens": 0.0,
              "head_tokens": 0.0, "flops": 0.0, "seconds": 0.0}
    for split in SPLITS:
        rows = pairs.filter(pc.equal(pairs.column("split"), split))
        if rows.num_rows == 0:
            continue
        uri = Path(output) / f"{split}.zarr"
        if _nothing_pending(uri, (shard, n_shards)):
            continue
        extractor = extractor or FeatureExtractor(load_model(config), config)
        store = FeatureStore.open_or_create(uri, n_rows=rows.num_rows, dim=extractor.dim,
                                            dtype=config.store_dtype, chunk_rows=config.chunk_rows,
                                            provenance={**extractor.provenance(dataset.digest), "split": split})
        stats = extract_features(rows, store, config, extractor=extractor, shard=(shard, n_shards), show_progress=False)
        totals["rows"] += stats.rows
        totals["tokens"] += stats.tokens
        totals["computed_tokens"] += stats.computed_tokens
        totals["head_tokens"] += stats.head_tokens
        totals["flops"] += stats.flops
        totals["seconds"] += stats.seconds
    return totals


def _nothing_pending(uri: Path, shard: tuple[int, int]) -> bool:
    try:
        return not FeatureStore.open(uri, mode="r").pending_chunks(shard=shard)
    except MissingInputError:
        return False
