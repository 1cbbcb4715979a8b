"""``benchmarks/scale.py``'s Phase I ADMM part runs (tiny sizes) and prints its ratios against one process; the
Dask solve it times ends where the in-process one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]


def test_admm_part_prints_ratios_and_equal_solves(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(REPO / "benchmarks" / "scale.py"), "--skip", "extraction,gram",
         "--admm-pairs", "600", "--admm-dim", "16", "--admm-iters", "8", "--chunk-rows-phase1", "128",
         "--workers", "1,2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("phase1 ADMM iterations"))
    assert "1 worker(s)" in line and "2 worker(s)" in line and "x streamed" in line
    result = json.loads(out.read_text())["phase1_admm"]
    assert set(result) >= {"one_process_streamed", "one_process_resident", "dask_1", "dask_2"}
    for w in (1, 2):
        r = result[f"dask_{w}"]
        assert r["tasks"] == w and r["rows_x_iters_per_s"] > 0
        assert r["objective_rel_diff_vs_one_process"] < 1e-6 and r["v_max_rel_diff_vs_one_process"] < 1e-5
