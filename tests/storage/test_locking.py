"""Store creation and writes under an advisory lock, tested with real concurrent processes.

Before: two shards started together failed 8 of 8 times with raw FileExistsError / ContainsArrayError, and two
writers with different models mixed 16-24 of 64 rows into one store that verify() passed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage.feature_store import FeatureStore
from storage.locks import LockTimeoutError, file_lock

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from coala_core.errors import CoalaError
    from storage.feature_store import FeatureStore

    uri, model, shard, n_shards, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    while time.time() < start_at:
        pass
    try:
        store = FeatureStore.open_or_create(uri, n_rows=64, dim=8, chunk_rows=4, provenance={"model_id": model})
        for c in store.pending_chunks((shard, n_shards)):
            a, b = store.chunk_bounds(c)
            value = 1.0 if model == "A" else 2.0
            store.write_chunk(c, np.full((b - a, 8), value), np.full((b - a, 8), -value), [f"p{i}" for i in range(a, b)])
    except CoalaError as err:
        print(type(err).__name__, str(err).splitlines()[0], file=sys.stderr)
        sys.exit(1)
    """
)


def start(uri: str, model: str, shard: int, n_shards: int, start_at: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, uri, model, str(shard), str(n_shards), str(start_at)],
                            env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def run_all(jobs: list[tuple[str, int, int]], uri: str) -> list[tuple[int, str]]:
    start_at = time.time() + 4.0  # all processes start their creation at the same instant
    procs = [start(uri, model, i, n, start_at) for model, i, n in jobs]
    return [(p.wait(timeout=180), p.stderr.read()) for p in procs]


@pytest.mark.parametrize("attempt", range(1))
def test_shards_started_together_create_once_and_fill_the_store(tmp_path, attempt):
    uri = str(tmp_path / "fs.zarr")
    results = run_all([("A", i, 4) for i in range(4)], uri)
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    store = FeatureStore.open(uri)
    store.verify()
    chosen, rejected = store.read_all()
    assert (chosen == 1.0).all() and (rejected == -1.0).all()


def test_two_models_racing_never_mix_one_is_refused(tmp_path):
    uri = str(tmp_path / "fs.zarr")
    results = run_all([("A", 0, 1), ("B", 0, 1)], uri)
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, err in results if rc == 1)
    assert "ProvenanceMismatchError" in loser and "provenance.model_id" in loser
    store = FeatureStore.open(uri)
    store.verify()
    chosen, _ = store.read_all()
    value = 1.0 if store.provenance["model_id"] == "A" else 2.0
    assert (chosen == value).all()  # every row from the model the store was made with


def test_stale_lock_of_a_dead_writer_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".fs.zarr.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "purpose": "create fs.zarr"}))
    t0 = time.monotonic()
    FeatureStore.open_or_create(tmp_path / "fs.zarr", n_rows=4, dim=2, chunk_rows=2)
    assert time.monotonic() - t0 < 5


def test_a_held_lock_names_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from storage.locks import file_lock\n"
         "with file_lock(sys.argv[1], purpose='create fs.zarr'):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path / ".fs.zarr.lock")], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeoutError, match=rf"locked by pid {holder.pid} on {socket.gethostname()}"):
            with file_lock(tmp_path / ".fs.zarr.lock", timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(tmp_path / ".fs.zarr.lock", timeout=5):  # released by the kernel when the holder died
        pass
