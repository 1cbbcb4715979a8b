"""Cost of the per-chunk checksum (and finiteness check) on a full streamed read of a feature store.

Baseline, measured in the same run: the same chunks read straight from the Zarr arrays (what
``FeatureStore.iter_chunks`` did before the checks). Prints both times and their ratio.

    .venv/bin/python benchmarks/integrity.py --rows 50000 --dim 576 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from storage.feature_store import FeatureStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.create(Path(tmp) / "fs.zarr", n_rows=args.rows, dim=args.dim, chunk_rows=args.chunk_rows)
        rng = np.random.default_rng(0)
        for c in store.pending_chunks():
            a, b = store.chunk_bounds(c)
            x = rng.normal(size=(b - a, args.dim)).astype(np.float32)
            store.write_chunk(c, x, -x, [f"p{i}" for i in range(a, b)])
        store = FeatureStore.open(store.uri, mode="r")

        def checked() -> float:
            return float(sum(c[0, 0] for _, _, c, _ in store.iter_chunks()))

        def raw() -> float:  # the pre-check read path: chunks straight from Zarr
            total = 0.0
            for a in range(0, args.rows, args.chunk_rows):
                b = min(a + args.chunk_rows, args.rows)
                c, _r = np.asarray(store._chosen[a:b]), np.asarray(store._rejected[a:b])
                total += float(c[0, 0])
            return total

        times: dict[str, list[float]] = {"raw": [], "checked": []}
        for _ in range(args.repeats):
            for name, fn in (("raw", raw), ("checked", checked)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        gib = 2 * args.rows * args.dim * 4 / 2**30
        print(json.dumps({"rows": args.rows, "dim": args.dim, "chunk_rows": args.chunk_rows, "GiB": round(gib, 3),
                          "raw_s": round(best["raw"], 3), "checked_s": round(best["checked"], 3),
                          "ratio_checked_over_raw": round(best["checked"] / best["raw"], 3)}))


if __name__ == "__main__":
    main()
