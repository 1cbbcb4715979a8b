"""A `kill -9` in the middle of a store append, then a resume, gives a store equal to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from storage.feature_store import FeatureStore

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from storage.feature_store import FeatureStore

    store = FeatureStore.open_or_create(sys.argv[1], n_rows=200, dim=16, chunk_rows=8, provenance={"k": "v"})
    for c in store.pending_chunks():
        a, b = store.chunk_bounds(c)
        rng = np.random.default_rng(c)
        store.write_chunk(c, rng.normal(size=(b - a, 16)), rng.normal(size=(b - a, 16)), [f"p{i}" for i in range(a, b)])
        time.sleep(float(sys.argv[2]))
    """
)


def run_writer(uri: str, pause: float) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen([sys.executable, "-c", WRITER, uri, str(pause)], env=env, cwd=root)


def test_kill_minus_nine_then_resume_equals_uninterrupted(tmp_path):
    ref_uri, uri = str(tmp_path / "ref.zarr"), str(tmp_path / "killed.zarr")
    assert run_writer(ref_uri, 0.0).wait(timeout=120) == 0

    proc = run_writer(uri, 0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            if FeatureStore.open(uri).completed_rows >= 40:
                break
        except Exception:  # store not created yet
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    partial = FeatureStore.open(uri)
    assert 0 < partial.completed_rows < partial.n_rows, "the kill must land mid-append"
    assert run_writer(uri, 0.0).wait(timeout=120) == 0  # the resume

    ref, done = FeatureStore.open(ref_uri), FeatureStore.open(uri)
    done.verify()
    for a, b in zip(ref.read_all(), done.read_all(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.pair_ids(), done.pair_ids())
