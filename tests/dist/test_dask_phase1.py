"""The dask backend of Phase I (coala_core/phase1/dask_source.py) on a LocalCluster of two worker processes, over
a Zarr feature store: the same standardisation, Gram matrices, ADMM iterations and fitted head as the in-process
passes over the same store, to 1e-6 (more cases, on a threads cluster, in test_dask_admm.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from coala_core.phase1 import Phase1Config, fit_phase1  # noqa: E402
from coala_core.phase1.dask_source import DaskStoreRows  # noqa: E402
from coala_core.phase1.data import PreparedRows  # noqa: E402
from coala_core.phase1.source import PairRows  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402

N_PAIRS, DIM, CHUNK = 300, 12, 32


@pytest.fixture(scope="module")
def client() -> distributed.Client:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(0)
    w = rng.normal(size=DIM)
    chosen = rng.normal(size=(N_PAIRS, DIM)).astype(np.float32) + 0.3 * w.astype(np.float32)
    rejected = rng.normal(size=(N_PAIRS, DIM)).astype(np.float32) * 1.5 + 2.0
    uri = tmp_path_factory.mktemp("dask-phase1") / "train.zarr"
    store = FeatureStore.create(uri, n_rows=N_PAIRS, dim=DIM, dtype="float32", chunk_rows=CHUNK, provenance={"test": "dask"})
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], [f"p{i}" for i in range(a, b)])
    return str(uri)


def _sources(uri: str, client) -> tuple[PairRows, DaskStoreRows]:  # noqa: ANN001
    opener = functools.partial(FeatureStore.open, mode="r")
    return PairRows(FeatureStore.open(uri, mode="r")), DaskStoreRows(uri, opener, client, chunks_per_task=2)


def test_map_tasks_cover_the_store_in_whole_chunks(store_uri: str, client) -> None:  # noqa: ANN001
    _, dask_rows = _sources(store_uri, client)
    assert dask_rows.ranges[0] == (0, 2 * CHUNK) and dask_rows.ranges[-1][1] == N_PAIRS
    assert sum(b - a for a, b in dask_rows.ranges) == N_PAIRS and len(dask_rows.ranges) == 5
    assert dask_rows.n_rows == 2 * N_PAIRS and dask_rows.dim == DIM and dask_rows.paired


@pytest.mark.parametrize("bias", [False, True])
def test_moments_and_grams_equal_the_in_process_pass(store_uri: str, client, bias: bool) -> None:  # noqa: ANN001
    local, remote = _sources(store_uri, client)
    config = Phase1Config.build({"n_patterns": 5, "bias": bias, "memory_budget_mb": 0})  # streamed in-process
    ref = PreparedRows(local, config)
    got = PreparedRows(remote, config)
    np.testing.assert_allclose(got.standardizer.mean, ref.standardizer.mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.standardizer.scale, ref.standardizer.scale, rtol=1e-6)
    np.testing.assert_array_equal(got.gates, ref.gates)
    for a, b in zip(got.grams(with_H=True), ref.grams(with_H=True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    XtX, H, Fty = got.grams(with_H=False)
    assert H is None and XtX.shape == (DIM + bias, DIM + bias) and Fty.shape == (got.P, DIM + bias)


def test_fit_equals_the_in_process_fit(store_uri: str, client) -> None:  # noqa: ANN001
    """In float64 compute the two fits agree to 1e-6 (measured ~1e-13 on this problem)."""
    local, remote = _sources(store_uri, client)
    config = Phase1Config.build({"compute_dtype": "float64", "beta": 1e-2, "max_iter": 300})
    ref = fit_phase1(local, config=config)
    got = fit_phase1(remote, config=config)
    assert got.converged == ref.converged and got.iterations == ref.iterations
    for name in ("v", "w", "theta1", "theta2", "mean", "scale"):
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(ref, name))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * max(np.abs(b).max(), 1e-12), err_msg=name)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)


def test_fit_at_default_settings(store_uri: str, client) -> None:  # noqa: ANN001
    """At the defaults (float32 compute) the Gram sums differ from the in-process ones by float32 rounding
    (other block boundaries, ~3e-7 relative); the fitted objectives agree to 1e-6 relative."""
    local, remote = _sources(store_uri, client)
    ref = fit_phase1(local, config=Phase1Config(max_iter=300))
    got = fit_phase1(remote, config=Phase1Config(max_iter=300))
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)
    np.testing.assert_allclose(got.v, ref.v, atol=1e-4 * np.abs(ref.v).max())
    np.testing.assert_allclose(got.theta2, ref.theta2, atol=1e-4 * np.abs(ref.theta2).max())


def test_admm_iterations_on_worker_processes_equal_the_in_process_ones(store_uri: str, client) -> None:  # noqa: ANN001
    """Default settings (float32), one task per store chunk (the in-process streamed pass's blocks): the ADMM
    state lives in the two worker processes, and 100 iterations agree with the in-process ones to 1e-6."""
    from coala_core.phase1.dask_source import RemoteBlocks
    from coala_core.phase1.fit import prepare

    config = Phase1Config(max_iter=100, memory_budget_mb=0)
    local = PairRows(FeatureStore.open(store_uri, mode="r"))
    remote = DaskStoreRows(store_uri, functools.partial(FeatureStore.open, mode="r"), client)
    results = []
    for source in (local, remote):
        solver = prepare(source, None, config)
        with pytest.warns(RuntimeWarning, match="did not reach"):
            results.append(solver.solve())
    (ref, _), (got, state) = results
    assert isinstance(state.s, RemoteBlocks) and len(state.s.futures) == len(remote.ranges) == 10
    holders = client.who_has(state.s.futures)
    assert len({w for ws in holders.values() for w in ws}) == 2  # the state is spread over both workers
    for key in ("objective", "r_primal", "r_dual", "cone_violation"):
        np.testing.assert_allclose(got.history[key], ref.history[key], rtol=1e-6, err_msg=key)
    for name in ("v", "w", "theta2"):
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(ref, name))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max(), err_msg=name)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)


def test_a_worker_error_names_the_chunk(tmp_path: Path, client) -> None:  # noqa: ANN001
    """A task reading an uncommitted chunk fails with the store's own error, raised in the driver."""
    from coala_core.errors import StoreError

    uri = tmp_path / "partial.zarr"
    store = FeatureStore.create(uri, n_rows=8, dim=3, dtype="float32", chunk_rows=4, provenance={})
    good = np.ones((4, 3), dtype=np.float32)
    store.write_chunk(0, good, good * 2, ["a", "b", "c", "d"])
    rows = DaskStoreRows(str(uri), functools.partial(FeatureStore.open, mode="r"), client)
    with pytest.raises(StoreError, match="chunk 1 .*not committed"):
        rows.moments()
