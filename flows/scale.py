"""Scale-out on Dask (prefect-dask): the task runner chosen by ``run.task_runner`` and the mapped extraction.

``run.task_runner: dask`` runs the feature shards on a Dask cluster: the scheduler at ``run.dask_address``
(e.g. dask-cuda workers on several GPU machines: ``dask scheduler`` on one, ``dask cuda worker tcp://...`` on
each), or a LocalCluster of ``run.dask_workers`` processes. The stores are the ones the single-process stage
writes (same folder, same chunks), so the stage task that follows only verifies and records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from flows.config import PipelineConfig, RunSection
from tasks.features import extract_features_task
from tasks.refs import DatasetRef
from tasks.shards import extract_shard_task
from tasks.stage import stage_output


def dask_task_runner(run: RunSection) -> Any:
    """A ``DaskTaskRunner`` on ``run.dask_address``, or on a LocalCluster of ``run.dask_workers`` processes
    (one thread each: a forward pass already uses the cores it is given)."""
    from prefect_dask import DaskTaskRunner

    if run.dask_address:
        return DaskTaskRunner(address=run.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": run.dask_workers, "threads_per_worker": 1, "processes": True,
                                         "dashboard_address": None, "host": "127.0.0.1"})


@flow(name="extract-shards", log_prints=True)
def extract_shards(dataset: DatasetRef, config: PipelineConfig, output: str, n_shards: int) -> list[dict[str, float]]:
    """Every split's store under ``output``, as ``n_shards`` mapped shard tasks on the flow's task runner."""
    futures = extract_shard_task.map(range(n_shards), unmapped(n_shards), unmapped(dataset), unmapped(config.features),
                                     unmapped(Path(output)))
    counts = [f.result() for f in futures]
    rows = sum(c["rows"] for c in counts)
    print(f"extracted {rows:.0f} pairs in {n_shards} shards: " + ", ".join(f"shard {c['shard']:.0f} {c['rows']:.0f} pairs "
                                                                       f"in {c['seconds']:.1f} s" for c in counts))
    return counts


def extract_on_dask(dataset: DatasetRef, config: PipelineConfig) -> list[dict[str, float]]:
    """Run :func:`extract_shards` on the Dask task runner into the folder the feature stage reads."""
    output = stage_output(config.workdir, "features", extract_features_task,
                          {"dataset": dataset, "config": config.features})
    runner = dask_task_runner(config.run)
    n_shards = config.run.dask_workers
    return extract_shards.with_options(task_runner=runner)(dataset, config, str(output), n_shards)
