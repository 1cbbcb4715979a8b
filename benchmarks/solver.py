"""Phase I solver benchmark (issue 5): relative objective gap against wall time, ours vs ``cronos`` mode.

One problem, one run: n rows (n/2 preference pairs), d = 576, P = 10, synthetic features with an LM-like
spectrum (power-law decay, a large common mean) written to a Zarr FeatureStore; beta = 1e-3 with the
unscaled loss (the paper's setting), solved as the 1/n-scaled problem with beta/n. The reference optimum is
our solver run long at tight tolerance; the gap of an iterate is |F - F*| / |F*|, and the time to a target is
the first time after which the gap stays below it (set-up included). Also measured: one plain read of the
store against one streamed ADMM iteration over it, and a warm-started beta path against one cold solve.
An iterate whose cone violation (RMS) exceeds MAX_CONE_VIOLATION does not count as reaching any gap.

    .venv/bin/python benchmarks/solver.py            # full size
    .venv/bin/python benchmarks/solver.py --n 8000   # quick
    .venv/bin/python benchmarks/solver.py --backend cupy
    .venv/bin/python benchmarks/solver.py --features STORE --pairs PAIRS --beta-scaled 1e-2   # real features
    .venv/bin/python benchmarks/solver.py --rho-table --tol 1e-6   # iterations per beta on small problems
    .venv/bin/python benchmarks/solver.py --rho-table --features STORE --pairs PAIRS   # + real rows projected
    .venv/bin/python benchmarks/solver.py --path-table              # beta path / one cold solve per rho rule
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from coala_core.phase1 import fit_phase1
from coala_core.phase1.fit import make_config, prepare
from coala_core.phase1.path import fit_phase1_path


def synthetic_pairs(k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k pairs of d-vectors: power-law spectrum s_j ~ j^-0.7, a common mean 5x the typical row, a weak
    nonlinear preference with noise (so held-out accuracy is well below training accuracy)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.arange(1, d + 1) ** -0.7
    mu = rng.standard_normal(d)
    mu *= 5.0 * np.linalg.norm(s) / np.linalg.norm(mu)
    a, b = rng.standard_normal(d), rng.standard_normal(d)

    def rows(m: int) -> np.ndarray:
        return ((rng.standard_normal((m, d)) * s) @ Q.T + mu).astype(np.float32)

    x1, x2 = rows(k), rows(k)

    def util(x: np.ndarray) -> np.ndarray:
        z = (x - mu) @ Q
        return np.maximum(z @ (a * s), 0) - 0.7 * np.maximum(z @ (b * s), 0)

    first = util(x1) - util(x2) + 0.5 * np.std(util(x1)) * rng.standard_normal(k) > 0
    chosen = np.where(first[:, None], x1, x2)
    rejected = np.where(first[:, None], x2, x1)
    return chosen, rejected


def real_pairs(uri: str, pairs_path: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and validation (chosen, rejected) rows of a feature store, split by its pairs file."""
    from storage import FeatureStore, read_pairs

    store = FeatureStore.open(uri, mode="r")
    split = np.asarray(read_pairs(pairs_path).column("split").to_pylist())
    if len(split) != store.n_rows:
        raise SystemExit(f"{pairs_path} has {len(split)} rows, the store {store.n_rows}")
    chosen, rejected = (a.astype(np.float32) for a in store.read_all())
    tr, va = split == "train", split == "validation"
    return (chosen[tr], rejected[tr]), (chosen[va], rejected[va])


def write_store(path: Path, chosen: np.ndarray, rejected: np.ndarray, chunk_rows: int):  # noqa: ANN201
    from storage.feature_store import FeatureStore

    k, d = chosen.shape
    store = FeatureStore.create(str(path), n_rows=k, dim=d, dtype="float32", chunk_rows=chunk_rows,
                                provenance={"source": "benchmarks/solver.py synthetic"})
    for c in range(store.n_chunks):
        lo, hi = store.chunk_bounds(c)
        store.write_chunk(c, chosen[lo:hi], rejected[lo:hi], [f"p{i}" for i in range(lo, hi)])
    return FeatureStore.open(str(path), mode="r")


