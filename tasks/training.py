"""Stage 3 adapters: Phase I (convex first layer, beta path) and Phase II (theta2), each its own cached task.

Both call the engine that ``coala train`` calls (:func:`coala_core.engine.fit_first_layer` then
:func:`coala_core.engine.fit_output_layer`, the two halves of ``fit_head``) on the train and validation
stores, read chunk by chunk, and write the engine's training record, so the pipeline's head.json is the
CLI's. Phase I writes a head whose theta2 is Phase I's; Phase II loads it, refits theta2 and writes the
final head. Their cache keys differ in exactly what they read, so a changed Phase II field reruns Phase II
(and what reads its head), never Phase I.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric

from coala_core.engine.fit import TrainedHead, fit_first_layer, fit_output_layer
from coala_core.engine.spec import HeadSpec, TrainConfig
from coala_core.phase1 import Phase1Config
from coala_core.phase2 import Phase2Config, RewardHead
from storage.feature_store import FeatureStore
from storage.heads import head_digest, load_head, save_head
from tasks import artifacts
from tasks.dask_rows import dask_train_rows
from tasks.refs import FeaturesRef, HeadRef
from tasks.stage import TrackingContext, current_stage, stage_task
from tasks.tracking import TrackedRun

PHASE1_SERIES = ("objective", "r_primal", "r_dual", "cone_violation", "train_accuracy", "val_accuracy", "rho")


def _store(features: FeaturesRef, split: str) -> FeatureStore:
    """The split's feature store, opened read-only (the engine reads it chunk by chunk)."""
    return FeatureStore.open(features[split].uri, mode="r")


