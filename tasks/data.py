"""Stage 1 adapter: build the canonical pairs table, write it and its card, return a DatasetRef."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from coala_core.data import EduFeedbackConfig, ImportConfig, build_edufeedback, card_paths, import_pairs
from coala_core.errors import MissingInputError
from storage.dataset import write_dataset
from tasks import artifacts
from tasks.caching import digest_policy, file_digest
from tasks.compute import measure
from tasks.refs import DatasetRef
from tasks.stage import IO_RETRY_DELAYS, NOT_IN_KEY, TrackingContext, fail_stage_runs, prefect_tags, retry_transient
from tasks.tracking import params_from_config, stage_run

BUILD = {"edufeedback": build_edufeedback, "import": import_pairs}


@task(name="build-dataset", cache_policy=digest_policy(*NOT_IN_KEY), persist_result=True, result_serializer="json",
      retries=2, retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=retry_transient, on_failure=[fail_stage_runs])
def build_dataset_task(source: Path, builder: str, config: EduFeedbackConfig | ImportConfig, *, workdir: Path,
                       output: Path, tracking: TrackingContext) -> DatasetRef:
    """Read ``source`` (its bytes are in the cache key), build pairs by ``builder`` (``edufeedback`` or
    ``import``) with ``config``, write the Parquet file and its card under ``output``."""
    if not Path(source).is_file():
        raise MissingInputError(f"dataset.input: file not found: {source}")
    builder_cfg = config
    client = tracking.client()
    with stage_run(client, tracking.experiment_id, "build_dataset", parent_run_id=tracking.parent_run_id,
                   tags=prefect_tags(), system_metrics=tracking.system_metrics,
                   sampling_interval=tracking.system_metrics_interval_s) as run:
        run.log_params(params_from_config({"dataset": {"builder": builder, "input": str(source), **config.to_dict()}}))
        with measure() as meter:
            df, stats = BUILD[builder](Path(source), builder_cfg)
            pairs_path = Path(output) / "pairs.parquet"
            info, card = write_dataset(df, stats, builder_cfg, pairs_path,
                                       extra_metadata={"builder": builder, "input": Path(source).name})
            md_path, json_path = card_paths(pairs_path)
        splits = {s: int(n) for s, n in df.group_by("split").len().iter_rows()}
        metrics = {"rows": float(info.n_rows), **{f"rows/{s}": float(n) for s, n in splits.items()},
                   "dropped": float(sum(stats.drops.values())), **meter.metrics()}
        run.log_metrics(metrics)
        run.log_dataset(Path(source), name=Path(source).name, digest=file_digest(source), context="source")
        run.log_dataset(pairs_path, name=f"{builder_cfg.source_name}-pairs",
                        digest=info.digest, context="dataset", profile={"n_rows": info.n_rows, **splits})
        run.log_artifact(md_path, "dataset")
        run.log_artifact(json_path, "dataset")
        run.set_tags({"coala.digest": info.digest})
        artifacts.markdown("dataset-card", card.markdown, f"Dataset card of {pairs_path.name} ({info.n_rows} rows)")
        artifacts.table("dataset-splits", [{"split": s, "rows": n} for s, n in sorted(splits.items())],
                        "Rows per split (split by group)")
    return DatasetRef(uri=str(pairs_path), digest=info.digest, n_rows=info.n_rows, splits=splits, metrics=metrics,
                      files={"card_md": str(md_path), "card_json": str(json_path)}, mlflow_run_id=run.run_id)

