"""Stage 1 adapter: build the canonical pairs table, write it and its card, return a DatasetRef."""

from __future__ import annotations

from pathlib import Path

from coala_core.data import EduFeedbackConfig, ImportConfig, build_edufeedback, card_paths, import_pairs
from coala_core.errors import MissingInputError
from storage.dataset import write_dataset
from tasks import artifacts
from tasks.refs import DatasetRef
from tasks.stage import IO_RETRY_DELAYS, TrackingContext, current_stage, stage_task

BUILD = {"edufeedback": build_edufeedback, "import": import_pairs}


def dataset_params(source: Path, builder: str, config: EduFeedbackConfig | ImportConfig, **_: object) -> dict:
    return {"dataset": {"builder": builder, "input": str(source), **config.to_dict()}}


@stage_task("build_dataset", params=dataset_params, task_name="build-dataset", retries=2,
            retry_delay_seconds=IO_RETRY_DELAYS)
def build_dataset_task(source: Path, builder: str, config: EduFeedbackConfig | ImportConfig, *, workdir: Path,
                       output: Path, tracking: TrackingContext) -> DatasetRef:
    """Read ``source`` (its bytes are in the cache key), build pairs by ``builder`` (``edufeedback`` or
    ``import``) with ``config``, write the Parquet file and its card under ``output``."""
    if not Path(source).is_file():
        raise MissingInputError(f"dataset.input: file not found: {source}")
    stage = current_stage()
    df, stats = BUILD[builder](Path(source), config)
    pairs_path = Path(output) / "pairs.parquet"
    info, card = write_dataset(df, stats, config, pairs_path, extra_metadata={"builder": builder, "input": Path(source).name})
    md_path, json_path = card_paths(pairs_path)
    splits = {s: int(n) for s, n in df.group_by("split").len().iter_rows()}
    metrics = {"rows": float(info.n_rows), **{f"rows/{s}": float(n) for s, n in splits.items()},
               "dropped": float(sum(stats.drops.values()))}
    stage.log_artifact(md_path, "dataset")
    stage.log_artifact(json_path, "dataset")
    artifacts.markdown("dataset-card", card.markdown, f"Dataset card of {pairs_path.name} ({info.n_rows} rows)")
    artifacts.table("dataset-splits", [{"split": s, "rows": n} for s, n in sorted(splits.items())],
                    "Rows per split (split by group)")
    return DatasetRef(uri=str(pairs_path), digest=info.digest, n_rows=info.n_rows, splits=splits, metrics=metrics,
                      files={"card_md": str(md_path), "card_json": str(json_path)})
