"""The four stage flows. Each only wires its tasks: read the config section, call the task, return the ref."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.config import PipelineConfig
from flows.scale import extract_on_dask
from tasks.dask_rows import dask_cluster
from tasks.data import build_dataset_task
from tasks.evaluation import evaluate_task
from tasks.features import extract_features_task
from tasks.refs import DatasetRef, FeaturesRef, HeadRef, ReportRef
from tasks.stage import TrackingContext, run_stage
from tasks.training import phase1_task, phase2_task


@flow(name="build-dataset", log_prints=True)
def build_dataset(config: PipelineConfig, tracking: TrackingContext) -> DatasetRef:
    """Conversations or preference file -> canonical pairs Parquet + dataset card."""
    section = config.dataset
    return run_stage(build_dataset_task, stage="datasets", workdir=config.workdir, tracking=tracking,
                     source=Path(section.input).resolve(), builder=section.builder, config=section.builder_config())


@flow(name="extract-features", log_prints=True)
def extract_features(dataset: DatasetRef, config: PipelineConfig, tracking: TrackingContext) -> FeaturesRef:
    """Pairs -> one feature store per split (frozen LM, pooled hidden states); with ``run.task_runner: dask``
    the shards are extracted on the Dask workers first, and the stage task verifies and records the stores."""
    if config.run.task_runner == "dask":
        extract_on_dask(dataset, config)
    return run_stage(extract_features_task, stage="features", workdir=config.workdir, tracking=tracking,
                     timeout_s=config.run.task_timeout_s, dataset=dataset, config=config.features)


def phase1_cluster(config: PipelineConfig) -> dict[str, dict]:
    """``{"dask": cluster}`` when ``run.task_runner: dask`` (Phase I's passes on that cluster), else nothing (the
    task's inputs, hence its cache key and folder, stay those of the in-process run)."""
    cluster = dask_cluster(config.run)
    return {"dask": cluster} if cluster else {}


@flow(name="train-head", log_prints=True)
def train_head(features: FeaturesRef, config: PipelineConfig, tracking: TrackingContext) -> HeadRef:
    """Phase I (convex first layer, beta path) then Phase II (theta2), both selected on validation."""
    first = run_stage(phase1_task, stage="heads-phase1", workdir=config.workdir, tracking=tracking,
                      timeout_s=config.run.task_timeout_s, features=features, config=config.phase1,
                      train=config.train, **phase1_cluster(config))
    return run_stage(phase2_task, stage="heads", workdir=config.workdir, tracking=tracking,
                     timeout_s=config.run.task_timeout_s, phase1=first, features=features, config=config.phase2)


@flow(name="evaluate", log_prints=True)
def evaluate(head: HeadRef, features: FeaturesRef, dataset: DatasetRef, config: PipelineConfig,
             tracking: TrackingContext) -> ReportRef:
    """Held-out metrics, plots and the markdown report."""
    ev = config.evaluation
    return run_stage(evaluate_task, stage="reports", workdir=config.workdir, tracking=tracking,
                     timeout_s=config.run.task_timeout_s, head=head, features=features, dataset=dataset,
                     splits=list(ev.splits), n_boot=ev.n_boot, seed=ev.seed, cv_folds=ev.cv_folds)
