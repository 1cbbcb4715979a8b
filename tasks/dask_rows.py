"""Phase I's rows on a Dask cluster (``run.task_runner: dask``): the adapter between the pipeline's settings and
:class:`coala_core.phase1.dask_source.DaskStoreRows`.

``dask_cluster(run)`` is the task input that says where (``{"address": "tcp://host:8786"}`` for an existing
scheduler, or ``{"workers": n}`` for a LocalCluster of n processes on 127.0.0.1 started for the task);
:func:`dask_train_rows` opens a client there and gives the train store's rows with every Phase I pass (moments,
pattern signs, Gram matrices, each ADMM iteration) on the workers, each task on its own whole chunks of the
store (a local path or an fsspec URL every worker can open).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any

from storage.feature_store import FeatureStore


def dask_cluster(run: Any) -> dict[str, Any] | None:
    """The cluster Phase I uses under ``run`` (a ``flows.config.RunSection``), or None (in this process)."""
    if getattr(run, "task_runner", "thread") != "dask":
        return None
    if run.dask_address:
        return {"address": str(run.dask_address)}
    return {"workers": int(run.dask_workers)}


@contextlib.contextmanager
def dask_client(cluster: dict[str, Any]) -> Iterator[Any]:
    """A ``distributed.Client`` on ``cluster["address"]``, or on a LocalCluster of ``cluster["workers"]`` worker
    processes (one thread each) that is closed on exit."""
    import distributed

    if cluster.get("address"):
        with distributed.Client(cluster["address"]) as client:
            yield client
        return
    with distributed.LocalCluster(n_workers=int(cluster.get("workers", 2)), threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local, distributed.Client(local) as client:
        yield client


def chunks_per_task(n_chunks: int, n_workers: int) -> int:
    """Whole store chunks per map task: one task per worker (each ADMM iteration costs one task per range,
    so fewer, larger ranges keep the scheduler's share of an iteration small)."""
    return max(1, math.ceil(int(n_chunks) / max(int(n_workers), 1)))


@contextlib.contextmanager
def dask_train_rows(uri: str, cluster: dict[str, Any] | None) -> Iterator[Any]:
    """The Phase I rows of the store at ``uri`` on ``cluster`` (None: yields None, the rows are read here)."""
    if not cluster:
        yield None
        return
    from coala_core.phase1.dask_source import DaskStoreRows

    with dask_client(cluster) as client:
        store = FeatureStore.open(uri, mode="r")
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        yield DaskStoreRows(str(uri), functools.partial(FeatureStore.open, mode="r"), client,
                            chunks_per_task=chunks_per_task(store.n_chunks, workers))
