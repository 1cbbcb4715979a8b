"""Stage 4 adapter: evaluate the head on held-out feature stores (scored chunk by chunk) and write metrics,
plots and the report. The stage wrapper (:func:`tasks.stage.stage_task`) owns the MLflow run, params, input
datasets, metering and failure handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from coala_core.engine.sources import align_to_store
from coala_core.evaluation import evaluate_head
from coala_core.report import render_report
from storage.atomic import atomic_write_files
from storage.feature_store import FeatureStore
from storage.heads import load_head
from storage.pairs import read_pairs
from tasks import artifacts
from tasks.caching import stable_digest
from tasks.compute import scoring_flops
from tasks.refs import DatasetRef, FeaturesRef, HeadRef, ReportRef
from tasks.stage import TrackingContext, current_stage, stage_task

HEADLINE = ("accuracy", "sigmoid_margin", "rewards/margins", "rewards/accuracies", "ece")


def evaluate_params(splits: list[str], n_boot: int, seed: int, cv_folds: int = 0, **_: Any) -> dict[str, Any]:
    return {"evaluation": {"splits": ",".join(splits), "n_boot": n_boot, "seed": seed, "cv_folds": cv_folds}}


@stage_task("evaluate", params=evaluate_params)
def evaluate_task(head: HeadRef, features: FeaturesRef, dataset: DatasetRef, splits: list[str], n_boot: int, seed: int,
                  *, workdir: Path, output: Path, tracking: TrackingContext, cv_folds: int = 0) -> ReportRef:
    """Score each split's pairs with the head, chunk by chunk; write ``report.md``, ``metrics.json`` and PNG
    plots. With ``cv_folds`` K > 1, also cross-validate the head's recipe and the baselines over all pairs
    (:func:`tasks.evaluation_cv.cross_validate_stores`). Degenerate-head warnings go to the flow log."""
    stage = current_stage()
    pairs = read_pairs(dataset.path)
    loaded = load_head(head.uri, expected_dim=features[splits[0]].dim)
    evaluations = {}
    for split in splits:
        ref = features[split]
        store = FeatureStore.open(ref.uri, mode="r")
        rows = pairs.filter(pc.equal(pairs.column("split"), split))
        cols = align_to_store(store.pair_ids(), rows.column("pair_id").to_pylist(),
                              {"source": rows.column("source").to_pylist(), "group": rows.column("group_id").to_pylist()},
                              where=f"{dataset.uri} split {split}")
        evaluations[split] = evaluate_head(loaded, store, sources=list(cols["source"]), groups=list(cols["group"]),
                                           n_boot=n_boot, seed=seed)
        stage.flops += scoring_flops(ref.n_rows, loaded.dim, loaded.width)
    cv = None
    if cv_folds:
        from tasks.evaluation_cv import cross_validate_stores

        cv = cross_validate_stores(loaded, features, pairs, k=cv_folds, n_boot=n_boot, seed=seed)
    files = render_report(evaluations=evaluations, head_meta=loaded.meta, cv=cv,
                          inputs={"head": head.uri, "head digest": head.digest[:16], "dataset digest": dataset.digest[:16]})
    from tasks.evaluation_cv import cv_metrics, log_warnings

    log_warnings(stage.run, files)
    atomic_write_files(output, files)  # the report directory is replaced in one rename: old or new, never a mix
    metrics: dict[str, float] = {}
    for split, ev in evaluations.items():
        metrics.update({f"{split}/{k}": float(v) for k, v in ev.metrics.items() if isinstance(v, int | float)})
        metrics.update({f"{split}/{k}_ci_lo": float(lo) for k, (lo, _hi) in ev.ci.items()})
        metrics.update({f"{split}/{k}_ci_hi": float(hi) for k, (_lo, hi) in ev.ci.items()})
    if cv is not None:
        metrics.update(cv_metrics(cv))
    stage.log_artifact(output, "report")
    report_md = Path(output) / "report.md"
    if report_md.is_file():
        artifacts.markdown("evaluation-report", report_md.read_text(encoding="utf-8"), "COALA evaluation report",
                           images_from=output)
    artifacts.table("evaluation-metrics",
                    [{"split": s, **{k: ev.metrics.get(k) for k in HEADLINE}} for s, ev in evaluations.items()],
                    "Held-out metrics of the reward head")
    digest = stable_digest({"head": head.digest, "metrics": {k: round(v, 12) for k, v in metrics.items()}}, length=64)
    return ReportRef(uri=str(output), digest=digest, metrics=metrics, files={"report": str(report_md), "dir": str(output)})
