"""The feature sweep: which features and which head, by K-fold group cross-validation over ALL pairs.

Feature variants are the stores of one directory (``<pooling>_L<layer>.zarr``, as written by
``benchmarks/extract_variants.py`` or ``coala features extract``), each with and without its two likelihood
columns (``loglik_mean``, ``pmi_mean``), plus optional concatenations of stores (``--concat``). Heads: the linear
Bradley-Terry head, the AdamW two-layer ReLU net, COALA (``coala_core.engine.fit_head`` at its default settings
unless ``--coala-variant`` says otherwise), and the zero-shot likelihood scores (nothing fit). Every method
sees the same folds (split by group: every pair held out exactly once; selection on validation groups inside
the training folds), so every row can be compared pair by pair with the best linear head: the table prints
accuracy [95% group-bootstrap CI], the paired difference to the best linear head [CI] and the exact McNemar p.

The linear head runs on every variant (cheap); the AdamW net and COALA on the ``--top`` variants by linear
accuracy (COALA costs minutes per fold on a CPU). ``--coala-variant NAME:JSON`` adds a COALA recipe (a
HeadSpec as JSON, e.g. ``p40:{"phase1":{"n_patterns":40}}``; a top-level ``val_fraction`` changes the share of
training groups held out for selection) run on the best variant: the item-7 candidates.

    nice -n 10 .venv/bin/python benchmarks/features.py --stores sweep/smollm2_t128 \\
        --pairs sweep/mathdial_all.parquet --folds 5 --top 2 --out sweep/b2/sweep_mathdial.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coala_core.baselines import fit_linear_bt, fit_relu_net  # noqa: E402
from coala_core.baselines.zero_shot import zero_shot_scorers  # noqa: E402
from coala_core.evaluation.cv import CVResult, cross_validate, group_folds  # noqa: E402
from coala_core.evaluation.stats import compare_pair, group_bootstrap_means, interval, pair_scores  # noqa: E402
from storage.atomic import atomic_path  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402
from storage.pairs import read_pairs  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def committed_ids(path: Path) -> list[str]:
    """Pair ids of the rows committed contiguously from row 0 (a store still being extracted has a prefix)."""
    store = FeatureStore.open(str(path), mode="r")
    return [str(p) for p in store.pair_ids()[: store.completed_rows]]


def load_store(path: Path, order: dict[str, int]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Chosen and rejected features (n, d) float64 in the pairs file's row order, and the provenance; only the
    pairs of ``order`` (the committed prefix every store has, with ``--partial``)."""
    store = FeatureStore.open(str(path), mode="r")
    n = store.completed_rows
    C, R = (np.empty((n, store.dim), np.float32) for _ in range(2))
    for start, stop, c, r in store.iter_chunks(require_complete=False):
        if stop <= n:
            C[start:stop], R[start:stop] = c, r
    ids = [str(p) for p in store.pair_ids()[:n]]
    keep = [i for i, p in enumerate(ids) if p in order]
    C, R, ids = C[keep], R[keep], [ids[i] for i in keep]
    if len(ids) != len(order) or set(ids) != set(order):
        raise SystemExit(f"{path}: its {len(ids)} pairs are not the pairs file's {len(order)}")
    perm = np.empty(len(ids), dtype=np.int64)
    for i, p in enumerate(ids):
        perm[order[p]] = i
    return C[perm].astype(np.float64), R[perm].astype(np.float64), dict(store.provenance)


def hidden_block(C: np.ndarray, prov: dict[str, Any]) -> slice:
    d = int(prov.get("hidden_size") or C.shape[1])
    n_layers = len(prov.get("layers") or [prov.get("layer", -1)])
    return slice(0, d * n_layers)


def rms_normalise(X: np.ndarray) -> np.ndarray:
    """Each row divided by its root mean square (how stores of several layers scale each layer block)."""
    return X / np.maximum(np.sqrt(np.mean(X * X, axis=1, keepdims=True)), 1e-12)


