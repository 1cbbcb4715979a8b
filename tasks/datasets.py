"""MLflow dataset records of the pipeline's artifacts, with their schemas.

A pairs file is logged with the canonical pairs schema (``storage.pairs.PAIRS_SCHEMA`` as MLflow column
specs) and its rows per split; a feature store with a tensor schema (``chosen`` and ``rejected``, n x d of
its dtype) and its shape and provenance; any other input file by its bytes' digest. Nothing is uploaded:
a record names the source and the content digest (lineage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import Array, Object, Property

from tasks.caching import file_digest
from tasks.refs import DatasetRef, FeaturesRef, StoreRef
from tasks.tracking import TrackedRun

NOT_DATASETS = ("workdir", "output", "tracking")


def _arrow_to_mlflow(t: pa.DataType) -> Any:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Array(_arrow_to_mlflow(t.value_type))
    if pa.types.is_struct(t):
        return Object([Property(t.field(i).name, _arrow_to_mlflow(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_integer(t):
        return "long"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    return "string"


def pairs_schema() -> Schema:
    """The canonical pairs schema as MLflow column specs."""
    from storage.pairs import PAIRS_SCHEMA

    return Schema([ColSpec(_arrow_to_mlflow(f.type), f.name) for f in PAIRS_SCHEMA])


def store_schema(dim: int, dtype: str) -> Schema:
    """A feature store: two n x ``dim`` tensors of ``dtype`` (plus the pair ids)."""
    return Schema([TensorSpec(np.dtype(dtype), (-1, int(dim)), "chosen"),
                   TensorSpec(np.dtype(dtype), (-1, int(dim)), "rejected")])


def log_pairs(run: TrackedRun, ref: DatasetRef, context: str) -> None:
    run.log_dataset(ref.path, name="pairs", digest=ref.digest,
                    context=context, profile={"n_rows": ref.n_rows, **ref.splits}, schema=pairs_schema())


def log_store(run: TrackedRun, ref: StoreRef, context: str) -> None:
    dtype = str(ref.provenance.get("dtype") or ref.provenance.get("store_dtype") or "float32")
    try:
        np.dtype(dtype)
    except TypeError:
        dtype = "float32"
    profile = {"n_rows": ref.n_rows, "dim": ref.dim, "split": ref.split,
               "provenance": json.dumps(ref.provenance, sort_keys=True, default=str)}
    run.log_dataset(ref.path, name=f"features-{ref.split}", digest=ref.digest, context=context, profile=profile,
                    schema=store_schema(ref.dim, dtype))


def log_ref(run: TrackedRun, value: Any, context: str) -> None:
    """Log ``value`` if it is a dataset-like reference (a pairs file, feature stores) or an input file."""
    if isinstance(value, DatasetRef):
        log_pairs(run, value, context)
    elif isinstance(value, FeaturesRef):
        for split, store in sorted(value.stores.items()):
            log_store(run, store, f"{context}-{split}")
    elif isinstance(value, StoreRef):
        log_store(run, value, context)
    elif isinstance(value, Path) and value.is_file():
        run.log_dataset(value, name=value.name, digest=file_digest(value), context=context)


def log_input_datasets(run: TrackedRun, inputs: Mapping[str, Any]) -> None:
    """Every dataset-like input of a stage, in the context named by its parameter."""
    for name, value in inputs.items():
        if name not in NOT_DATASETS:
            log_ref(run, value, name)


def log_output_datasets(run: TrackedRun, ref: Any) -> None:
    """The stage's output, when it is a dataset (pairs or feature stores), in context ``output``."""
    if isinstance(ref, DatasetRef | FeaturesRef | StoreRef):
        log_ref(run, ref, "output")