class AdmmMonitor:
    """The ``progress`` callback of :func:`fit_phase1_path`: a Prefect progress artifact and live ``admm/*`` metrics.

    ADMM iteration events (beta_index, n_betas, beta, iteration, max_iter, objective, r_primal, r_dual,
    cone_violation) become ``admm/<name>`` metrics at a step that counts iterations over the whole beta path:
    every iteration while a beta's ``max_iter`` is at most ``points_per_beta``, else every k-th one (and the
    last one of each beta). They are buffered and sent, with the progress fraction, at most every
    ``min_interval`` seconds and once per finished beta (event ``done: True``, which also logs
    ``admm/val_accuracy`` at that step).
    """

    SERIES = ("objective", "r_primal", "r_dual", "cone_violation", "beta")

    def __init__(self, run: TrackedRun, progress: artifacts.Progress, min_interval: float = 2.0,
                 points_per_beta: int = 250) -> None:
        self.run, self.progress, self.min_interval = run, progress, min_interval
        self.points_per_beta = points_per_beta
        self.step = 0
        self._buffer: list[Metric] = []
        self._pending: dict[str, Any] | None = None  # the last iteration event, when it was not recorded
        self._last_flush = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        n_betas = max(int(event.get("n_betas", 1)), 1)
        index = int(event.get("beta_index", 0))
        if event.get("done"):
            if self._pending is not None:
                self._record(self._pending)
            value = float(event.get("val_accuracy", float("nan")))
            self._buffer.append(Metric("admm/val_accuracy", value, int(time.time() * 1000), self.step))
            self.flush((index + 1) / n_betas, force=True)
            return
        self.step += 1
        every = -(-int(event.get("max_iter", 1)) // self.points_per_beta)
        if int(event.get("iteration", self.step)) % max(every, 1) == 0:
            self._record(event)
        else:
            self._pending = event
        within = min(float(event.get("iteration", 0)) / max(float(event.get("max_iter", 1)), 1.0), 1.0)
        if time.monotonic() - self._last_flush >= self.min_interval:
            self.flush((index + within) / n_betas)

    def _record(self, event: dict[str, Any]) -> None:
        now_ms = int(time.time() * 1000)
        self._buffer += [Metric(f"admm/{k}", float(event[k]), now_ms, self.step) for k in self.SERIES
                         if isinstance(event.get(k), int | float) and np.isfinite(event[k])]
        self._pending = None

    def flush(self, fraction: float, *, force: bool = False) -> None:
        items = [m for m in self._buffer if np.isfinite(m.value)]
        self._buffer = []
        for i in range(0, len(items), 1000):
            self.run.client.log_batch(self.run.run_id, metrics=items[i : i + 1000])
        self.progress.update(fraction, force=force)
        self._last_flush = time.monotonic()


def _head_ref(path: Path, head: RewardHead, phase: str, metrics: dict[str, float]) -> HeadRef:
    """The head's reference: its canonical content digest (equal across processes), shape and metrics."""
    return HeadRef(uri=str(path), digest=head_digest(path), phase=phase, dim=head.dim, width=head.width,
                   metrics=metrics, files={"head": str(path)})


def _history_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    n = max((len(v) for v in history.values()), default=0)
    return [{"iteration": i + 1, **{f"selected/{k}": history[k][i] for k in PHASE1_SERIES if k in history and i < len(history[k])}}
            for i in range(n)]


def phase1_params(config: Phase1Config, train: TrainConfig | None = None, **_: Any) -> dict[str, Any]:
    return {"phase1": config.to_dict(), "train": (train or TrainConfig()).to_dict()}


def phase2_params(config: Phase2Config, **_: Any) -> dict[str, Any]:
    return {"phase2": config.to_dict()}


@stage_task("phase1", params=phase1_params)
def phase1_task(features: FeaturesRef, config: Phase1Config, train: TrainConfig | None = None,
                dask: dict[str, Any] | None = None, *, workdir: Path, output: Path, tracking: TrackingContext) -> HeadRef:
    """Phase I beta path on the train store, beta chosen by validation pairwise accuracy; writes a head.
    ``dask`` (``tasks.dask_rows.dask_cluster``): the train rows' passes run on that Dask cluster."""
    stage = current_stage()
    spec = HeadSpec.build(phase1=config, train=train or TrainConfig())
    progress = artifacts.Progress("phase1-admm", f"Phase I: ADMM over a path of {config.path_n_betas} betas")
    monitor = AdmmMonitor(stage.run, progress)
    with dask_train_rows(features["train"].uri, dask) as rows:
        if rows is not None:
            stage.set_tags({"coala.phase1.rows": "dask", "coala.phase1.dask_workers": str(rows.n_workers),
                            "coala.phase1.dask_tasks": str(len(rows.ranges))})
        first = fit_first_layer(_store(features, "train"), _store(features, "validation"), spec, progress=monitor,
                                train_rows=rows)
    monitor.flush(1.0, force=True)
    stage.flops = first.record.compute.get("phase1_flops", 0.0)
    save_head(output, first.head, provenance=features["train"].provenance, **first.record.head_json())
    progress.done()
    res, rec = first.phase1, first.record
    stage.log_history(_history_rows(rec.phase1_history))  # the selected beta's solve, per iteration
    for i, row in enumerate(sorted(rec.phase1_path, key=lambda r: -r["beta"])):
        stage.log_metrics({f"path/{k}": v for k, v in row.items() if isinstance(v, int | float)}, step=i)
    metrics: dict[str, float] = {}
    if res is not None:
        metrics.update({"beta": res.beta, "objective": res.objective,
                        "iterations": rec.compute.get("phase1_iterations", float(res.iterations)),
                        "train_accuracy": res.train_accuracy, "val_accuracy": res.val_accuracy,
                        "n_active": float(res.n_active), "cone_violation": res.cone_violation,
                        "converged": float(res.converged)})
    stage.log_artifact(output, "head_phase1")
    if rec.phase1_path:
        artifacts.table("phase1-beta-path", rec.phase1_path, f"Phase I beta path (chosen beta {rec.phase1_beta:.4g})")
    return _head_ref(output, first.head, "phase1", metrics)


@stage_task("phase2", params=phase2_params)
def phase2_task(phase1: HeadRef, features: FeaturesRef, config: Phase2Config, *, workdir: Path, output: Path,
                tracking: TrackingContext) -> HeadRef:
    """Phase II: refit theta2 on the train pairs with Theta1 frozen, selected on validation; writes the head."""
    stage = current_stage()
    first = TrainedHead.from_saved(load_head(phase1.uri, expected_dim=features["train"].dim))
    spec = first.record.spec.replace(phase2=config)
    final = fit_output_layer(first, _store(features, "train"), _store(features, "validation"), spec)
    stage.flops = final.record.compute.get("phase2_flops", 0.0)
    save_head(output, final.head, provenance=features["train"].provenance, **final.record.head_json())
    p2 = final.phase2
    if p2 is None:  # fit_output_layer always runs Phase II
        raise RuntimeError("Phase II returned no solver result")
    stage.log_history(p2.history, prefix="phase2/")
    metrics: dict[str, float] = {"beta": p2.config.beta, "gamma": p2.config.gamma, "l2": p2.config.l2,
                                 "objective": p2.objective, "grad_norm": p2.grad_norm, "iterations": float(p2.iterations),
                                 "converged": float(p2.converged),
                                 **{f"phase1/{k}": v for k, v in phase1.metrics.items() if k in ("flops", "wall_s", "peak_rss_mb")}}
    stage.log_artifact(output, "head")
    artifacts.table("phase2-selection", p2.selection, "Phase II (beta, gamma, l2) chosen on validation pairs")
    return _head_ref(output, final.head, "phase2", metrics)
