"""Helpers of the evaluation task: cross-validation over the stores of all splits (``evaluation.cv_folds``),
its metrics for MLflow, and degenerate-head warnings in the flow log and the run's tags."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coala_core.engine.sources import align_to_store
from storage.feature_store import FeatureStore


def cross_validate_stores(head: Any, features: Mapping[str, Any], pairs: Any, *, k: int, n_boot: int,
                          seed: int, memory_budget_mb: float | None = None) -> dict[str, Any]:
    """K-fold group CV of the head's recipe (its ``head.json`` spec) and the baselines on every pair of every
    split's store (the stores read one after another as one pair source, chunk by chunk; groups from the pairs
    table). Folds are row index sets over the stores: the COALA head streams its rows (resident only within
    ``phase1.memory_budget_mb``), the baselines that hold theirs load them only within ``memory_budget_mb``
    (default: the recipe's ``phase1.memory_budget_mb``) and fail with a ``ConfigError`` naming it otherwise."""
    from coala_core.baselines.methods import cv_fitters
    from coala_core.engine.spec import HeadSpec
    from coala_core.evaluation.cv import ConcatPairs, cross_validate_pairs, summarise_cv

    ids = pairs.column("pair_id").to_pylist()
    group_of = pairs.column("group_id").to_pylist()
    opened, groups, prov = [], [], {}
    stores = features.stores if hasattr(features, "stores") else features
    for split in sorted(stores):
        store = FeatureStore.open(stores[split].uri, mode="r")
        opened.append(store)
        groups += list(align_to_store(store.pair_ids(), ids, {"g": group_of}, where=f"split {split}")["g"])
        prov = dict(store.provenance)
    rows = ConcatPairs(opened)
    spec = HeadSpec.build(dict(head.meta.get("config") or {}))
    fitters = cv_fitters(spec, baselines=True, width=head.width, seed=seed, provenance=prov, dim=rows.dim,
                         memory_budget_mb=memory_budget_mb)
    result = cross_validate_pairs(rows, groups, fitters, k=k, seed=seed)
    return summarise_cv(result, n_boot=n_boot, seed=seed, reference="coala")


def cv_metrics(cv: Mapping[str, Any]) -> dict[str, float]:
    """``cv/<method>/accuracy`` (+ CI) and ``cv/<a>_vs_<b>/diff|p_value`` for MLflow."""
    out: dict[str, float] = {}
    for m, v in cv["methods"].items():
        out[f"cv/{m}/accuracy"] = float(v["accuracy"])
        out[f"cv/{m}/accuracy_ci_lo"], out[f"cv/{m}/accuracy_ci_hi"] = (float(x) for x in v["ci95"])
        out[f"cv/{m}/rewards/accuracies"] = float(v["rewards/accuracies"])
    for c in cv["comparisons"]:
        out[f"cv/{c['a']}_vs_{c['b']}/diff"] = float(c["difference"])
        out[f"cv/{c['a']}_vs_{c['b']}/mcnemar_p"] = float(c["p_value"])
    return out


def log_warnings(run: Any, files: Mapping[str, bytes]) -> list[str]:
    """The report's warnings (``metrics.json``) to the Prefect flow log and the MLflow run's tags."""
    warnings = json.loads(files["metrics.json"]).get("warnings", [])
    if warnings:
        try:
            from prefect import get_run_logger

            logger = get_run_logger()
            for w in warnings:
                logger.warning(w)
        except Exception:  # noqa: BLE001 - outside a Prefect run context there is no run logger
            pass
        run.set_tags({"coala.warnings": " | ".join(warnings)[:4900]})
    return warnings
