"""Several feature stores from ONE forward pass per pair: every (pooling, layer) variant of a sweep.

Each pair runs once through the frozen model (its prompt once, shared by both responses when
``share_prefix``); from that pass every requested pooling at every requested layer is pooled, and the two
likelihood columns are computed. Each variant is written to its own store, exactly as
``coala features extract --pooling P --layers K --logprob-features`` would write it (same code path, same
provenance), under ``OUT/<pooling>_L<layer>.zarr``. A store without the likelihood columns is the same store
minus its last two columns (the layer block is identical).

Run (the sweep's stores, 2,404 EduFeedback-MathDial pairs, 128 tokens, bf16):
  nice -n 10 .venv/bin/python benchmarks/extract_variants.py --pairs sweep/mathdial_all.parquet \
      --out sweep/smollm2_t128 --poolings response_mean,response_last,mean --layers -1,10,15,20,25 \
      --max-tokens 128 --dtype bfloat16
Resumable: rerun the same command; committed chunks are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from coala_core.features import ExtractionConfig, FeatureExtractor, extraction_provenance, load_model
from coala_core.features.batching import GroupRunner
from coala_core.features.extract import _messages
from coala_core.features.forward import assemble
from storage import FeatureStore, read_pairs
from storage.pairs import table_digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True, help="directory for the stores")
    ap.add_argument("--model", default="default")
    ap.add_argument("--poolings", default="response_mean,response_last")
    ap.add_argument("--layers", default="-1,15,20")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-rows", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0, help="first N pairs only (smoke runs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a crowded machine)")
    args = ap.parse_args()

    table = read_pairs(args.pairs)
    if args.limit:
        table = table.slice(0, args.limit)
    digest = table_digest(table)
    poolings = args.poolings.split(",")
    layers = [int(x) for x in args.layers.split(",")]
    base = ExtractionConfig.build({"model": args.model, "max_tokens": args.max_tokens, "dtype": args.dtype, "device": "cpu",
                                   "logprob_features": True, "share_prefix": True, "batch_size": args.batch_size,
                                   "chunk_rows": args.chunk_rows, "layers": (layers[0],), "pooling": poolings[0],
                                   "num_threads": args.threads})
    t_load = time.perf_counter()
    ex = FeatureExtractor(load_model(base), base)
    t_load = time.perf_counter() - t_load
    engine = ex.make_engine(poolings, layers, True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stores = {}
    for pooling in poolings:
        for k in layers:
            cfg = base.replace(pooling=pooling, layers=(k,))
            prov = extraction_provenance(cfg, dataset_digest=digest, model_id=ex.loaded.model_id, revision=ex.loaded.revision,
                                         compute_dtype=ex.loaded.dtype_name, hidden_size=ex.loaded.hidden_size)
            stores[(pooling, k)] = FeatureStore.open_or_create(
                out / f"{pooling}_L{k}.zarr", n_rows=table.num_rows, dim=ex.dim, dtype="float32",
                chunk_rows=args.chunk_rows, provenance=prov)
    first = next(iter(stores.values()))
    pending = sorted(set().union(*(s.pending_chunks() for s in stores.values())))
    runner = GroupRunner(engine.run, args.batch_size)
    cols = {c: table.column(c) for c in ("pair_id", "prompt", "chosen", "rejected")}
    t0 = time.perf_counter()
    rows = 0
    for c in pending:
        start, stop = first.chunk_bounds(c)
        prompts = [_messages(p) for p in cols["prompt"][start:stop].to_pylist()]
        groups = ex.encoder.encode_pairs(prompts, cols["chosen"][start:stop].to_pylist(), cols["rejected"][start:stop].to_pylist())
        res = ex.run_groups(groups, runner, engine=engine, reuse_prefix=True)
        ids = cols["pair_id"][start:stop].to_pylist()
        for (pooling, k), store in stores.items():
            if c in store.completed_chunks():
                continue
            f = assemble(res, pooling, (k,), True)
            store.write_chunk(c, f[0::2], f[1::2], ids)
        rows += stop - start
        el = time.perf_counter() - t0
        print(f"chunk {c}: {rows}/{sum(first.chunk_bounds(x)[1] - first.chunk_bounds(x)[0] for x in pending)} pairs, "
              f"{el:.0f} s, tokens {runner.useful_tokens}, computed {runner.computed_tokens}", flush=True)
    seconds = time.perf_counter() - t0
    summary = {"pairs": table.num_rows, "rows_this_run": rows, "seconds": round(seconds, 1), "model_load_seconds": round(t_load, 1),
               "tokens": runner.useful_tokens, "computed_tokens": runner.computed_tokens,
               "computed_tokens_per_pair": runner.computed_tokens / max(rows, 1),
               "stores": sorted(str(out / f"{p}_L{k}.zarr") for p, k in stores), "dim": ex.dim,
               "complete": all(s.is_complete for s in stores.values())}
    for s in stores.values():
        if s.is_complete:
            s.verify()
    chosen, rejected = first.read_all() if first.is_complete else (np.zeros((0, 2)), np.zeros((0, 2)))
    if len(chosen):
        summary["zero_shot_pmi_acc_all"] = float(np.mean(chosen[:, -1] > rejected[:, -1]))
        summary["zero_shot_loglik_acc_all"] = float(np.mean(chosen[:, -2] > rejected[:, -2]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
