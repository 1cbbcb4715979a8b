"""COALA against DPO on the same held-out pairs, from the product's own outputs: paired accuracy and compute.

Every input is a file the product wrote, so the comparison is of the runs users make:

- ``--scores NAME=FILE`` (repeatable): per-pair rewards (``pair_id``, ``reward_chosen``, ``reward_rejected``):
  ``coala baseline --method dpo --output D`` writes ``D/scores.parquet``; ``coala score --model-uri HEAD
  --features STORE --output F.parquet`` scores a store's pairs with a COALA head.
- ``--dpo D``: the DPO run's ``metrics.json`` (training and scoring compute, measured and analytic).
- ``--extraction F``: the JSON line ``coala features extract`` prints (tokens, computed tokens, seconds) for the
  store the head was trained and scored on; ``--head HEAD``: the head's training record (solver FLOPs), and
  ``--train-seconds``: the wall time of the ``coala train`` that wrote it.

Prints accuracy with a group-bootstrap 95% interval for each method on the ``--split`` pairs of ``--pairs``,
every paired difference with its interval and exact McNemar p-value, and COALA / DPO compute: wall seconds
and analytic TFLOPs (the project's one convention: forward 2NT, backward 4NT; DPO adds its reference's
forward; COALA's extraction: the decoder over its computed positions plus the output layer over the positions it
ran on for the likelihood columns, as the extraction reports it). The paper's headline is 17.6% (COALA / DPO
TFLOPs, Llama-3.1-8B, extraction left out).

    .venv/bin/python benchmarks/head_to_head.py --pairs P --split test --scores COALA=coala.parquet \\
        --scores DPO=dpo/scores.parquet --dpo dpo --extraction extract.json --head head --out h2h.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.errors import DataError  # noqa: E402
from coala_core.evaluation.stats import compare_methods, group_bootstrap_means, interval, pair_scores  # noqa: E402
from coala_core.report import md_table  # noqa: E402

PAPER_RATIO = 0.176


def _split_groups(pairs: Path, split: str) -> dict[str, str]:
    from storage.pairs import read_pairs

    t = read_pairs(pairs)
    ids, splits, groups = (t.column(c).to_pylist() for c in ("pair_id", "split", "group_id"))
    out = {str(i): str(g) for i, s, g in zip(ids, splits, groups, strict=True) if s == split}
    if not out:
        raise DataError(f"{pairs}: no pairs in the {split!r} split")
    return out


def _rewards(path: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["pair_id", "reward_chosen", "reward_rejected"]).to_pydict()
    at = {str(p): k for k, p in enumerate(t["pair_id"])}
    missing = [i for i in ids if i not in at]
    if missing:
        raise DataError(f"{path}: {len(missing)} held-out pairs have no reward (first: {missing[0]})")
    rows = [at[i] for i in ids]
    return (np.asarray(t["reward_chosen"], np.float64)[rows], np.asarray(t["reward_rejected"], np.float64)[rows])


def _coala_compute(extraction: Path, head: Path, train_seconds: float) -> dict[str, Any]:
    ext = json.loads(extraction.read_text().strip().splitlines()[-1])
    solver = dict(json.loads((head / "head.json").read_text())["training"].get("compute") or {})
    return {"extraction": {"seconds": float(ext["seconds"]), "tflops": float(ext["flops"]) / 1e12,
                           "computed_tokens": int(ext["computed_tokens"]), "head_tokens": int(ext["head_tokens"]),
                           "rows": int(ext["rows"])},
            "training": {"seconds": train_seconds,
                         "tflops": (float(solver.get("phase1_flops", 0.0)) + float(solver.get("phase2_flops", 0.0))) / 1e12,
                         "record": solver}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--scores", action="append", required=True, metavar="NAME=FILE")
    ap.add_argument("--dpo", type=Path, required=True, help="the DPO run's --output directory")
    ap.add_argument("--extraction", type=Path, required=True, help="`coala features extract` JSON output")
    ap.add_argument("--head", type=Path, required=True, help="the COALA head directory (solver FLOPs in head.json)")
    ap.add_argument("--train-seconds", type=float, required=True, help="wall time of the `coala train` that wrote it")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)

    groups_of = _split_groups(a.pairs, a.split)
    ids = sorted(groups_of)
    groups = np.array([groups_of[i] for i in ids])
    rewards = {}
    for spec in a.scores:
        name, _, file = spec.partition("=")
        rewards[name] = _rewards(Path(file), ids)
    rows = []
    for name, (r_w, r_l) in rewards.items():
        s = pair_scores(r_w, r_l)
        lo, hi = interval(group_bootstrap_means(s, groups, n_boot=a.n_boot, seed=0)[:, 0])
        rows.append({"method": name, "accuracy": float(s.mean()), "ci95": f"[{lo:.3f}, {hi:.3f}]"})
    paired = [c.to_dict() for c in compare_methods(rewards, groups, n_boot=a.n_boot, seed=0)]

    dpo = json.loads((a.dpo / "metrics.json").read_text())
    train, score = dpo["compute"]["dpo_train"], dpo["compute"]["dpo_score"]
    coala = _coala_compute(a.extraction, a.head, a.train_seconds)
    dpo_s, dpo_tf = train["seconds"] + score["seconds"], train["tflops"] + score["tflops"]
    coala_s = coala["extraction"]["seconds"] + coala["training"]["seconds"]
    coala_tf = coala["extraction"]["tflops"] + coala["training"]["tflops"]
    compute = [
        {"stage": "COALA extraction (all splits)", "seconds": coala["extraction"]["seconds"],
         "tflops": coala["extraction"]["tflops"]},
        {"stage": "COALA Phase I + II (solver)", "seconds": coala["training"]["seconds"],
         "tflops": coala["training"]["tflops"]},
        {"stage": f"DPO training ({train['steps']} of {train['max_steps']} steps)", "seconds": train["seconds"],
         "tflops": train["tflops"]},
        {"stage": f"DPO scoring ({dpo['n_test_pairs']} pairs, policy + reference)", "seconds": score["seconds"],
         "tflops": score["tflops"]},
    ]
    ratio = {"tflops": coala_tf / dpo_tf, "seconds": coala_s / dpo_s, "paper_tflops": PAPER_RATIO,
             "dpo_peak_rss_gib": dpo["peak_rss_gib"]}
    print(f"{len(ids)} {a.split} pairs of {a.pairs}\n")
    print(md_table(rows) + "\n")
    print(md_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in paired]) + "\n")
    print(md_table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in compute]) + "\n")
    print(f"COALA / DPO: {ratio['tflops']:.3f} of the TFLOPs ({coala_tf:.1f} / {dpo_tf:.1f}), "
          f"{ratio['seconds']:.3f} of the wall time ({coala_s:.0f} s / {dpo_s:.0f} s); the paper: {PAPER_RATIO:.3f} "
          "of the TFLOPs (Llama-3.1-8B, extraction left out)")
    result = {"n_pairs": len(ids), "split": a.split, "accuracy": rows, "paired": paired, "compute": compute,
              "coala_compute": coala, "ratio": ratio}
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
