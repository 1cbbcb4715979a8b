"""DPO by K-fold group cross-validation on the feature sweep's own folds, so DPO's out-of-fold rewards pair with
every head of the sweep over all pairs (a 3-point difference needs all 2,404 MathDial pairs, not 221).

    .venv/bin/python benchmarks/dpo_cv.py --pairs P --out DIR [--record REC] [--folds 3,4] [--config YAML]
    .venv/bin/python benchmarks/dpo_cv.py --pairs P --sweep SWEEP.json --out DIR [--record REC] --merge

Each fold is one run of the product's command, ``coala baseline --method dpo``, on a pairs file whose split column
puts that fold's pairs in ``test`` and every other pair in ``train`` (the sweep's heads also chose their
hyper-parameters on validation groups inside those training folds; DPO uses none). The folds are
``coala_core.evaluation.cv.group_folds`` over the pairs file's groups (``--k``, ``--seed``: ``features.py``'s
defaults, 5 and 0), the same folds the sweep draws; given ``--sweep``, its recorded folds are used and must agree.
Its trainer checkpoints live under ``DIR/fold_K/checkpoints``, so a fold that was cut continues from its last
checkpoint when this script runs again, and finished folds are skipped: the five runs (about 1.4 hours each on a
quiet 2-core CPU, scoring included) can span several sittings.

``--record REC``: each finished fold's held-out rewards and metrics are also copied to ``REC/fold_K.scores.parquet``
and ``REC/fold_K.metrics.json`` (about 175 KB a fold; commit them), and a fold recorded there counts as finished, so
a wiped work directory loses at most the fold in progress. ``benchmarks/results/dpo_cv`` holds this repo's.

``--merge``: DPO's out-of-fold rewards on the pairs of the finished folds against every method of the sweep JSON
on the same pairs: accuracy with a group-bootstrap interval, the paired difference with its interval and the
exact McNemar p-value (``coala_core.evaluation.stats``). ``--prior SUMMARY.json`` adds folds known only by their
counts (``benchmarks/results/dpo_cv/folds_0-2.summary.json``: folds 0-2 ran before ``--record`` existed and their
per-pair rewards were lost with the machine): see ``combine``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.errors import DataError  # noqa: E402
from coala_core.evaluation import evaluate_rewards  # noqa: E402
from coala_core.evaluation.cv import group_folds  # noqa: E402
from coala_core.evaluation.stats import binomial_two_sided, compare_pair, pair_scores  # noqa: E402
from coala_core.report import md_table  # noqa: E402
from storage.atomic import atomic_write_bytes  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_json(path: Path) -> dict[str, Any]:
    """A sweep JSON, plain or gzipped (``.json.gz``: how benchmarks/results keeps one)."""
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


def fold_of(ids: list[str], groups: list[str], k: int, seed: int, sweep: dict[str, Any] | None) -> dict[str, int]:
    """pair_id -> fold: ``group_folds`` over the pairs file's groups, checked against the sweep's folds if given."""
    folds = {i: int(f) for i, f in zip(ids, group_folds(groups, k, seed), strict=True)}
    if sweep is None:
        return folds
    recorded = dict(zip(sweep["pair_ids"], sweep["fold"], strict=True))
    missing = [i for i in ids if i not in recorded]
    if missing or len(recorded) != len(ids):
        raise DataError(f"the sweep's folds cover {len(recorded)} pairs, the pairs file has {len(ids)} "
                        f"({len(missing)} without a fold, first {missing[:1]})")
    differ = [i for i in ids if recorded[i] != folds[i]]
    if differ or int(sweep["folds"]) != k:
        raise DataError(f"the sweep's folds (K = {sweep['folds']}) differ from group_folds(K = {k}, seed = {seed}) "
                        f"on {len(differ)} pairs (first {differ[:1]}): pass the sweep's --k and --seed")
    return folds


def fold_pairs(pairs: Path, folds: dict[str, int], k: int, path: Path) -> Path:
    """The pairs file with fold ``k`` as ``test`` and the rest as ``train`` (written once, atomically)."""
    import pyarrow as pa

    from storage.pairs import read_pairs, write_pairs

    if not path.exists():
        t = read_pairs(pairs)
        split = pa.array(["test" if folds[str(i)] == k else "train" for i in t.column("pair_id").to_pylist()])
        write_pairs(t.set_column(t.schema.get_field_index("split"), "split", split), path,
                    extra_metadata={"cv_fold": str(k)})
    return path


def recorded(args: argparse.Namespace, k: int) -> Path | None:
    """The fold's durable copy (scores.parquet + metrics.json) under --record, if there is one."""
    if args.record is None:
        return None
    scores, metrics = args.record / f"fold_{k}.scores.parquet", args.record / f"fold_{k}.metrics.json"
    return scores if scores.is_file() and metrics.is_file() else None


def finished(out: Path) -> bool:
    m = out / "metrics.json"
    return m.is_file() and not json.loads(m.read_text()).get("stopped_early", True)


