"""What a whole Phase I beta path costs against one cold solve at the beta it selects (issue 10 item 6).

Runs ``fit_phase1_path`` on the training rows of a feature store (validation rows of its pairs file select
beta), then ``fit_phase1`` from zero at the selected beta with the same settings, and prints the iterations
per beta, the totals and the two ratios (iterations, seconds). Both timings include the set-up (Gram
products, the u-step's factorisation, the critical beta), which a user pays in both cases; imports are done
before either clock starts. The baseline (the cold solve) is measured in the same run.

  .venv/bin/python benchmarks/path_cost.py --features STORE --pairs PAIRS [--config configs/gpu.yaml] \\
      [--set path_patience=0] [--columns 576] [--json OUT]

``--config`` takes the ``phase1:`` section of a pipeline/train YAML; ``--set key=value`` overrides one field
(repeatable; values parsed as YAML).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize  # noqa: F401  (imported before the clocks: the critical beta and the polish use it)
import yaml
from solver import real_pairs  # benchmarks/solver.py (the script's own folder is on sys.path)

from coala_core.phase1 import fit_phase1
from coala_core.phase1.path import fit_phase1_path


def load_rows(store_uri: str, pairs_path: str, columns: int | None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``solver.real_pairs`` (train and validation rows by the pairs file's split), first ``columns`` only."""
    return tuple((c[:, :columns], r[:, :columns]) for c, r in real_pairs(store_uri, pairs_path))


def settings(config: str | None, sets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config:
        doc = yaml.safe_load(Path(config).read_text()) or {}
        out.update(doc.get("phase1") or {})
    for item in sets:
        key, _, value = item.partition("=")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True, help="a FeatureStore URI")
    ap.add_argument("--pairs", required=True, help="its pairs Parquet (the split column picks the rows)")
    ap.add_argument("--config", default=None, help="YAML whose phase1: section is used (default: the defaults)")
    ap.add_argument("--set", action="append", default=[], help="key=value override of a phase1 field")
    ap.add_argument("--columns", type=int, default=None, help="first N columns only (e.g. 576: no likelihood)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    spec = settings(args.config, args.set)
    train, val = load_rows(args.features, args.pairs, args.columns)
    print(f"train {train[0].shape[0]} pairs, validation {val[0].shape[0]}, d = {train[0].shape[1]}; phase1 {spec}",
          flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t0 = time.perf_counter()
        res = fit_phase1_path(train, validation=val, **spec)
        t_path = time.perf_counter() - t0
        cold_spec = {k: v for k, v in spec.items() if not k.startswith("path")}
        t0 = time.perf_counter()
        cold = fit_phase1(train, beta=res.beta, **cold_spec)
        t_cold = time.perf_counter() - t0
    rows = res.path or []
    for row in rows:
        print(f"  beta {row['beta']:.4g}: {row['iterations']} iterations"
              + (f" + {row['refine_iterations']} refine" if "refine_iterations" in row else "")
              + f", {row['seconds']:.1f} s, {row['n_active']} neurons, validation {row['val_accuracy']:.4f}"
              + (" <- selected" if row["selected"] else ""), flush=True)
    its = [int(r["iterations"]) + int(r.get("refine_iterations", 0)) for r in rows]
    out = {"features": args.features, "phase1": spec, "betas": [r["beta"] for r in rows], "iterations": its,
           "val_accuracy": [r["val_accuracy"] for r in rows], "selected_beta": res.beta,
           "path_iterations": sum(its), "path_seconds": t_path, "cold_iterations": cold.iterations,
           "cold_converged": cold.converged, "cold_seconds": t_cold,
           "ratio_iterations": sum(its) / max(cold.iterations, 1), "ratio_seconds": t_path / t_cold,
           "setup_seconds": res.history.get("setup_seconds", [float("nan")])[0],
           "objective_path": res.objective, "objective_cold": cold.objective, "rows": rows}
    print(f"path: {len(rows)} betas, {sum(its)} iterations, {t_path:.1f} s (set-up {out['setup_seconds']:.1f} s); "
          f"cold solve at beta {res.beta:.4g}: {cold.iterations} iterations ({'converged' if cold.converged else 'cap'}), "
          f"{t_cold:.1f} s; ratio {out['ratio_iterations']:.2f}x (iterations), {out['ratio_seconds']:.2f}x (seconds); "
          f"objectives {res.objective:.8g} / {cold.objective:.8g}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
