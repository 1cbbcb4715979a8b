"""Benchmark: plain, best-of-n reranked and head-guided decoding on held-out EduFeedback-MathDial prompts.

In one process with one loaded backbone (the head's own LM, found from the head's provenance and checked):
1. each mode decodes the same held-out prompts with the same seed and sampling settings (temperature, top-p,
   repetition penalty, max new tokens); tokens/s counts every sampled token (all n candidates of rerank) over
   decoding plus the mode's own head scoring (rerank's candidates, guidance's extensions, scored from the
   decoding's KV cache where the head's truncation allows: see coala_core/generation/guidance.py); the ratio to
   plain decoding is printed;
2. every reply is scored by the head (mean head score per mode) and by the zero-shot likelihood score: the mean
   log-probability per token of the reply given the prompt under the same frozen LM;
3. win rate of each mode against plain decoding, prompt by prompt, under the head and under the likelihood
   score (a tie counts one half).

Run: .venv/bin/python benchmarks/generate.py --model-uri HEAD_OR_URI --pairs PAIRS [--split test] [--prompts 6]
     [--max-new-tokens 48] [--n 4] [--guidance-scale 2.0] [--modes plain,rerank,guided] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from coala_core.generation import GenerateConfig, TextGenerator
from storage.pairs import read_pairs
from tasks.model_uri import open_scorer

MODES = ("plain", "rerank", "guided")


def held_out_prompts(pairs: Path, split: str, k: int) -> list[list[dict[str, str]]]:
    """The prompts of the first ``k`` groups of ``split`` (one prompt per group: its longest, the last turn)."""
    table = read_pairs(pairs)
    by_group: dict[str, list[dict[str, str]]] = {}
    for row in table.to_pylist():
        if row["split"] == split:
            prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
            if len(prompt) >= len(by_group.get(row["group_id"], [])):
                by_group[row["group_id"]] = prompt
    if not by_group:
        raise SystemExit(f"{pairs}: no {split} rows")
    return [by_group[g] for g in sorted(by_group)[:k]]


def loglik_per_token(gen: TextGenerator, prompts: list, replies: list[str]) -> np.ndarray:
    """Mean log p(reply token | prompt, earlier reply tokens) under the backbone; NaN for an empty reply."""
    model, tok = gen.model, gen.tokenizer
    device = next(model.parameters()).device
    out = np.full(len(replies), np.nan)
    for i, (p, r) in enumerate(zip(prompts, replies, strict=True)):
        ctx = gen.prompt_ids(p)
        ids = list(tok(r, add_special_tokens=False)["input_ids"])
        if not ids:
            continue
        x = torch.tensor([ctx + ids], device=device)
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=x).logits[0, len(ctx) - 1:-1].float(), dim=-1)
        out[i] = float(logp.gather(1, torch.tensor(ids, device=device)[:, None]).mean())
    return out


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.mean(np.where(a[ok] > b[ok], 1.0, np.where(a[ok] == b[ok], 0.5, 0.0)))) if ok.any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-uri", required=True, help="head directory, models:/NAME@ALIAS or runs:/ID/PATH")
    ap.add_argument("--pairs", type=Path, required=True, help="pairs Parquet; prompts come from --split")
    ap.add_argument("--split", default="test")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--guidance-scale", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, plain first (the baseline)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    scorer, _ = open_scorer(args.model_uri, backbone=args.backbone)
    prompts = held_out_prompts(args.pairs, args.split, args.prompts)
    base = GenerateConfig.build(max_new_tokens=args.max_new_tokens, n=args.n, guidance_scale=args.guidance_scale,
                                batch_size=args.batch_size, seed=args.seed)
    modes = [m for m in args.modes.split(",") if m]
    if modes[:1] != ["plain"] or not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: plain first, then any of {MODES}; got {args.modes!r}")
    runs = {}
    for mode in modes:
        gen = TextGenerator(scorer, base.replace(mode=mode))
        results, stats = gen.generate(prompts)
        replies = [g.response for g in results]
        runs[mode] = {"stats": stats.to_dict(), "head": np.array([g.reward for g in results]),
                      "loglik": loglik_per_token(gen, prompts, replies), "replies": replies}
        print(f"{mode:>7}: {stats.tokens} tokens in {stats.seconds:.1f} s = {stats.tokens_per_second:.1f} tokens/s; "
              f"mean head score {np.nanmean(runs[mode]['head']):.4f}; mean loglik/token {np.nanmean(runs[mode]['loglik']):.3f}; "
              f"x plain {stats.tokens_per_second / runs['plain']['stats']['tokens_per_second']:.3f}; win vs plain: head "
              f"{win_rate(runs[mode]['head'], runs['plain']['head']):.3f}, loglik "
              f"{win_rate(runs[mode]['loglik'], runs['plain']['loglik']):.3f}", flush=True)
        if mode == "guided":
            print(f"         {stats.guidance_calls} guided steps, {stats.scored_extensions} extensions scored: "
                  f"{stats.extensions_cached} from the decoding cache, {stats.extensions_fresh} from a cut context "
                  f"(prompt longer than the head's max_tokens allows), {stats.extensions_full} by the full forward",
                  flush=True)
    plain = runs["plain"]
    summary = {}
    for mode in modes:
        r = runs[mode]
        summary[mode] = {
            "tokens_per_second": r["stats"]["tokens_per_second"],
            "speed_vs_plain": r["stats"]["tokens_per_second"] / plain["stats"]["tokens_per_second"],
            "mean_head_score": float(np.nanmean(r["head"])),
            "mean_loglik_per_token": float(np.nanmean(r["loglik"])),
            "win_rate_vs_plain_head": win_rate(r["head"], plain["head"]),
            "win_rate_vs_plain_loglik": win_rate(r["loglik"], plain["loglik"]),
            "stats": r["stats"],
        }
    print("\nmode     tokens/s  x plain  head score  loglik/token  win vs plain (head)  win vs plain (loglik)")
    for mode, s in summary.items():
        print(f"{mode:<8} {s['tokens_per_second']:8.1f}  {s['speed_vs_plain']:7.3f}  {s['mean_head_score']:10.4f}  "
              f"{s['mean_loglik_per_token']:12.3f}  {s['win_rate_vs_plain_head']:19.3f}  {s['win_rate_vs_plain_loglik']:21.3f}")
    if args.out:
        report = {"args": {k: str(v) for k, v in vars(args).items()}, "config": base.to_dict(), "summary": summary,
                  "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
                  "replies": {m: runs[m]["replies"] for m in modes}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
