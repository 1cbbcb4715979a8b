"""Merge the JSON outputs of several ``benchmarks/features.py`` runs on the same pairs and folds into one table.

Runs made in parallel processes (one COALA recipe each, as on a lent GPU machine) each compare their heads with
their own best linear head; this script puts every head of every run in one table, checks that the runs share
pair ids and folds (so the out-of-fold rewards are comparable pair by pair), and compares each head with one or
more references: accuracy [95% group-bootstrap CI], the paired difference [CI] and the exact McNemar p.

    .venv/bin/python benchmarks/features_merge.py --pairs sweep/mathdial_all.parquet sweep/final/gpu/*.json \\
        --ref "last_L15|linear_bt" --ref "response_mean_L15+lik|coala"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.evaluation.stats import compare_pair, group_bootstrap_means, interval, pair_scores  # noqa: E402
from storage.pairs import read_pairs  # noqa: E402


def merge(paths: list[str]) -> tuple[list[str], list[int], dict[str, np.ndarray], dict[str, float]]:
    """Pair ids, folds, per-pair scores and CV seconds of every ``variant|method`` of the runs; SystemExit when
    two runs were made on different pairs or folds."""
    ids, folds = None, None
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for path in paths:
        run = json.loads(Path(path).read_text(encoding="utf-8"))
        if ids is None:
            ids, folds = run["pair_ids"], run["fold"]
        elif run["pair_ids"] != ids or run["fold"] != folds:
            raise SystemExit(f"{path}: other pairs or folds than {paths[0]}; runs are compared pair by pair")
        for key, rw in run["rewards"].items():
            s = pair_scores(np.asarray(rw["r_w"]), np.asarray(rw["r_l"]))
            if key in scores and not np.array_equal(scores[key], s):
                raise SystemExit(f"{path}: {key} differs from an earlier run's {key}")
            scores[key] = s
        for row in run["rows"]:
            seconds[f"{row['features']}|{row['method']}"] = float(row.get("seconds", 0.0))
    if ids is None or folds is None:
        raise SystemExit("no runs given")
    return ids, folds, scores, seconds


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="features.py --out JSON files")
    ap.add_argument("--pairs", required=True, help="the pairs Parquet (its group_id column gives the bootstrap groups)")
    ap.add_argument("--ref", action="append", default=[], help="'variant|method' to compare every head with")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ids, _folds, scores, seconds = merge(args.runs)
    table = read_pairs(args.pairs)
    group_of = dict(zip(table.column("pair_id").to_pylist(), table.column("group_id").to_pylist(), strict=True))
    groups = np.asarray([group_of[p] for p in ids], dtype=str)
    refs = args.ref or [max(scores, key=lambda k: scores[k].mean() if k.endswith("|linear_bt") else -1.0)]
    for ref in refs:
        if ref not in scores:
            raise SystemExit(f"--ref {ref!r}: not among {sorted(scores)}")
    head = "| features | head | accuracy [95% CI] | " + " | ".join(
        f"vs {ref} [95% CI], only this / only ref, McNemar p" for ref in refs) + " | CV s |"
    lines = [head, "|" + "---|" * (4 + len(refs))]
    for key in sorted(scores, key=lambda k: -scores[k].mean()):
        s = scores[key]
        lo, hi = interval(group_bootstrap_means(s, groups, n_boot=args.n_boot, seed=args.seed)[:, 0])
        cells = []
        for ref in refs:
            if key == ref:
                cells.append("reference")
                continue
            c = compare_pair(key, s, ref, scores[ref], groups, n_boot=args.n_boot, seed=args.seed)
            cells.append(f"{c.difference:+.4f} [{c.ci_lo:+.4f}, {c.ci_hi:+.4f}], {c.only_a} / {c.only_b}, "
                         f"p = {c.p_value:.3g}")
        variant, method = key.split("|", 1)
        lines.append(f"| {variant} | {method} | {s.mean():.4f} [{lo:.4f}, {hi:.4f}] | " + " | ".join(cells)
                     + f" | {seconds.get(key, 0.0):.0f} |")
    text = "\n".join(lines)
    print(f"{len(ids)} pairs, {np.unique(groups).size} groups, {len(args.runs)} runs\n\n{text}")
    return text


if __name__ == "__main__":
    main()
