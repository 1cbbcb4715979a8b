"""Benchmark: feature-extraction pipeline vs a bare forward loop, and padding with vs without bucketing.

On EduFeedback-MathDial pairs (APS over the bundled MathDial test file):
1. padding efficiency (useful tokens / computed tokens) of the pipeline's batching, with and without length
   bucketing, over all pairs (tokenisation only; the chunk is the bucketing window, as in the pipeline);
2. on a subset of ``--rows`` pairs, in one process with one loaded model, tokens/s of
   (a) a bare loop: pre-tokenised batches (the same bucketed batches, same batch size) through the decoder
       under inference_mode, nothing else;
   (b) the pipeline: read the pairs Parquet, format + tokenise, forward, pool, write a Zarr store, commit.
   Model loading is outside both timings. The bare loop runs before and after the pipeline; its mean is used.

Run: .venv/bin/python benchmarks/extract.py [--rows 64] [--max-tokens 512] [--batch-size 16] [--model default]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from coala_core.data.config import EduFeedbackConfig
from coala_core.data.edufeedback import build_edufeedback
from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
from coala_core.features.batching import batch_order, computed_tokens
from storage import FeatureStore, read_digest, read_pairs, write_pairs

ROOT = Path(__file__).resolve().parents[1]


def texts_of(table) -> tuple[list, list]:  # noqa: ANN001 - pyarrow table
    prompts = [[{"role": m["role"], "content": m["content"]} for m in p] for p in table.column("prompt").to_pylist()]
    return prompts + prompts, table.column("chosen").to_pylist() + table.column("rejected").to_pylist()


def padding(lengths_by_chunk: list[list[int]], batch_size: int) -> dict[str, float]:
    useful = sum(sum(c) for c in lengths_by_chunk)
    with_b = sum(computed_tokens(c, batch_size, True) for c in lengths_by_chunk)
    without = sum(computed_tokens(c, batch_size, False) for c in lengths_by_chunk)
    return {
        "useful_tokens": useful,
        "computed_tokens_bucketed": with_b,
        "computed_tokens_unbucketed": without,
        "efficiency_bucketed": useful / with_b,
        "efficiency_unbucketed": useful / without,
        "computed_ratio_unbucketed_over_bucketed": without / with_b,
    }


def bare_loop(ex: FeatureExtractor, seqs: list[list[int]], batch_size: int) -> tuple[int, float]:
    order = batch_order([len(s) for s in seqs], True)
    batches = []
    for i in range(0, len(order), batch_size):
        group = [seqs[j] for j in order[i : i + batch_size]]
        T = max(len(s) for s in group)
        ids = torch.full((len(group), T), ex.pad_id, dtype=torch.long)
        M = torch.zeros((len(group), T), dtype=torch.long)
        for b, s in enumerate(group):
            ids[b, : len(s)] = torch.tensor(s)
            M[b, : len(s)] = 1
        batches.append((ids.to(ex.loaded.device), M.to(ex.loaded.device)))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids, M in batches:
            ex.loaded.backbone(input_ids=ids, attention_mask=M, use_cache=False)
    return sum(len(s) for s in seqs), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "mathdial" / "test.jsonl"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--rows", type=int, default=64, help="pairs to time; 0 = padding statistics only")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    cfg = ExtractionConfig.build(model=args.model, max_tokens=args.max_tokens, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        df, _ = build_edufeedback(args.data, EduFeedbackConfig.build())
        all_path = Path(tmp) / "all.parquet"
        write_pairs(df, all_path)
        sub_path = Path(tmp) / "subset.parquet"
        write_pairs(df.head(args.rows), sub_path)
        t0 = time.perf_counter()
        ex = FeatureExtractor(load_model(cfg), cfg)
        load_s = time.perf_counter() - t0

        table = read_pairs(all_path)
        n = table.num_rows
        by_chunk, truncated = [], 0
        for start in range(0, n, cfg.chunk_rows):
            chunk = table.slice(start, cfg.chunk_rows)
            prompts, responses = texts_of(chunk)
            encoded = ex.encoder.encode(prompts, responses)
            by_chunk.append([len(e.ids) for e in encoded])
            truncated += sum(e.prompt_truncated or e.response_truncated for e in encoded)
        pad = padding(by_chunk, cfg.batch_size)

        if args.rows == 0:  # padding only (tokenisation; no model forward)
            print(json.dumps({"pairs_total": n, "truncated_texts_total": truncated, "padding": pad}, indent=2))
            return
        sub = read_pairs(sub_path)
        seqs = [e.ids for e in ex.encoder.encode(*texts_of(sub))]
        bare_loop(ex, seqs[: cfg.batch_size], cfg.batch_size)  # warm-up
        bare_tokens, bare_s1 = bare_loop(ex, seqs, cfg.batch_size)

        t0 = time.perf_counter()
        table_sub = read_pairs(sub_path)
        store = FeatureStore.create(
            str(Path(tmp) / "store.zarr"),
            n_rows=table_sub.num_rows,
            dim=ex.loaded.hidden_size,
            chunk_rows=cfg.chunk_rows,
            provenance=ex.provenance(read_digest(sub_path) or ""),
        )
        stats = extract_features(table_sub, store, cfg, extractor=ex, show_progress=False)
        pipe_s = time.perf_counter() - t0
        _, bare_s2 = bare_loop(ex, seqs, cfg.batch_size)
        store.verify()

    bare_s = (bare_s1 + bare_s2) / 2
    result = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {ex.loaded.device}, torch {torch.__version__}",
        "model": ex.loaded.model_id,
        "revision": ex.loaded.revision,
        "dtype": ex.loaded.dtype_name,
        "pairs_total": n,
        "texts_total": 2 * n,
        "max_tokens": cfg.max_tokens,
        "batch_size": cfg.batch_size,
        "padding": pad,
        "truncated_texts_total": truncated,
        "timing_pairs": args.rows,
        "timing_tokens": bare_tokens,
        "model_load_s": load_s,
        "bare_s": [bare_s1, bare_s2],
        "bare_tokens_per_s": bare_tokens / bare_s,
        "pipeline_s": pipe_s,
        "pipeline_tokens_per_s": stats.tokens / pipe_s,
        "pipeline_over_bare": (stats.tokens / pipe_s) / (bare_tokens / bare_s),
        "pipeline_stats": stats.to_dict(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
