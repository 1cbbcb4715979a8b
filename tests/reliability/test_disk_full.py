"""A full disk (a small tmpfs, where the test may mount one) is a one-line error naming the file or chunk;
nothing is half-written, and once space is freed the same command resumes to the same result.

Before: a raw ``OSError: [Errno 28] No space left on device`` traceback.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import numpy as np
import pytest

from storage.feature_store import FeatureStore


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk, leave_kib: int):
    """Take all the space of ``disk`` but ``leave_kib`` KiB (tmpfs counts whole 4 KiB pages)."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave_kib * 1024))
    return filler


def one_line_error(res) -> str:
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]  # beside progress bars
    assert res.exit_code == 1, res.output
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return errors[0]


def test_pairs_write_on_a_full_disk(cli, small_disk, pairs_file):
    fill(small_disk, 0)
    out = small_disk / "sub" / "pairs.parquet"
    res = cli("data", "import", "-i", "tests/data/fixtures/trl.jsonl", "-o", out, "-f", "trl")
    msg = one_line_error(res)
    assert "no space left on device" in msg and "pairs.parquet" in msg
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [] if out.parent.exists() else True  # no temp leftovers


def test_extraction_on_a_full_disk_then_resume_loses_no_row(cli, small_disk, tmp_path, pairs_file, tiny_lm):
    from test_verify_cli import extract

    ref = extract(cli, tmp_path, pairs_file, tiny_lm, tmp_path / "ref.zarr").read_all()
    cfg = tmp_path / "features.yaml"
    args = ("features", "extract", "--pairs", pairs_file, "--model", tiny_lm, "--output", small_disk / "fs.zarr",
            "--config", cfg, "--quiet")
    filler = fill(small_disk, 44)  # room to create the store, not to write every chunk
    msg = one_line_error(cli(*args))
    assert "no space left on device" in msg and "fs.zarr" in msg
    filler.unlink()
    res = cli(*args)
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(small_disk / "fs.zarr")
    store.verify()
    for a, b in zip(ref, store.read_all(), strict=True):
        np.testing.assert_array_equal(a, b)