def fitters_for(names: list[str], width: int, seed: int, coala_spec: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in names:
        if n == "linear_bt":
            out[n] = lambda a, b, c, d: fit_linear_bt(a, b, c, d)
        elif n == "relu_net_adamw":
            out[n] = lambda a, b, c, d: fit_relu_net(a, b, c, d, width=width, seed=seed)
        elif n.startswith("coala"):
            from coala_core.engine.fit import fit_head

            out[n] = lambda a, b, c, d, s=coala_spec: fit_head((a, b), (c, d), s).head
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", required=True, help="directory of <pooling>_L<layer>.zarr stores")
    ap.add_argument("--pairs", required=True, help="the pairs Parquet the stores were extracted from (groups)")
    ap.add_argument("--only", default="", help="comma-separated store names (without .zarr) to use; default all")
    ap.add_argument("--concat", action="append", default=[],
                    help="NAME1+NAME2: hidden blocks of two stores side by side, each row-RMS-normalised")
    ap.add_argument("--partial", action="store_true",
                    help="use the pairs every store has committed so far (stores still being extracted)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--top", type=int, default=2, help="variants (by linear accuracy) that also get AdamW and COALA")
    ap.add_argument("--no-coala", action="store_true")
    ap.add_argument("--coala-variant", action="append", default=[], help="NAME:HeadSpec-JSON, run on the best variant")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results (per-pair out-of-fold rewards included)")
    args = ap.parse_args(argv)
    from coala_core.engine.spec import HeadSpec

    t0 = time.perf_counter()
    table = read_pairs(args.pairs)
    names = sorted(p.name[:-5] for p in Path(args.stores).glob("*.zarr"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    if not names:
        raise SystemExit(f"{args.stores}: no .zarr stores")
    all_ids = [str(p) for p in table.column("pair_id").to_pylist()]
    keep = np.ones(len(all_ids), dtype=bool)
    if args.partial:
        common = set.intersection(*(set(committed_ids(Path(args.stores) / f"{n}.zarr")) for n in names))
        keep = np.array([p in common for p in all_ids])
        log(f"--partial: {int(keep.sum())} of {len(all_ids)} pairs committed in every store")
    pair_ids = [p for p, k in zip(all_ids, keep, strict=True) if k]
    groups = np.asarray(table.column("group_id").to_pylist(), dtype=str)[keep]
    order = {p: i for i, p in enumerate(pair_ids)}
    folds = group_folds(groups, args.folds, args.seed)
    log(f"{len(pair_ids)} pairs, {np.unique(groups).size} groups, {args.folds} folds of "
        f"{np.bincount(folds).tolist()} pairs")
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    zero_shot: dict[str, Any] = {}
    for name in names:
        C, R, prov = load_store(Path(args.stores) / f"{name}.zarr", order)
        hb = hidden_block(C, prov)
        data[f"{name}"] = (C[:, hb], R[:, hb])
        if prov.get("logprob_features"):
            data[f"{name}+lik"] = (C, R)
            if not zero_shot:
                zero_shot = {k: (s.score(C), s.score(R)) for k, s in zero_shot_scorers(prov, C.shape[1]).items()}
        log(f"store {name}: d={C.shape[1]} ({'with' if prov.get('logprob_features') else 'no'} likelihood columns), "
            f"pooling {prov.get('pooling')}, layers {prov.get('layers', prov.get('layer'))}")
    for spec in args.concat:
        a, b = spec.split("+")
        Ca, Ra = data[a]
        Cb, Rb = data[b]
        data[spec] = (np.hstack([rms_normalise(Ca), rms_normalise(Cb)]), np.hstack([rms_normalise(Ra), rms_normalise(Rb)]))
        lik = f"{a}+lik"
        if lik in data:
            data[f"{spec}+lik"] = (np.hstack([data[spec][0], data[lik][0][:, -2:]]),
                                   np.hstack([data[spec][1], data[lik][1][:, -2:]]))

    results: dict[tuple[str, str], np.ndarray] = {}  # (variant, method) -> per-pair scores
    rewards: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}

    def run(variant: str, methods: dict[str, Any], val_fraction: float = 0.15) -> None:
        C, R = data[variant]
        t = time.perf_counter()
        res: CVResult = cross_validate(C, R, groups, methods, k=args.folds, seed=args.seed, val_fraction=val_fraction,
                                       on_fold=lambda rec: log(f"  {variant} fold {rec['fold'] + 1}: " + ", ".join(
                                           f"{m} {v['accuracy']:.3f} ({v['seconds']:.0f} s)" for m, v in rec["methods"].items())))
        assert np.array_equal(res.folds, folds)
        for m, (r_w, r_l) in res.rewards.items():
            results[(variant, m)] = pair_scores(r_w, r_l)
            rewards[f"{variant}|{m}"] = {"r_w": r_w.tolist(), "r_l": r_l.tolist()}
            seconds[f"{variant}|{m}"] = sum(rec["methods"][m]["seconds"] for rec in res.fold_records)
        log(f"{variant}: " + ", ".join(f"{m} {results[(variant, m)].mean():.4f}" for m in methods)
            + f" ({time.perf_counter() - t:.0f} s)")

    for name, (r_w, r_l) in zero_shot.items():
        results[("likelihood columns", name)] = pair_scores(r_w, r_l)
        rewards[f"likelihood columns|{name}"] = {"r_w": np.asarray(r_w).tolist(), "r_l": np.asarray(r_l).tolist()}
    variants = list(data)
    for v in variants:
        run(v, fitters_for(["linear_bt"], 20, args.seed))
    ranked = sorted(variants, key=lambda v: -results[(v, "linear_bt")].mean())
    best_linear = ranked[0]
    log(f"best linear head: {best_linear} {results[(best_linear, 'linear_bt')].mean():.4f}")

    def report(final: bool) -> dict[str, Any]:
        """The table and the JSON of everything run so far (written after every run, so a run cut short keeps
        the finished heads; ``partial`` says which)."""
        ref = results[(best_linear, "linear_bt")]
        rows = []
        for (variant, method), s in results.items():
            boot = group_bootstrap_means(s, groups, n_boot=args.n_boot, seed=args.seed)[:, 0]
            lo, hi = interval(boot)
            row = {"features": variant, "method": method, "accuracy": float(s.mean()), "ci95": [lo, hi],
                   "seconds": seconds.get(f"{variant}|{method}", 0.0)}
            if (variant, method) != (best_linear, "linear_bt"):
                c = compare_pair(method, s, "ref", ref, groups, n_boot=args.n_boot, seed=args.seed)
                row.update(diff_vs_best_linear=c.difference, diff_ci95=[c.ci_lo, c.ci_hi], only_this=c.only_a,
                           only_best_linear=c.only_b, mcnemar_p=c.p_value)
            rows.append(row)
        rows.sort(key=lambda r: -r["accuracy"])
        lines = [f"| features | head | accuracy [95% CI] | vs best linear ({best_linear}) [95% CI] | only this / only ref | McNemar p | CV s |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            cmp = ("reference", "-", "-") if "diff_vs_best_linear" not in r else (
                f"{r['diff_vs_best_linear']:+.4f} [{r['diff_ci95'][0]:+.4f}, {r['diff_ci95'][1]:+.4f}]",
                f"{r['only_this']} / {r['only_best_linear']}", f"{r['mcnemar_p']:.3g}")
            lines.append(f"| {r['features']} | {r['method']} | {r['accuracy']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}] | "
                         f"{cmp[0]} | {cmp[1]} | {cmp[2]} | {r['seconds']:.0f} |")
        text = "\n".join(lines)
        if final:
            print("\n" + text, flush=True)
        out = {"command": " ".join([sys.executable, *sys.argv]), "n_pairs": len(pair_ids),
               "n_groups": int(np.unique(groups).size), "folds": args.folds, "best_linear": best_linear, "rows": rows,
               "table": text, "pair_ids": pair_ids, "fold": folds.tolist(), "rewards": rewards,
               "total_seconds": time.perf_counter() - t0, "partial": not final}
        if args.out:
            with atomic_path(args.out, suffix=".json") as tmp:
                tmp.write_text(json.dumps(out, default=float), encoding="utf-8")
        return out

    heavy = ["relu_net_adamw"] + ([] if args.no_coala else ["coala"])
    for v in ranked[: args.top]:
        run(v, fitters_for(heavy, 20, args.seed, HeadSpec()))
        report(final=False)
    for item in args.coala_variant:
        vname, _, spec_json = item.partition(":")
        raw = json.loads(spec_json)
        val_fraction = float(raw.pop("val_fraction", 0.15))  # selection on a larger validation split
        spec = HeadSpec.build(raw)
        run_name = f"coala[{vname}]"
        C, R = data[best_linear]
        log(f"COALA candidate {run_name} on {best_linear}: {spec_json}")
        try:
            run(best_linear, {run_name: fitters_for(["coala"], 20, args.seed, spec)["coala"]}, val_fraction)
            report(final=False)
        except Exception as err:  # noqa: BLE001 - one failing candidate must not lose the others' results
            log(f"COALA candidate {run_name} failed: {type(err).__name__}: {err}")

    out = report(final=True)
    log(f"total {out['total_seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
