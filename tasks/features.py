"""Stage 2 adapter: one feature store per split of the dataset, extracted by the frozen LM."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow.compute as pc

from coala_core.features import ExtractionConfig, FeatureExtractor, ProgressEvent, extract_features, load_model
from storage.atomic import atomic_write_text
from storage.feature_store import FeatureStore
from storage.pairs import read_pairs
from tasks import artifacts
from tasks.caching import stable_digest
from tasks.compute import matmul_params
from tasks.refs import DatasetRef, FeaturesRef, StoreRef
from tasks.stage import TrackingContext, current_stage, stage_task

SPLITS = ("train", "validation", "test")
log = logging.getLogger("coala.stage.features")


def store_digest(provenance: dict, n_rows: int, dim: int, split: str) -> str:
    """Identity of a finished store: its provenance (dataset digest, model, config), split and shape."""
    return stable_digest({"provenance": provenance, "n_rows": n_rows, "dim": dim, "split": split}, length=64)


def features_params(config: ExtractionConfig, **_: object) -> dict:
    return {"features": config.to_dict()}


@stage_task("extract_features", params=features_params, task_name="extract-features", retries=1,
            retry_delay_seconds=5)
def extract_features_task(dataset: DatasetRef, config: ExtractionConfig, *, workdir: Path, output: Path,
                          tracking: TrackingContext) -> FeaturesRef:
    """Pooled features (n_split x d) of every split's chosen and rejected texts into ``output/<split>.zarr``.

    Resumable: each store commits whole chunks, so a retry or rerun continues where the last one stopped.
    """
    stage = current_stage()
    pairs = read_pairs(dataset.path)
    progress = artifacts.Progress("feature-extraction", f"Extracting features of {dataset.n_rows} pairs")
    extractor = FeatureExtractor(load_model(config), config)
    provenance = extractor.provenance(dataset.digest)
    stores: dict[str, StoreRef] = {}
    pace = ExtractionLog(dataset.n_rows)
    done_before, tokens, computed, truncations, flops = 0, 0, 0, 0, 0.0
    for split in SPLITS:
        rows = pairs.filter(pc.equal(pairs.column("split"), split))
        if rows.num_rows == 0:
            continue
        uri = Path(output) / f"{split}.zarr"
        store = FeatureStore.open_or_create(uri, n_rows=rows.num_rows, dim=extractor.dim,
                                            dtype=config.store_dtype, chunk_rows=config.chunk_rows,
                                            provenance={**provenance, "split": split})

        def report(ev: ProgressEvent, base: int = done_before, split: str = split) -> None:
            progress.update((base + ev.rows_done) / max(dataset.n_rows, 1))
            pace.report(split, ev)

        stats = extract_features(rows, store, config, extractor=extractor, progress=report, show_progress=False)
        store.verify()
        done_before += rows.num_rows
        tokens, computed, truncations = tokens + stats.tokens, computed + stats.computed_tokens, truncations + stats.truncations
        flops += stats.flops  # the one FLOP convention (engine.compute); the output layer where it ran
        stage.log_metrics({f"{split}/tokens": stats.tokens, f"{split}/tokens_per_second": stats.tokens_per_second,
                           f"{split}/padding_efficiency": stats.padding_efficiency})
        manifest = store.manifest()
        atomic_write_text(Path(output) / f"{split}.manifest.json", _json(manifest))
        stage.log_artifact(Path(output) / f"{split}.manifest.json", "features")
        stores[split] = StoreRef(uri=str(uri), split=split, n_rows=store.n_rows, dim=store.dim,
                                 provenance=store.provenance,
                                 digest=store_digest(store.provenance, store.n_rows, store.dim, split),
                                 files={"manifest": str(Path(output) / f"{split}.manifest.json")})
    stage.flops = flops
    progress.done()
    metrics = {"tokens": float(tokens), "computed_tokens": float(computed), "truncations": float(truncations),
               "padding_efficiency": tokens / computed if computed else 1.0,
               "model_params": float(matmul_params(extractor.loaded.backbone, lm_head=False)),
               "dim": float(extractor.dim)}
    stage.set_tags({"coala.model_id": provenance.get("model_id", ""), "coala.dataset_digest": dataset.digest})
    artifacts.table("feature-stores", [{"split": r.split, "rows": r.n_rows, "dim": r.dim, "uri": r.uri,
                                        "digest": r.digest[:16]} for r in stores.values()],
                    f"Feature stores of {provenance.get('model_id')} ({config.pooling} pooling, layers {list(config.layers)})")
    return FeaturesRef(stores=stores, metrics=metrics)


class ExtractionLog:
    """INFO lines in the stage's log (Prefect run log) at most every ``every_s`` seconds and at the end of
    each split: rows done, tokens/s and the ETA of the whole extraction."""

    def __init__(self, total_rows: int, every_s: float = 5.0) -> None:
        self.total, self.every_s = max(total_rows, 1), every_s
        self.rows_before = 0  # rows of the splits already finished
        self.t0, self._last, self._split, self._split_rows = time.monotonic(), 0.0, "", 0

    def report(self, split: str, ev: ProgressEvent) -> None:
        if split != self._split:
            self.rows_before += self._split_rows
            self._split = split
        self._split_rows = ev.rows_done
        now = time.monotonic()
        last_of_split = ev.rows_done >= ev.rows_total
        if not last_of_split and now - self._last < self.every_s:
            return
        self._last = now
        done = self.rows_before + ev.rows_done
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        tok_s = ev.stats.tokens / max(ev.stats.seconds, 1e-9)
        log.info("features %s: %d/%d rows of the split (%d/%d overall), %.0f tokens/s, ETA %.0f s", split,
                 ev.rows_done, ev.rows_total, done, self.total, tok_s, eta)


def _json(obj: object) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
