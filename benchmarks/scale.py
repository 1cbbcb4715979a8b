"""Benchmark: scale-out on Dask. Extraction and Phase I throughput on 1 and 2 Dask workers against one process.

All in one run, on this machine, same inputs:
1. Extraction (pairs/s): EduFeedback-MathDial pairs (APS over the bundled MathDial test file) through
   (a) one process: ``extract_features`` over every chunk of one store, with one loaded model;
   (b) a LocalCluster of W worker processes (one thread each): the pipeline's shard task
       (tasks/shards.py, the body of the mapped ``extract-shard`` task) for shards 0..W-1 of the same store.
   Each run writes a fresh store; the wall time includes the workers' model loading (each worker loads
   the model once, as in the pipeline), not the cluster start-up; (a) includes its model loading too.
2. Phase I (rows/s): the streamed reductions of Phase I (standardisation moments + Gram matrices XtX, H, F'y)
   over a synthetic Zarr store, (a) in one process (``PreparedRows`` over the store, streamed), (b) as
   map-reduce on W workers (coala_core/phase1/dask_source.py). Only these passes are timed (the gates are
   fixed from (a)).
3. Phase I ADMM iterations (rows x iterations / s): ``--admm-iters`` iterations of the default solver (fixed
   count) on a second synthetic store (``--admm-pairs`` x ``--admm-dim``), (a) in one process, streamed from
   the store as ``memory_budget_mb: 0`` does (the Dask workers' situation: rows not in the driver), and with
   the rows resident in memory (the default when they fit), (b) on W workers (``DaskStoreRows``, one task per
   worker, rows cached on the workers, s and nu kept there). Set-up (moments, patterns, Gram matrices, the
   u-step factorisation) is timed apart from the iterations; the objectives after the last iteration are
   compared with the streamed run's.
The processes' torch/BLAS threads: one per worker; the single process keeps its default (all cores).

Run: .venv/bin/python benchmarks/scale.py [--model tiny|default] [--pairs 96] [--workers 1,2]
                                          [--phase1-pairs 40000] [--dim 256] [--patterns 8]
                                          [--admm-pairs 20000] [--admm-dim 128] [--admm-iters 30]
                                          [--skip extraction,gram,admm] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_pairs(n: int, root: Path):  # noqa: ANN201 - returns tasks.refs.DatasetRef
    from coala_core.data.config import EduFeedbackConfig
    from coala_core.data.edufeedback import build_edufeedback
    from storage import write_pairs
    from tasks.refs import DatasetRef

    table, _ = build_edufeedback(ROOT / "data" / "mathdial" / "test.jsonl",
                                 EduFeedbackConfig(format="mathdial", train_fraction=1.0, validation_fraction=0.0,
                                                   test_fraction=0.0, limit=n))
    info = write_pairs(table, root / "pairs.parquet")
    return DatasetRef(uri=str(info.path), digest=info.digest, n_rows=info.n_rows, splits={"train": info.n_rows})


def extraction(args: argparse.Namespace, root: Path, workers: list[int]) -> dict:
    import distributed

    from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
    from storage import FeatureStore, read_pairs
    from tasks.shards import extract_shard_task

    model = args.model
    if model == "tiny":
        from coala_core.testing import save_tiny_lm

        model = str(save_tiny_lm(root / "tiny", chat_template=False, hidden_size=64, layers=4))
    dataset = make_pairs(args.pairs, root)
    config = ExtractionConfig.build({"model": model, "max_tokens": args.max_tokens, "batch_size": 8,
                                     "chunk_rows": args.chunk_rows, "device": "cpu", "dtype": "float32"})
    out: dict = {"pairs": dataset.n_rows, "model": args.model, "max_tokens": args.max_tokens}

    t0 = time.perf_counter()
    ex = FeatureExtractor(load_model(config), config)
    rows = read_pairs(dataset.path)
    store = FeatureStore.create(root / "one" / "train.zarr", n_rows=rows.num_rows, dim=ex.loaded.hidden_size,
                                dtype=config.store_dtype, chunk_rows=config.chunk_rows,
                                provenance={**ex.provenance(dataset.digest), "split": "train"})
    extract_features(rows, store, config, extractor=ex, show_progress=False)
    one = time.perf_counter() - t0
    out["one_process"] = {"seconds": one, "pairs_per_s": dataset.n_rows / one}
    reference = store.read_all()
    for w in workers:
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            client.run(lambda: __import__("torch").set_num_threads(1))
            output = root / f"dask{w}"
            t0 = time.perf_counter()
            futures = [client.submit(extract_shard_task.fn, i, w, dataset, config, output, pure=False) for i in range(w)]
            counts = client.gather(futures)
            s = time.perf_counter() - t0
        got = FeatureStore.open(output / "train.zarr").read_all()
        max_diff = max(float(np.abs(a - b).max()) for a, b in zip(got, reference, strict=True))
        out[f"dask_{w}"] = {"seconds": s, "pairs_per_s": dataset.n_rows / s, "speedup_vs_one_process": one / s,
                            "shards_pairs": [c["rows"] for c in counts], "max_abs_diff_vs_one_process": max_diff}
    return out


def phase1(args: argparse.Namespace, root: Path, workers: list[int]) -> dict:
    import distributed

    from coala_core.phase1 import Phase1Config
    from coala_core.phase1.dask_source import DaskStoreRows
    from coala_core.phase1.data import PreparedRows
    from coala_core.phase1.source import PairRows
    from storage import FeatureStore

    n, d = args.phase1_pairs, args.dim
    uri = root / "phase1.zarr"
    rng = np.random.default_rng(0)
    store = FeatureStore.create(uri, n_rows=n, dim=d, dtype="float32", chunk_rows=args.chunk_rows_phase1, provenance={})
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        store.write_chunk(c, rng.normal(size=(b - a, d)).astype(np.float32),
                          rng.normal(size=(b - a, d)).astype(np.float32) + 0.1, [f"p{i}" for i in range(a, b)])
    config = Phase1Config.build({"n_patterns": args.patterns, "memory_budget_mb": 0})  # streamed
    out: dict = {"pairs": n, "rows": 2 * n, "dim": d, "patterns": args.patterns, "chunk_rows": args.chunk_rows_phase1}

    local = PreparedRows(PairRows(FeatureStore.open(uri, mode="r")), config)
    t0 = time.perf_counter()
    local.standardizer = local._fit_standardizer()
    ref = local.grams(with_H=True)
    one = time.perf_counter() - t0
    out["one_process"] = {"seconds": one, "rows_per_s": 2 * n / one}
    for w in workers:
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            remote = DaskStoreRows(str(uri), functools.partial(FeatureStore.open, mode="r"), client)
            t0 = time.perf_counter()
            mean, scale = remote.moments()
            std = type(local.standardizer)(mean, scale, local.standardizer.bias)
            got = remote.grams(std, local.gates, True, local.dtype)
            s = time.perf_counter() - t0
        rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, ref, strict=True))
        out[f"dask_{w}"] = {"seconds": s, "rows_per_s": 2 * n / s, "speedup_vs_one_process": one / s,
                            "max_rel_diff_vs_one_process": rel}
    return out


def _store(uri: Path, n: int, d: int, chunk_rows: int, seed: int) -> None:
    from storage import FeatureStore

    rng = np.random.default_rng(seed)
    w = rng.normal(size=d).astype(np.float32) / np.sqrt(d)
    store = FeatureStore.create(uri, n_rows=n, dim=d, dtype="float32", chunk_rows=chunk_rows, provenance={})
    for c in range(store.n_chunks):
        a, b = store.chunk_bounds(c)
        chosen = rng.normal(size=(b - a, d)).astype(np.float32)
        store.write_chunk(c, chosen + w, rng.normal(size=(b - a, d)).astype(np.float32) - w,
                          [f"p{i}" for i in range(a, b)])


def admm(args: argparse.Namespace, root: Path, workers: list[int]) -> dict:
    """Phase I ADMM iterations: one process (streamed, resident) against W Dask workers, same store."""
    import warnings

    import distributed

    from coala_core.phase1 import Phase1Config
    from coala_core.phase1.dask_source import DaskStoreRows
    from coala_core.phase1.fit import prepare
    from coala_core.phase1.source import PairRows
    from storage import FeatureStore
    from tasks.dask_rows import chunks_per_task

    n, d, iters = args.admm_pairs, args.admm_dim, args.admm_iters
    uri = root / "admm.zarr"
    _store(uri, n, d, args.chunk_rows_phase1, 1)
    out: dict = {"pairs": n, "rows": 2 * n, "dim": d, "patterns": args.patterns, "iterations": iters,
                 "chunk_rows": args.chunk_rows_phase1}

    def run(source: object, budget: float) -> tuple[dict, Any]:
        config = Phase1Config(n_patterns=args.patterns, max_iter=iters, memory_budget_mb=budget)
        t0 = time.perf_counter()
        solver = prepare(source, None, config)
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a fixed count of iterations does not converge
            res, _ = solver.solve()
        s = time.perf_counter() - t0
        assert res.iterations == iters
        return {"setup_seconds": setup, "iteration_seconds": s / iters, "rows_x_iters_per_s": 2 * n * iters / s,
                "objective": float(res.objective)}, res

    local = PairRows(FeatureStore.open(uri, mode="r"))
    out["one_process_streamed"], ref = run(local, 0.0)
    base = out["one_process_streamed"]["rows_x_iters_per_s"]
    out["one_process_resident"], _ = run(local, 4096.0)
    out["one_process_resident"]["ratio_vs_streamed"] = out["one_process_resident"]["rows_x_iters_per_s"] / base
    for w in workers:
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            store = FeatureStore.open(uri, mode="r")
            remote = DaskStoreRows(str(uri), functools.partial(FeatureStore.open, mode="r"), client,
                                   chunks_per_task=chunks_per_task(store.n_chunks, w))
            r, obj = run(remote, 0.0)
        r["ratio_vs_streamed"] = r["rows_x_iters_per_s"] / base
        r["ratio_vs_resident"] = r["rows_x_iters_per_s"] / out["one_process_resident"]["rows_x_iters_per_s"]
        r["tasks"] = len(remote.ranges)
        r["objective_rel_diff_vs_one_process"] = abs(obj.objective - ref.objective) / abs(ref.objective)
        r["v_max_rel_diff_vs_one_process"] = float(np.abs(obj.v - ref.v).max() / np.abs(ref.v).max())
        out[f"dask_{w}"] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (a random 4-layer LM, hidden 64) or a model id/path ('default')")
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--chunk-rows", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--phase1-pairs", type=int, default=40000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--patterns", type=int, default=8)
    ap.add_argument("--chunk-rows-phase1", type=int, default=2048)
    ap.add_argument("--admm-pairs", type=int, default=20000)
    ap.add_argument("--admm-dim", type=int, default=128)
    ap.add_argument("--admm-iters", type=int, default=30)
    ap.add_argument("--skip", default="", help="comma-separated parts not to run: extraction, gram, admm")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="coala-scale-") as tmp:
        root = Path(tmp)
        result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                    "load_before": os.getloadavg()}}
        if "extraction" not in skip:
            result["extraction"] = extraction(args, root, workers)
        if "gram" not in skip:
            result["phase1"] = phase1(args, root, workers)
        if "admm" not in skip:
            result["phase1_admm"] = admm(args, root, workers)
    result["machine"]["load_after"] = os.getloadavg()
    for part, unit in (("extraction", "pairs_per_s"), ("phase1", "rows_per_s")):
        if part not in result:
            continue
        r = result[part]
        print(f"{part}: one process {r['one_process'][unit]:.1f} {unit.replace('_per_s', '/s')}", end="")
        for w in workers:
            print(f"; {w} worker(s) {r[f'dask_{w}'][unit]:.1f} ({r[f'dask_{w}']['speedup_vs_one_process']:.2f}x)", end="")
        print()
    if "phase1_admm" in result:
        r = result["phase1_admm"]
        print(f"phase1 ADMM iterations (rows x iterations/s): one process streamed "
              f"{r['one_process_streamed']['rows_x_iters_per_s']:.0f}; resident "
              f"{r['one_process_resident']['rows_x_iters_per_s']:.0f} ({r['one_process_resident']['ratio_vs_streamed']:.2f}x)", end="")
        for w in workers:
            x = r[f"dask_{w}"]
            print(f"; {w} worker(s) {x['rows_x_iters_per_s']:.0f} ({x['ratio_vs_streamed']:.2f}x streamed, "
                  f"{x['ratio_vs_resident']:.2f}x resident)", end="")
        print()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
