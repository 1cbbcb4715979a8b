"""Benchmark: peak memory of ``coala train`` against the size of the data, with rows streamed from the store.

For each size in ``--rows`` (default 20,000 and 80,000 pairs of 576-wide float32 features: 92 MB and 368 MB of
features), the script writes a synthetic feature store (chunk by chunk) and its matching pairs file
(80/10/10 train/validation/test), then runs ``coala train`` on them as a subprocess with
``--memory-budget-mb`` below the data size, so Phase I streams its rows from the store on every pass and the
product path holds only per-pair results. The child's peak resident set size comes from ``wait4``. The
baseline is the smallest size, measured in the same run: the ratio of each peak to it is printed and
written. A short solve (a few ADMM iterations at two betas) keeps the run to minutes: the memory a pass
needs does not depend on how many passes run.

Run: .venv/bin/python benchmarks/memory.py --json benchmarks/results/memory.json [--rows 20000 80000]
     [--dim 576] [--budget-mb 32] [--workdir DIR]

Writes ``{"rows": [...], "peak_rss_mb": [...], "ratio_to_first": [...], "wall_s": [...], ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.feature_store import FeatureStore
from storage.pairs import PAIRS_SCHEMA, write_pairs

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = """\
phase1:
  n_patterns: 4
  path_n_betas: 2
  max_iter: 3
  tol: 1.0e-3
phase2:
  beta_grid: [1.0]
  gamma_grid: [0.0]
  l2_grid: [1.0]
  max_iter: 20
"""


def synthetic_store(path: Path, n: int, d: int, seed: int = 0, chunk_rows: int = 4096) -> FeatureStore:
    """``n`` pairs of ``d``-wide float32 features (chosen rows shifted along a random direction), written
    chunk by chunk so this process never holds the whole store."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d).astype(np.float32)
    store = FeatureStore.create(path, n_rows=n, dim=d, dtype="float32", chunk_rows=chunk_rows,
                                provenance={"model_id": "synthetic", "layer": -1, "pooling": "mean", "dataset_digest": ""})
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        chosen = rng.standard_normal((b - a, d), dtype=np.float32) + 0.05 * u
        rejected = rng.standard_normal((b - a, d), dtype=np.float32)
        store.write_chunk(c, chosen, rejected, [f"p{i:07d}" for i in range(a, b)])
    return store


def synthetic_pairs(path: Path, n: int) -> None:
    """The matching pairs file: one short pair per store row, groups of 4 rows, 80/10/10 split by group."""
    groups = np.arange(n) // 4
    split = np.where(groups % 10 < 8, "train", np.where(groups % 10 == 8, "validation", "test"))
    ids = [f"p{i:07d}" for i in range(n)]
    table = pa.table({
        "pair_id": ids,
        "prompt": [[{"role": "user", "content": f"q{g}"}] for g in groups],
        "chosen": ["good"] * n, "rejected": ["bad"] * n, "source": ["synthetic"] * n,
        "group_id": [f"g{g}" for g in groups], "split": split.tolist(), "meta": ["{}"] * n,
    }, schema=PAIRS_SCHEMA)
    write_pairs(table, path)


def run_train(store: Path, pairs: Path, head: Path, config: Path, budget_mb: float) -> tuple[float, float, str]:
    """``coala train`` as a child process: (peak RSS in MiB from wait4, wall seconds, stderr tail)."""
    coala = Path(sys.executable).with_name("coala")
    cmd = [str(coala), "train", "--features", str(store), "--pairs", str(pairs), "--output", str(head),
           "--config", str(config), "--memory-budget-mb", str(budget_mb), "--backend", "numpy"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = (proc.stdout.read() if proc.stdout else b"").decode() + (proc.stderr.read() if proc.stderr else b"").decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"coala train failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return usage.ru_maxrss / 1024.0, wall, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[20000, 80000])
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--budget-mb", type=float, default=32.0, help="Phase I memory budget (below the data size)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the stores go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coala-memory-", dir=args.workdir))
    config = work / "train.yaml"
    config.write_text(TRAIN_CONFIG)
    result: dict[str, object] = {"rows": [], "peak_rss_mb": [], "data_mb": [], "wall_s": [], "budget_mb": args.budget_mb,
                                 "dim": args.dim, "command": "coala train --features S --pairs P --output H --config "
                                 "train.yaml --memory-budget-mb B --backend numpy", "train_config": TRAIN_CONFIG,
                                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "last_line": []}
    try:
        for n in args.rows:
            data_mb = 2 * n * args.dim * 4 / 2**20
            if args.budget_mb >= data_mb:
                raise SystemExit(f"--budget-mb {args.budget_mb} is not below the data size {data_mb:.0f} MB at {n} rows")
            store, pairs = work / f"feat{n}.zarr", work / f"pairs{n}.parquet"
            synthetic_store(store, n, args.dim)
            synthetic_pairs(pairs, n)
            peak, wall, last = run_train(store, pairs, work / f"head{n}", config, args.budget_mb)
            for key, value in (("rows", n), ("peak_rss_mb", round(peak, 1)), ("data_mb", round(data_mb, 1)),
                               ("wall_s", round(wall, 1)), ("last_line", last)):
                result[key].append(value)  # type: ignore[union-attr]
            print(f"{n:>7} pairs ({data_mb:6.0f} MB of features): peak RSS {peak:7.1f} MB, {wall:6.1f} s", flush=True)
            shutil.rmtree(store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peaks = result["peak_rss_mb"]
    result["ratio_to_first"] = [round(p / peaks[0], 3) for p in peaks]  # type: ignore[index,union-attr]
    print(f"peak RSS ratio {result['rows'][-1]} / {result['rows'][0]} pairs: {result['ratio_to_first'][-1]:.3f} (goal <= 1.25)")  # type: ignore[index]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