def fold_scores(args: argparse.Namespace, k: int) -> Path | None:
    """The held-out scores of fold k, from the work directory or else from the record; None if not finished."""
    if finished(args.out / f"fold_{k}"):
        return args.out / f"fold_{k}" / "scores.parquet"
    return recorded(args, k)


def record(args: argparse.Namespace, k: int) -> None:
    """Copy a finished fold's scores and metrics under --record (each written atomically)."""
    if args.record is None:
        return
    for src, name in (("scores.parquet", f"fold_{k}.scores.parquet"), ("metrics.json", f"fold_{k}.metrics.json")):
        atomic_write_bytes(args.record / name, (args.out / f"fold_{k}" / src).read_bytes())
    log(f"fold {k}: recorded under {args.record}")


def run_folds(args: argparse.Namespace, folds: dict[str, int]) -> None:
    coala = str(Path(sys.executable).parent / "coala")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    for k in args.fold_list:
        out = args.out / f"fold_{k}"
        if finished(out):
            log(f"fold {k}: finished earlier ({out / 'metrics.json'})")
            if recorded(args, k) is None:
                record(args, k)
            continue
        if recorded(args, k) is not None:
            log(f"fold {k}: finished earlier (recorded in {args.record})")
            continue
        pairs_k = fold_pairs(args.pairs, folds, k, args.out / f"fold_{k}.pairs.parquet")
        cmd = [coala, "baseline", "--method", "dpo", "--pairs", str(pairs_k), "--output", str(out), "--split", "test",
               "--workdir", str(args.out / ".coala"), "--experiment", args.experiment]
        if args.config:
            cmd += ["--config", str(args.config)]
        if args.model:
            cmd += ["--model", args.model]
        log(f"fold {k}: {' '.join(cmd)}")
        t0 = time.perf_counter()
        fold_log = args.out / f"fold_{k}.log"  # the trainer's per-step lines as they come (appended across sittings)
        with open(fold_log, "a") as fh:
            res = subprocess.run(cmd, env=env, text=True, stdout=fh, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            raise SystemExit(f"fold {k} failed (exit {res.returncode}); see {fold_log}")
        summary = [ln for ln in fold_log.read_text().splitlines() if ln.startswith("dpo: ")]
        log(f"fold {k}: {summary[-1] if summary else 'done'} ({time.perf_counter() - t0:.0f} s)")
        record(args, k)


def merge(args: argparse.Namespace, sweep: dict[str, Any], groups_of: dict[str, str]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    dpo: dict[str, tuple[float, float]] = {}
    done = [k for k in range(int(sweep["folds"])) if fold_scores(args, k) is not None]
    for k in done:
        t = pq.read_table(fold_scores(args, k)).to_pydict()
        dpo.update({str(p): (rw, rl) for p, rw, rl in zip(t["pair_id"], t["reward_chosen"], t["reward_rejected"], strict=True)})
    if not dpo:
        raise DataError(f"{args.out}: no finished fold to merge")
    ids = [i for i in sweep["pair_ids"] if i in dpo]
    at = {p: j for j, p in enumerate(sweep["pair_ids"])}
    rows = [at[i] for i in ids]
    groups = np.array([groups_of[i] for i in ids])
    methods = {"dpo": (np.array([dpo[i][0] for i in ids]), np.array([dpo[i][1] for i in ids]))}
    methods.update({name: (np.asarray(r["r_w"])[rows], np.asarray(r["r_l"])[rows]) for name, r in sweep["rewards"].items()})
    dpo_s = pair_scores(*methods["dpo"])
    table, parts = [], {}
    for name, (r_w, r_l) in methods.items():  # the product's own evaluation (ties count 1/2, group bootstrap)
        ev = evaluate_rewards(r_w, r_l, groups=groups, n_boot=args.n_boot, seed=0)
        lo, hi = ev.ci["accuracy"]
        score = pair_scores(r_w, r_l)
        row: dict[str, Any] = {"method": name, "accuracy": round(float(ev.metrics["accuracy"]), 4),
                               "ci95": f"[{lo:.4f}, {hi:.4f}]"}
        row.update({"minus DPO [95% CI]": "reference", "only this / only DPO": "", "McNemar p": ""})
        parts[name] = {"correct": float(score.sum()), "ci95": [lo, hi]}
        if name != "dpo":
            c = compare_pair(name, score, "dpo", dpo_s, groups, n_boot=args.n_boot, seed=0)
            row.update({"minus DPO [95% CI]": f"{c.difference:+.4f} [{c.ci_lo:+.4f}, {c.ci_hi:+.4f}]",
                        "only this / only DPO": f"{c.only_a} / {c.only_b}", "McNemar p": f"{c.p_value:.3g}"})
            parts[name].update(only_this=c.only_a, only_dpo=c.only_b, diff_ci95=[c.ci_lo, c.ci_hi])
        table.append(row)
    text = md_table(table)
    print(f"DPO out of fold on {len(ids)} pairs (folds {done} of {sweep['folds']})\n\n{text}")
    result: dict[str, Any] = {"folds_done": done, "n_pairs": len(ids), "table": table, "counts": parts}
    if args.prior is not None:
        prior = json.loads(args.prior.read_text())
        both = sorted(set(prior["folds"]) & set(done))
        if both:
            raise DataError(f"{args.prior}: folds {both} are both in the prior summary and finished here")
        combined = combine(prior, {"folds": done, "n_pairs": len(ids), "methods": parts})
        result["combined"] = combined
        ctext = md_table(combined["table"])
        print(f"\nWith the prior summary of folds {prior['folds']} ({prior['n_pairs']} pairs): "
              f"{combined['n_pairs']} pairs, folds {combined['folds']}\n\n{ctext}")
        text += f"\nWith folds {prior['folds']} from {args.prior.name} ({combined['n_pairs']} pairs):\n\n{ctext}"
    (args.out / "merged.json").write_text(json.dumps(result, indent=2))
    (args.out / "merged.md").write_text(text + "\n")
    return result


def combine(prior: dict[str, Any], here: dict[str, Any]) -> dict[str, Any]:
    """Folds whose per-pair rewards are summarised only (``prior``: counts and group-bootstrap intervals) with
    folds merged pair by pair (``here``). The folds hold disjoint groups, so: accuracy and the paired difference
    from the summed counts (exact), the exact McNemar p-value from the summed discordant counts, and a 95% interval
    from the two parts' bootstrap standard errors (half-width / 1.96) weighted by their pairs (normal approximation;
    per-pair data of every fold would allow a group bootstrap over all pairs)."""
    n1, n2 = int(prior["n_pairs"]), int(here["n_pairs"])
    n = n1 + n2
    w1, w2 = n1 / n, n2 / n

    def se(ci: list[float]) -> float:
        return (float(ci[1]) - float(ci[0])) / (2 * 1.959964)

    def ci(mid: float, a: list[float], b: list[float], sign: str = "") -> str:
        h = 1.959964 * float(np.hypot(w1 * se(a), w2 * se(b)))
        return f"[{mid - h:{sign}.4f}, {mid + h:{sign}.4f}]"

    table = []
    dpo1, dpo2 = prior["methods"]["dpo"], here["methods"]["dpo"]
    for name, m2 in here["methods"].items():
        m1 = prior["methods"].get(name)
        if m1 is None:
            continue
        acc = (m1["correct"] + m2["correct"]) / n
        row: dict[str, Any] = {"method": name, "accuracy": round(acc, 4), "ci95": ci(acc, m1["ci95"], m2["ci95"])}
        row.update({"minus DPO [95% CI]": "reference", "only this / only DPO": "", "McNemar p": ""})
        if name != "dpo":
            b, c = int(m1["only_this"]) + int(m2["only_this"]), int(m1["only_dpo"]) + int(m2["only_dpo"])
            diff = (m1["correct"] + m2["correct"] - dpo1["correct"] - dpo2["correct"]) / n
            row.update({"minus DPO [95% CI]": f"{diff:+.4f} {ci(diff, m1['diff_ci95'], m2['diff_ci95'], '+')}",
                        "only this / only DPO": f"{b} / {c}", "McNemar p": f"{binomial_two_sided(b, b + c):.3g}"})
        table.append(row)
    return {"folds": sorted([*prior["folds"], *here["folds"]]), "n_pairs": n, "table": table}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, required=True, help="the pairs file the sweep ran on")
    ap.add_argument("--sweep", type=Path, default=None,
                    help="a benchmarks/features.py JSON, plain or .json.gz (its folds and rewards; needed by --merge)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--record", type=Path, default=None,
                    help="durable copies of finished folds' scores and metrics (for example benchmarks/results/dpo_cv)")
    ap.add_argument("--k", type=int, default=5, help="folds (features.py's --folds)")
    ap.add_argument("--seed", type=int, default=0, help="fold seed (features.py's --seed)")
    ap.add_argument("--folds", default=None, help="comma-separated folds to run (default: all)")
    ap.add_argument("--config", type=Path, default=None, help="llm_baseline YAML for coala baseline")
    ap.add_argument("--model", default=None, help="coala baseline --model (default: the bundled SmolLM2)")
    ap.add_argument("--experiment", default="coala-dpo-cv")
    ap.add_argument("--merge", action="store_true", help="merge the finished folds instead of running")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--prior", type=Path, default=None,
                    help="with --merge: a JSON summary (counts, intervals) of other folds whose per-pair rewards are lost")
    args = ap.parse_args(argv)

    from storage.pairs import read_pairs

    if args.merge and args.sweep is None:
        ap.error("--merge needs --sweep (the heads' out-of-fold rewards)")
    sweep = read_json(args.sweep) if args.sweep else None
    t = read_pairs(args.pairs)
    ids = [str(i) for i in t.column("pair_id").to_pylist()]
    groups = [str(g) for g in t.column("group_id").to_pylist()]
    folds = fold_of(ids, groups, args.k, args.seed, sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args, sweep, dict(zip(ids, groups, strict=True)))
        return
    args.fold_list = [int(x) for x in args.folds.split(",")] if args.folds else list(range(args.k))
    run_folds(args, folds)

if __name__ == "__main__":
    main()
