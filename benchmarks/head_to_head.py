"""COALA against DPO (or ORPO) on the same held-out pairs, from the product's own outputs: paired accuracy and compute.

Every input is a file the product wrote, so the comparison is of the runs users make:

- ``--scores NAME=FILE`` (repeatable): per-pair rewards (``pair_id``, ``reward_chosen``, ``reward_rejected``):
  ``coala baseline --method dpo --output D`` writes ``D/scores.parquet``; ``coala score --model-uri HEAD
  --features STORE --output F.parquet`` scores a store's pairs with a COALA head.
- ``--baseline D`` (alias ``--dpo``): the ``metrics.json`` of a ``coala baseline --method dpo|orpo`` run (training
  and scoring compute, measured and analytic; its method names the compute rows and the ratio).
- ``--extraction F``: the JSON line ``coala features extract`` prints (tokens, computed tokens, seconds) for the
  store the head was trained and scored on, and ``--extraction-time`` its ``/usr/bin/time -v`` log (peak RSS);
  ``--head HEAD``: the head's training record (solver FLOPs); ``--train-time``: the ``/usr/bin/time -v`` log of
  the ``coala train`` that wrote it (wall time, peak RSS).

Prints accuracy with a group-bootstrap 95% interval for each method on the ``--split`` pairs of ``--pairs``,
every paired difference with its interval and exact McNemar p-value, and COALA / DPO compute: wall seconds
and analytic TFLOPs (the project's one convention: forward 2NT, backward 4NT; DPO adds its reference's
forward; COALA's extraction: the decoder over its computed positions plus the output layer over the positions it
ran on for the likelihood columns, as the extraction reports it). The paper's headline is 17.6% (COALA / DPO
TFLOPs, Llama-3.1-8B, extraction left out).

    .venv/bin/python benchmarks/head_to_head.py --pairs P --split test --scores COALA=coala.parquet \\
        --scores DPO=dpo/scores.parquet --baseline dpo --extraction extract.json --extraction-time extract.time \\
        --head head --train-time train.time --out h2h.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.errors import DataError  # noqa: E402
from coala_core.evaluation import evaluate_rewards  # noqa: E402
from coala_core.evaluation.stats import compare_methods  # noqa: E402
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


def gnu_time(path: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (GiB) from a ``/usr/bin/time -v`` log."""
    text = path.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall or not rss:
        raise DataError(f"{path}: not a /usr/bin/time -v log (no wall clock or maximum resident set size line)")
    seconds = sum(float(x) * 60**k for k, x in enumerate(reversed(wall.group(1).split(":"))))
    return {"seconds": seconds, "peak_rss_gib": int(rss.group(1)) / 2**20}


def _coala_compute(extraction: Path, extraction_time: Path, head: Path, train_time: Path) -> dict[str, Any]:
    ext = json.loads(extraction.read_text().strip().splitlines()[-1])
    solver = dict(json.loads((head / "head.json").read_text())["training"].get("compute") or {})
    ext_t, train_t = gnu_time(extraction_time), gnu_time(train_time)
    return {"extraction": {"seconds": float(ext["seconds"]), "tflops": float(ext["flops"]) / 1e12,
                           "computed_tokens": int(ext["computed_tokens"]), "head_tokens": int(ext["head_tokens"]),
                           "rows": int(ext["rows"]), "process_seconds": ext_t["seconds"],
                           "peak_rss_gib": ext_t["peak_rss_gib"]},
            "training": {"seconds": train_t["seconds"], "peak_rss_gib": train_t["peak_rss_gib"],
                         "tflops": (float(solver.get("phase1_flops", 0.0)) + float(solver.get("phase2_flops", 0.0))) / 1e12,
                         "record": solver}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--scores", action="append", required=True, metavar="NAME=FILE")
    ap.add_argument("--baseline", "--dpo", dest="baseline", type=Path, required=True,
                    help="the --output directory of a coala baseline dpo|orpo run")
    ap.add_argument("--extraction", type=Path, required=True, help="`coala features extract` JSON output")
    ap.add_argument("--extraction-time", type=Path, required=True, help="its `/usr/bin/time -v` log (peak RSS)")
    ap.add_argument("--head", type=Path, required=True, help="the COALA head directory (solver FLOPs in head.json)")
    ap.add_argument("--train-time", type=Path, required=True, help="`/usr/bin/time -v` log of the `coala train`")
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
    for name, (r_w, r_l) in rewards.items():  # the product's own evaluation (ties count 1/2, group bootstrap)
        ev = evaluate_rewards(r_w, r_l, groups=groups, n_boot=a.n_boot, seed=0)
        lo, hi = ev.ci["accuracy"]
        rows.append({"method": name, "accuracy": float(ev.metrics["accuracy"]), "ci95": f"[{lo:.3f}, {hi:.3f}]"})
    paired = [c.to_dict() for c in compare_methods(rewards, groups, n_boot=a.n_boot, seed=0)]

    base = json.loads((a.baseline / "metrics.json").read_text())
    method = str(base["method"])
    name = method.upper()
    train, score = base["compute"][f"{method}_train"], base["compute"][f"{method}_score"]
    coala = _coala_compute(a.extraction, a.extraction_time, a.head, a.train_time)
    base_s, base_tf = train["seconds"] + score["seconds"], train["tflops"] + score["tflops"]
    coala_s = coala["extraction"]["seconds"] + coala["training"]["seconds"]
    coala_tf = coala["extraction"]["tflops"] + coala["training"]["tflops"]
    compute = [
        {"stage": "COALA extraction (all splits)", "seconds": coala["extraction"]["seconds"],
         "tflops": coala["extraction"]["tflops"]},
        {"stage": "COALA Phase I + II (solver)", "seconds": coala["training"]["seconds"],
         "tflops": coala["training"]["tflops"]},
        {"stage": f"{name} training ({train['steps']} of {train['max_steps']} steps)", "seconds": train["seconds"],
         "tflops": train["tflops"]},
        {"stage": f"{name} scoring ({base['n_test_pairs']} pairs, "
                  f"{'policy + reference' if method == 'dpo' else 'policy'})", "seconds": score["seconds"],
         "tflops": score["tflops"]},
    ]
    coala_rss = max(coala["extraction"]["peak_rss_gib"], coala["training"]["peak_rss_gib"])
    ratio = {"baseline": method, "tflops": coala_tf / base_tf, "seconds": coala_s / base_s, "paper_tflops": PAPER_RATIO,
             "peak_rss": coala_rss / base["peak_rss_gib"], "coala_peak_rss_gib": coala_rss,
             "baseline_peak_rss_gib": base["peak_rss_gib"]}
    print(f"{len(ids)} {a.split} pairs of {a.pairs}\n")
    print(md_table(rows) + "\n")
    print(md_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in paired]) + "\n")
    print(md_table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in compute]) + "\n")
    print(f"COALA / {name}: {ratio['tflops']:.3f} of the TFLOPs ({coala_tf:.1f} / {base_tf:.1f}), "
          f"{ratio['seconds']:.3f} of the wall time ({coala_s:.0f} s / {base_s:.0f} s); the paper: {PAPER_RATIO:.3f} "
          "of the TFLOPs (Llama-3.1-8B, extraction left out); peak RSS "
          f"{coala_rss:.2f} GiB / {base['peak_rss_gib']:.2f} GiB = {ratio['peak_rss']:.2f}")
    result = {"n_pairs": len(ids), "split": a.split, "accuracy": rows, "paired": paired, "compute": compute,
              "coala_compute": coala, "ratio": ratio}
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
