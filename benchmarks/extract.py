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

``--prefix-sharing`` instead compares extraction before and after the shared prompt pass (issue 11 item 8):
(a) over ALL pairs (tokenisation only), computed token positions per pair (padding included, bucketed
batches of ``--batch-size`` texts) when every text runs whole (before: ``share_prefix`` off, per-text cut)
and when each pair's prompt runs once and both responses run on its KV cache (after); (b) on ``--rows`` pairs,
the wall time of ``extract_features`` into a store in both modes, and the features of the shared pass against
the same token sequences run whole (relative difference; response_mean pooling, last layer, float32), and
against the before-mode store on the pairs whose token sequences are identical in both modes.

Run: .venv/bin/python benchmarks/extract.py --prefix-sharing --rows 32 --max-tokens 512 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from coala_core.data.config import EduFeedbackConfig
from coala_core.data.edufeedback import build_edufeedback
from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
from coala_core.features.batching import batch_order, computed_tokens, length_splits
from coala_core.features.extract import group_order
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


def group_computed_tokens(groups: list, batch_size: int) -> int:
    """Token positions the shared pass computes: per batch, prefixes padded once, then the response parts in the
    engine's length-sorted sub-batches (``length_splits``), each padded to its own longest."""
    order = group_order(groups, True, True)
    step = max(1, batch_size // 2)
    total = 0
    for i in range(0, len(order), step):
        batch = [groups[j] for j in order[i : i + step]]
        total += len(batch) * max(len(g.prefix) for g in batch)
        lengths = [len(p) for g in batch for p in g.parts]
        total += sum(len(s) * max(lengths[k] for k in s) for s in length_splits(lengths))
    return total


def prefix_sharing(args: argparse.Namespace) -> dict:
    """Issue 11 item 8: computed tokens per pair and wall time, full texts vs the shared prompt pass."""
    from coala_core.features.batching import GroupRunner

    after_cfg = ExtractionConfig.build(model=args.model, max_tokens=args.max_tokens, batch_size=args.batch_size,
                                       pooling="response_mean", dtype=args.dtype, share_prefix=True)
    before_cfg = after_cfg.replace(share_prefix=False)
    df, _ = build_edufeedback(args.data, EduFeedbackConfig.build())
    with tempfile.TemporaryDirectory() as tmp:
        all_path = Path(tmp) / "all.parquet"
        write_pairs(df, all_path)
        table = read_pairs(all_path)
        t0 = time.perf_counter()
        after = FeatureExtractor(load_model(after_cfg), after_cfg)
        load_s = time.perf_counter() - t0
        before = FeatureExtractor(after.loaded, before_cfg)
        n = table.num_rows
        tok_before = tok_after = useful_before = useful_after = 0
        cut_before = cut_after = 0
        for start in range(0, n, after_cfg.chunk_rows):
            chunk = table.slice(start, after_cfg.chunk_rows)
            prompts, responses = texts_of(chunk)
            enc = before.encoder.encode(prompts, responses)
            tok_before += computed_tokens([len(e.ids) for e in enc], args.batch_size, True)
            useful_before += sum(len(e.ids) for e in enc)
            cut_before += sum(e.prompt_truncated for e in enc)
            groups = after.encoder.encode_pairs(prompts[: chunk.num_rows], responses[: chunk.num_rows], responses[chunk.num_rows :])
            tok_after += group_computed_tokens(groups, args.batch_size)
            useful_after += sum(len(g.prefix) + sum(len(p) for p in g.parts) for g in groups)
            cut_after += 2 * sum(g.prompt_truncated for g in groups)
        result: dict = {
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {after.loaded.device}, torch {torch.__version__}",
            "model": after.loaded.model_id, "dtype": after.loaded.dtype_name, "max_tokens": args.max_tokens,
            "batch_size_texts": args.batch_size, "pairs_total": n,
            "computed_tokens_per_pair_before": tok_before / n, "computed_tokens_per_pair_after": tok_after / n,
            "computed_tokens_ratio": tok_before / tok_after,
            "real_tokens_per_pair_before": useful_before / n, "real_tokens_per_pair_after": useful_after / n,
            "real_tokens_ratio": useful_before / useful_after,
            "texts_with_prompt_cut_before": cut_before, "texts_with_prompt_cut_after": cut_after,
            "model_load_s": load_s,
        }
        if args.rows:
            sub = table.slice(0, args.rows)
            digest = read_digest(all_path) or ""
            wall, stores = {}, {}
            for name, ex in (("before", before), ("after", after)):
                store = FeatureStore.create(str(Path(tmp) / f"{name}.zarr"), n_rows=sub.num_rows, dim=ex.dim,
                                            chunk_rows=ex.config.chunk_rows, provenance=ex.provenance(digest))
                t0 = time.perf_counter()
                st = extract_features(sub, store, ex.config, extractor=ex, show_progress=False)
                wall[name] = (time.perf_counter() - t0, st.computed_tokens, st.tokens)
                stores[name] = store.read_all()
            prompts, responses = texts_of(sub)
            m = sub.num_rows
            groups = after.encoder.encode_pairs(prompts[:m], responses[:m], responses[m:])
            t0 = time.perf_counter()
            ref = after.run_groups(groups, GroupRunner(after.engine.run, args.batch_size), reuse_prefix=False)
            ref_s = time.perf_counter() - t0
            ref_rows = ref.pooled[("response_mean", -1)].numpy()
            got = np.empty_like(ref_rows)
            got[0::2], got[1::2] = stores["after"]
            rel = np.linalg.norm(got - ref_rows, axis=1) / np.linalg.norm(ref_rows, axis=1)
            b_rows = np.empty_like(ref_rows)
            b_rows[0::2], b_rows[1::2] = stores["before"]
            rel_b = (np.linalg.norm(got - b_rows, axis=1) / np.linalg.norm(b_rows, axis=1))
            identical = [2 * i + k for i, g in enumerate(groups) for k in range(2)
                         if g.prefix + g.parts[k] == before.encoder.encode([prompts[i]], [responses[i + k * m]])[0].ids]
            result.update({
                "timing_pairs": m,
                "wall_s_before": wall["before"][0], "wall_s_after": wall["after"][0],
                "wall_ratio": wall["before"][0] / wall["after"][0],
                "subset_computed_tokens_per_pair_before": wall["before"][1] / m,
                "subset_computed_tokens_per_pair_after": wall["after"][1] / m,
                "reference_full_pass_s": ref_s,
                "max_rel_diff_shared_vs_full_same_tokens": float(rel.max()),
                "texts_with_identical_tokens_in_both_modes": len(identical),
                "max_rel_diff_after_vs_before_on_identical_texts": float(rel_b[identical].max()) if identical else None,
            })
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "mathdial" / "test.jsonl"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--rows", type=int, default=64, help="pairs to time; 0 = padding statistics only")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--prefix-sharing", action="store_true", help="before/after the shared prompt pass (see the docstring)")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    if args.prefix_sharing:
        result = prefix_sharing(args)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return

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
            dim=ex.dim,
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
