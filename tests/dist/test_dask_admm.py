"""Phase I's ADMM iterations on Dask workers (coala_core/phase1/dask_source.py, dask_tasks.py): the per-row state
s, nu and the pattern signs stay on the workers, only partial sums come back, and the solve equals the
in-process one on the same store. A LocalCluster of two workers in threads keeps these tests quick; the
process cluster is exercised in test_dask_phase1.py."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from coala_core.errors import ConfigError  # noqa: E402
from coala_core.phase1 import Phase1Config, fit_phase1, fit_phase1_path  # noqa: E402
from coala_core.phase1.dask_source import DaskStoreRows, RemoteBlocks  # noqa: E402
from coala_core.phase1.fit import prepare  # noqa: E402
from coala_core.phase1.source import PairRows  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402

N_PAIRS, DIM, CHUNK = 300, 12, 32
OPENER = functools.partial(FeatureStore.open, mode="r")


@pytest.fixture(scope="module")
def client() -> distributed.Client:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def _write_store(uri: Path | str, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=DIM)
    chosen = rng.normal(size=(n, DIM)).astype(np.float32) + 0.3 * w.astype(np.float32)
    rejected = rng.normal(size=(n, DIM)).astype(np.float32) * 1.5 + 2.0
    store = FeatureStore.create(uri, n_rows=n, dim=DIM, dtype="float32", chunk_rows=CHUNK, provenance={"seed": seed})
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, chosen[a:b], rejected[a:b], [f"p{seed}-{i}" for i in range(a, b)])
    return str(uri)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("dask-admm")
    return _write_store(root / "train.zarr", N_PAIRS, 0), _write_store(root / "validation.zarr", 90, 1)


class CountingRows(DaskStoreRows):
    """Counts the reads of rows in the driver."""

    driver_reads = 0

    def iter_blocks(self):  # noqa: ANN201
        type(self).driver_reads += 1
        yield from super().iter_blocks()


def _local(uri: str) -> PairRows:
    return PairRows(FeatureStore.open(uri, mode="r"))


def _close(got: np.ndarray, ref: np.ndarray, name: str) -> None:
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * max(float(np.abs(ref).max()), 1e-12), err_msg=name)


def test_iterations_equal_the_in_process_pass_at_defaults(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """Default settings (float32 compute), one task per store chunk: the blocks the workers compute on are
    those of the in-process streamed pass, so 150 iterations agree, iteration by iteration, to 1e-6."""
    train, _ = stores
    config = Phase1Config(max_iter=150, memory_budget_mb=0)  # in process: streamed, one block per store chunk
    with pytest.warns(RuntimeWarning, match="did not reach"):
        ref = fit_phase1(_local(train), config=config)
    rows = DaskStoreRows(train, OPENER, client)
    assert len(rows.ranges) == -(-N_PAIRS // CHUNK)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        got = fit_phase1(rows, config=config)
    assert got.iterations == ref.iterations == 150
    for key in ("objective", "r_primal", "r_dual", "cone_violation", "train_accuracy"):
        _close(np.asarray(got.history[key]), np.asarray(ref.history[key]), key)
    for name in ("v", "w", "theta1", "theta2", "mean", "scale", "pattern_shares"):
        _close(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)), name)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)
    assert got.cone_violation == pytest.approx(ref.cone_violation, rel=1e-6, abs=1e-12)
    assert got.train_accuracy == ref.train_accuracy


def test_state_stays_on_the_workers_and_rows_are_not_read_per_iteration(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """s and nu are handles to worker futures; the driver's reads of rows (the exact critical beta, once at
    set-up) do not grow with the number of iterations."""
    train, _ = stores
    reads = []
    for iters in (5, 60):
        CountingRows.driver_reads = 0
        solver = prepare(CountingRows(train, OPENER, client, chunks_per_task=3), None,
                         Phase1Config(max_iter=iters, compute_dtype="float64"))
        with pytest.warns(RuntimeWarning, match="did not reach"):
            res, state = solver.solve()
        assert res.iterations == iters
        assert isinstance(state.s, RemoteBlocks) and isinstance(state.nu, RemoteBlocks)
        assert state.s.shape == (2 * N_PAIRS, 2 * solver.rows.P) and len(state.s.futures) == 4
        reads.append(CountingRows.driver_reads)
    assert reads[0] == reads[1] <= 1, reads


def test_converged_float64_solve_equals_in_process(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """Converged (tol 1e-4), float64 compute, tasks of three chunks (other block boundaries than in process)."""
    train, _ = stores
    config = Phase1Config(compute_dtype="float64", beta=3e-2, n_patterns=4)
    ref = fit_phase1(_local(train), config=config)
    got = fit_phase1(DaskStoreRows(train, OPENER, client, chunks_per_task=3), config=config)
    assert ref.converged and got.converged and got.iterations == ref.iterations
    for name in ("v", "w", "theta1", "theta2"):
        _close(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)), name)
    assert got.objective == pytest.approx(ref.objective, rel=1e-6)


def test_checkpoint_gathers_the_state_and_resume_scatters_it(stores: tuple[str, str], client, tmp_path: Path) -> None:  # noqa: ANN001
    """A checkpoint writes s and nu gathered from the workers; resuming ships them back, and 20 + 20
    iterations equal 40 straight ones."""
    train, _ = stores
    base = {"compute_dtype": "float64", "checkpoint_path": str(tmp_path / "ck.npz"), "checkpoint_every": 10}
    rows = DaskStoreRows(train, OPENER, client, chunks_per_task=4)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        straight = fit_phase1(_local(train), config=Phase1Config(max_iter=40, compute_dtype="float64"))
    with pytest.warns(RuntimeWarning, match="did not reach"):
        fit_phase1(rows, config=Phase1Config(max_iter=20, **base))
    with np.load(tmp_path / "ck.npz") as ck:
        assert ck["s"].shape == (2 * N_PAIRS, 2 * straight.v.shape[0]) and np.isfinite(ck["nu"]).all()
    with pytest.warns(RuntimeWarning, match="did not reach"):
        resumed = fit_phase1(rows, config=Phase1Config(max_iter=20, resume=True, **base))
    assert len(resumed.history["objective"]) == 40
    _close(np.asarray(resumed.history["objective"]), np.asarray(straight.history["objective"]), "objective")
    _close(resumed.v, straight.v, "v")


def test_beta_path_equals_in_process(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """A warm-started path (rho changes with beta between solves) selected on validation rows: the same
    grid, the same selection, the same objectives (float64 compute)."""
    train, val = stores
    config = Phase1Config(compute_dtype="float64", n_patterns=4, path_n_betas=3, max_iter=150, tol=1e-3)
    ref = fit_phase1_path(_local(train), config=config, validation=_local(val))
    got = fit_phase1_path(DaskStoreRows(train, OPENER, client, chunks_per_task=5), config=config,
                          validation=_local(val))
    assert [r["beta"] for r in got.path] == pytest.approx([r["beta"] for r in ref.path], rel=1e-12)
    assert got.beta == pytest.approx(ref.beta, rel=1e-12)
    for a, b in zip(got.path, ref.path, strict=True):
        assert a["iterations"] == b["iterations"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-6)
    _close(got.v, ref.v, "v")


def test_pairwise_objective_on_the_workers(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    train, _ = stores
    config = Phase1Config(objective="pairwise", compute_dtype="float64", n_patterns=4, max_iter=80)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        ref = fit_phase1(_local(train), config=config)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        got = fit_phase1(DaskStoreRows(train, OPENER, client, chunks_per_task=2), config=config)
    _close(np.asarray(got.history["objective"]), np.asarray(ref.history["objective"]), "objective")
    assert got.train_accuracy == ref.train_accuracy


def test_anderson_acceleration_is_refused_in_one_line(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="anderson_memory"):
        fit_phase1(DaskStoreRows(stores[0], OPENER, client), config=Phase1Config(anderson_memory=5))


def test_rescale_state_on_the_workers_equals_the_solvers_pass(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """``admm.rescale_state`` (a new rho for a warm start: nu / f and alpha G'(s - nu) recomputed) runs its pass
    on the workers for remote rows, and equals ``Phase1Solver._rescale_rho`` on the in-process rows."""
    from coala_core.phase1.admm import rescale_state

    train, _ = stores
    config = Phase1Config(compute_dtype="float64", max_iter=30, memory_budget_mb=0)
    local = prepare(_local(train), None, config)
    remote = prepare(DaskStoreRows(train, OPENER, client), None, config)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        _, st_local = local.solve()
    with pytest.warns(RuntimeWarning, match="did not reach"):
        _, st_remote = remote.solve()
    rho = 3.0 * st_local.rho
    ref = local._rescale_rho(st_local, rho)
    same = rescale_state(local.rows, st_local, rho, local.alpha)
    np.testing.assert_array_equal(same.GtSnu, ref.GtSnu)
    np.testing.assert_array_equal(same.nu, ref.nu)
    got = rescale_state(remote.rows, st_remote, rho, remote.alpha)
    assert isinstance(got.nu, RemoteBlocks) and got.rho == ref.rho
    _close(np.asarray(got.GtSnu), np.asarray(ref.GtSnu), "GtSnu")
    _close(np.asarray(got.nu), np.asarray(ref.nu), "nu")
    _close(np.asarray(got.lam), np.asarray(ref.lam), "lam")


def test_grams_from_the_kept_rows_equal_grams_read_from_the_store(stores: tuple[str, str], client) -> None:  # noqa: ANN001
    """After ``prepare`` the Gram pass runs on the rows and signs the workers keep; a source that has not
    prepared reads the store for it; the sums are the same, bit for bit."""
    from coala_core.phase1.data import PreparedRows

    train, _ = stores
    rows = PreparedRows(DaskStoreRows(train, OPENER, client, chunks_per_task=3), Phase1Config(n_patterns=5, bias=True))
    assert rows.source.data is not None and rows.source._prepared_for(rows.standardizer, rows.gates, rows.dtype)
    kept = rows.grams(with_H=True)
    fresh = DaskStoreRows(train, OPENER, client, chunks_per_task=3).grams(rows.standardizer, rows.gates, True, rows.dtype)
    for a, b in zip(kept, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not rows.source._prepared_for(rows.standardizer, rows.gates[:, :2], rows.dtype)


def test_a_store_at_an_fsspec_url(client) -> None:  # noqa: ANN001
    """The workers open the store by its URL (here ``memory://``, shared by the threads of this cluster; on a
    real cluster an object store): the same iterations as in process."""
    import uuid

    uri = _write_store(f"memory://coala-dask-admm-{uuid.uuid4().hex}/train.zarr", 120, 3)
    config = Phase1Config(compute_dtype="float64", n_patterns=4, max_iter=40)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        ref = fit_phase1(_local(uri), config=config)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        got = fit_phase1(DaskStoreRows(uri, OPENER, client, chunks_per_task=2), config=config)
    _close(np.asarray(got.history["objective"]), np.asarray(ref.history["objective"]), "objective")
    _close(got.v, ref.v, "v")