#: an iterate counts as reaching a gap only if it is also nearly feasible: the objective of an iterate that
#: violates the cone constraints can sit at or below F* without being a solution of the program.
MAX_CONE_VIOLATION = 1e-3


def time_to(gaps: np.ndarray, seconds: np.ndarray, target: float) -> float | None:
    """First time after which the gap stays <= target (None when never); infeasible iterates have gap inf."""
    above = np.flatnonzero(gaps > target)
    if above.size == 0:
        return float(seconds[0])
    i = above[-1] + 1
    return float(seconds[i]) if i < len(seconds) else None


def trajectory(res, setup: float, ref: float) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    obj = np.asarray(res.history["objective"])
    secs = np.asarray(res.history["seconds"]) + setup
    viol = np.asarray(res.history["cone_violation"])
    gaps = np.abs(obj - ref) / abs(ref)
    return np.where(viol <= MAX_CONE_VIOLATION, gaps, np.inf), secs


def small_rows(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The tests' small problems (tests/phase1/phase1_helpers.tiny): X (n, d), y = a noisy ReLU rule."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32).astype(np.float64)
    w = rng.standard_normal(d)
    y = np.where(np.maximum(X @ w, 0) - 0.5 * np.maximum(-X @ w, 0) + 0.3 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


#: (seed, n, P, d) of the small problems of issue 10 item 6 (a few hundred rows, d about 10, P up to 8)
SMALL = [(2, 300, 8, 8), (1, 200, 6, 8), (3, 212, 6, 10), (4, 400, 8, 10)]
#: the betas of the table (1/n-scaled), largest first (the order of a path)
SMALL_BETAS = (3e-2, 1e-2, 3e-3, 1e-3)
RHO_VARIANTS = {"fixed rho=1": {"rho_rule": "fixed", "rho": 1.0, "polish_every": 0},
                "rho=100 beta": {"rho_rule": "beta", "polish_every": 0},
                "rho=100 beta + anderson 10": {"rho_rule": "beta", "anderson_memory": 10, "polish_every": 0},
                "fixed rho=1 + polish": {"rho_rule": "fixed", "rho": 1.0},
                "defaults": {},
                "defaults + residual balancing": {"adaptive_rho": True}}


def projected_real_rows(uri: str, pairs_path: str, k: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first k training pairs of a feature store as 2k rows (chosen +1, rejected -1), randomly projected
    to d columns (a seeded Gaussian matrix) so the problem is as small as the synthetic ones."""
    (chosen, rejected), _ = real_pairs(uri, pairs_path)
    R = np.random.default_rng(seed).standard_normal((chosen.shape[1], d)) / np.sqrt(d)
    X = (np.concatenate([chosen[:k], rejected[:k]]).astype(np.float64) @ R).astype(np.float32).astype(np.float64)
    return X, np.concatenate([np.ones(k), -np.ones(k)])


def rho_table(tol: float, max_iter: int, variants: list[str], real: tuple[str, str] | None = None
              ) -> dict[str, list[dict[str, object]]]:
    """Iterations to ``tol`` per beta (SMALL_BETAS) on the SMALL problems (and, with ``real``, 150 pairs of a
    feature store projected to d = 10, P = 8): cold solves, and a warm-started path over the same betas."""
    problems = [(f"synthetic seed {seed}, {n} x {d}, P = {P}", *small_rows(seed, n, d), P) for seed, n, P, d in SMALL]
    if real is not None:
        problems.append(("real features, 150 pairs projected to 10, P = 8", *projected_real_rows(*real, 150, 10), 8))
    out: dict[str, list[dict[str, object]]] = {}
    for name in variants:
        rows, t0 = [], time.perf_counter()
        for label, X, y, P in problems:
            solver = prepare(X, y, make_config(None, dict(RHO_VARIANTS[name], n_patterns=P, tol=tol,
                                                          max_iter=max_iter)))
            row: dict[str, object] = {"problem": label}
            for mode in ("cold", "path"):
                its, objs, attempts, state, t1 = [], [], [], None, time.perf_counter()
                for beta in SMALL_BETAS:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        res, new_state = solver.solve(beta, state=state)
                    state = new_state if mode == "path" else None
                    its.append(res.iterations if res.converged else f">{res.iterations}")
                    objs.append(res.objective)
                    attempts.append(len(res.history.get("polish_attempts", [])))
                row[mode] = {"iterations": its, "objective": objs, "polish_attempts": attempts,
                             "seconds": time.perf_counter() - t1}
            rows.append(row)
            print(f"{name} | {label} | cold {row['cold']['iterations']} ({row['cold']['seconds']:.1f} s, polish "
                  f"attempts {row['cold']['polish_attempts']}) | path {row['path']['iterations']} "
                  f"({row['path']['seconds']:.1f} s) | objectives {[round(o, 9) for o in row['cold']['objective']]}",
                  flush=True)
        out[name] = rows
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def path_table(variants: list[str], tol: float = 1e-4, repeats: int = 20) -> None:
    """Whole beta path (6 betas, warm-started, selected on validation) against one cold solve at the selected
    beta, per variant, on 150 training / 60 validation pairs (d = 8, P = 6, noisy ReLU preference); seconds are
    the fastest of ``repeats`` timed runs of each."""
    def pairs(seed: int, k: int, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        w = np.ones(d) / np.sqrt(d)
        a, b = rng.standard_normal((k, d)), rng.standard_normal((k, d))

        def util(x: np.ndarray) -> np.ndarray:
            return np.maximum(x @ w, 0) - 0.5 * np.maximum(-(x @ w), 0)

        better = util(a) + 0.5 * rng.standard_normal(k) > util(b)
        return np.where(better[:, None], a, b), np.where(better[:, None], b, a)

    train, val = pairs(0, 150), pairs(1, 60)
    for name in variants:
        cfg = dict(RHO_VARIANTS[name], n_patterns=6, path_n_betas=6, path_min_ratio=1e-2, tol=tol, max_iter=5000)
        cold_cfg = {k: v for k, v in cfg.items() if not k.startswith("path")}
        # a sub-second problem: each side is timed `repeats` times, alternating, after one untimed run of both
        # (the first call of either pays one-off costs: lazy imports, LAPACK set-up), and the fastest run counts
        tp = tc = float("inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for rep in range(repeats + 1):
                t0 = time.perf_counter()
                res = fit_phase1_path(train, validation=val, **cfg)
                t1 = time.perf_counter()
                cold = fit_phase1(train, beta=res.beta, **cold_cfg)
                t2 = time.perf_counter()
                if rep:
                    tp, tc = min(tp, t1 - t0), min(tc, t2 - t1)
        its = [row["iterations"] + row.get("refine_iterations", 0) for row in res.path or []]  # refine: selected
        print(f"{name} (tol {tol:g}): iterations per beta {its}, selected beta {res.beta:.3g}; path {sum(its)} iterations / "
              f"{tp:.3f} s, cold solve {cold.iterations} / {tc:.3f} s: ratio {sum(its) / max(cold.iterations, 1):.2f}x "
              f"(iterations), {tp / tc:.2f}x (seconds)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rho-table", action="store_true", help="only the rho-rule table on the small problems")
    ap.add_argument("--tol", type=float, default=1e-6, help="tol of --rho-table")
    ap.add_argument("--path-table", action="store_true", help="only the path-vs-cold-solve table per variant")
    ap.add_argument("--path-tol", type=float, default=1e-4, help="tol of --path-table")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs of each side in --path-table (fastest counts)")
    ap.add_argument("--variants", default="rho=100 beta,defaults", help="comma-separated RHO_VARIANTS keys")
    ap.add_argument("--n", type=int, default=50_000, help="rows (2 per pair)")
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--P", type=int, default=10)
    ap.add_argument("--beta-unscaled", type=float, default=1e-3)
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--ref-iters", type=int, default=3000)
    ap.add_argument("--cronos-iters", type=int, default=40)
    ap.add_argument("--path-betas", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, help="write the numbers here")
    ap.add_argument("--features", default=None, help="real features: a FeatureStore URI (needs --pairs)")
    ap.add_argument("--pairs", default=None, help="the pairs Parquet of --features (its split column picks rows)")
    ap.add_argument("--beta-scaled", type=float, default=None, help="beta of the 1/n-scaled loss (overrides --beta-unscaled)")
    args = ap.parse_args()
    if args.path_table:
        path_table(args.variants.split(","), args.path_tol, args.repeats)
        return
    if args.rho_table:
        table = rho_table(args.tol, 5000, args.variants.split(","),
                          (args.features, args.pairs) if args.features else None)
        if args.json:
            Path(args.json).write_text(json.dumps(table, indent=2))
        return

    if args.features:
        train, val = real_pairs(args.features, args.pairs)
        k, args.d = train[0].shape
    else:
        k = args.n // 2
        chosen, rejected = synthetic_pairs(k + k // 4, args.d, args.seed)
        train = (chosen[:k], rejected[:k])
        val = (chosen[k:], rejected[k:])
    n = 2 * k
    beta = args.beta_scaled if args.beta_scaled is not None else args.beta_unscaled / n
    args.beta_unscaled = beta * n
    common = dict(n_patterns=args.P, beta=beta, seed=args.seed, backend=args.backend)
    out: dict[str, object] = {"n": n, "d": args.d, "P": args.P, "beta_unscaled": args.beta_unscaled,
                              "backend": args.backend, "machine": platform.processor() or platform.machine()}
    print(f"problem: n={n} rows, d={args.d}, P={args.P}, beta={args.beta_unscaled:g} (unscaled) = {beta:.3g} "
          f"(1/n-scaled), backend={args.backend}")

    # 1. ours, long and tight: reference optimum and our trajectory
    cfg = make_config(None, dict(common, tol=1e-9, max_iter=args.ref_iters))
    t0 = time.perf_counter()
    solver = prepare(train, None, cfg, val)
    setup = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours, _ = solver.solve()
    ref = ours.objective
    g_ours, s_ours = trajectory(ours, setup, ref)
    it_s = float(np.median(np.diff(ours.history["seconds"])))
    out["ours"] = {"setup_s": setup, "iterations": ours.iterations, "converged": ours.converged,
                   "objective": ref, "cone_violation": ours.cone_violation, "iteration_s": it_s,
                   "t_1e-3": time_to(g_ours, s_ours, 1e-3), "t_1e-4": time_to(g_ours, s_ours, 1e-4),
                   "t_1e-6": time_to(g_ours, s_ours, 1e-6), "train_accuracy": ours.train_accuracy,
                   "val_accuracy": ours.val_accuracy}
    print(f"ours: set-up {setup:.1f} s, {ours.iterations} iterations ({it_s * 1e3:.0f} ms each), converged="
          f"{ours.converged}, F*={ref:.10g}, cone violation {ours.cone_violation:.2e}, held-out accuracy of the "
          f"returned iterate {ours.val_accuracy:.3f}")

    # 2. cronos mode (the authors' u-step) on the same problem: same gates, same standardisation
    ccfg = make_config(None, dict(common, preset="paper", loss="mean", rho=1e-4 / n, standardize=True,
                                  drop_degenerate=True, max_iter=args.cronos_iters))
    t0 = time.perf_counter()
    csolver = prepare(train, None, ccfg, val)
    csetup = time.perf_counter() - t0
    assert np.array_equal(csolver.rows.gates, solver.rows.gates)
    cron, _ = csolver.solve()
    six, _ = csolver.solve(max_iter=6)  # the paper's 6 iterations: the iterate its code ships
    g_cr, s_cr = trajectory(cron, csetup, ref)
    raw = np.abs(np.asarray(cron.history["objective"]) - ref) / abs(ref)
    viol = np.asarray(cron.history["cone_violation"])
    print(f"cronos raw objective gap after 6 / last: {raw[min(5, len(raw) - 1)]:.3g} / {raw[-1]:.3g}; cone violation "
          f"after 6 / last: {viol[min(5, len(viol) - 1)]:.3g} / {viol[-1]:.3g} (gaps count only below {MAX_CONE_VIOLATION:g})")
    out["cronos"] = {"setup_s": csetup, "iterations": cron.iterations, "final_gap": float(g_cr[-1]),
                     "raw_gap_after_6": float(raw[min(5, len(raw) - 1)]), "raw_final_gap": float(raw[-1]),
                     "gap_after_6": float(g_cr[min(5, len(g_cr) - 1)]), "seconds": float(s_cr[-1]),
                     "cone_violation": cron.cone_violation, "returned": "u",
                     "objective": cron.objective, "val_accuracy": cron.val_accuracy,
                     "train_accuracy": cron.train_accuracy, "after_6": {
                         "objective": six.objective, "gap": abs(six.objective - ref) / abs(ref),
                         "cone_violation": six.cone_violation, "val_accuracy": six.val_accuracy},
                     "t_1e-1": time_to(g_cr, s_cr, 1e-1), "t_1e-3": time_to(g_cr, s_cr, 1e-3)}
    print(f"cronos (returns u): {cron.iterations} ADMM iterations in {s_cr[-1]:.1f} s; gap after 6: "
          f"{g_cr[min(5, len(g_cr)-1)]:.3g}, final gap {g_cr[-1]:.3g} (raw {raw[-1]:.3g}), cone violation "
          f"{cron.cone_violation:.2e}, held-out accuracy of u {cron.val_accuracy:.3f}; after the paper's 6: gap "
          f"{abs(six.objective - ref) / abs(ref):.3g}, cone violation {six.cone_violation:.2e}, held-out accuracy "
          f"{six.val_accuracy:.3f}")
    t_ours, t_cr = out["ours"]["t_1e-4"], out["cronos"]["t_1e-1"]
    ratio = (f"{t_cr / t_ours:.1f}x" if (t_ours and t_cr) else
             f"cronos did not reach 1e-1 in {s_cr[-1]:.0f} s; ours reached 1e-4 at {t_ours} s")
    out["speedup_1e-4_vs_cronos_1e-1"] = ratio
    print(f"ours to 1e-4: {t_ours} s; cronos to 1e-1: {t_cr if t_cr else 'not reached'}; ratio: {ratio}")

    # 3. streamed iteration against one plain read of the store
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "features.zarr", *train, chunk_rows=4096)
        reads = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _chunk in store.iter_chunks():
                pass
            reads.append(time.perf_counter() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            streamed = fit_phase1(store, **dict(common, memory_budget_mb=0.0, max_iter=8, tol=1e-12))
        per_it = float(np.median(np.diff(streamed.history["seconds"])))
        out["stream"] = {"plain_read_s": min(reads), "streamed_iteration_s": per_it,
                         "ratio": per_it / min(reads), "resident_iteration_s": it_s}
        print(f"store read {min(reads):.3f} s; streamed iteration {per_it:.3f} s (ratio {per_it / min(reads):.2f});"
              f" resident iteration {it_s:.3f} s")

    # 4. the beta path (warm-started, selected on validation pairs) against one cold solve at the chosen beta
    pcfg = dict(common, tol=1e-4, max_iter=2000, path_n_betas=args.path_betas)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t0 = time.perf_counter()
        path = fit_phase1_path(train, validation=val, **pcfg)
        t_path = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit_phase1(train, **dict(pcfg, beta=path.beta))
        t_one = time.perf_counter() - t0
    out["path"] = {"seconds": t_path, "one_solve_s": t_one, "ratio": t_path / t_one, "table": path.path}
    print(f"path of {args.path_betas} betas: {t_path:.1f} s vs one cold solve {t_one:.1f} s (ratio {t_path / t_one:.2f})")
    for row in path.path or []:
        print(f"  beta={row['beta']:.3g} obj={row['objective']:.6g} train={row['train_accuracy']:.3f} "
              f"val={row['val_accuracy']:.3f} active={row['n_active']} it={row['iterations']}"
              f"{'  <- selected' if row['selected'] else ''}")
    print(f"at the paper's beta: train {ours.train_accuracy:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
