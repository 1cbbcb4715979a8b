"""Small, JSON-serialisable references that tasks return instead of data.

A reference names where an artifact lives (a URI), its shape, and its content digest. The digest is the
artifact's identity downstream: cache keys are built from digests, never from paths, so moving a work
folder keeps the cache and changing an input's bytes invalidates it.

Relocatable: in JSON (how Prefect persists cached results, under the workdir) a path inside the workdir is
written relative to it, as ``@workdir/<relative path>``, and read back against the workdir of the process
that reads it (``COALA_WORKDIR``, set by ``flows.runtime.prepare_environment``). A moved workdir keeps its
cache, and a copied one reads its own files, never the original's. In Python the paths stay absolute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

WORKDIR_ENV = "COALA_WORKDIR"
WORKDIR_PREFIX = "@workdir/"


def to_portable(value: str) -> str:
    """``@workdir/<rel>`` for an absolute path (or file:// URI) inside the current workdir; else unchanged."""
    root = os.environ.get(WORKDIR_ENV)
    path = value.removeprefix("file://")
    if not root or not os.path.isabs(path):
        return value
    root = os.path.abspath(root)
    path = os.path.abspath(path)
    if path == root or not path.startswith(root.rstrip(os.sep) + os.sep):
        return value
    return WORKDIR_PREFIX + os.path.relpath(path, root)


def from_portable(value: str) -> str:
    """The absolute path of an ``@workdir/<rel>`` reference in the current workdir; else unchanged."""
    if not isinstance(value, str) or not value.startswith(WORKDIR_PREFIX):
        return value
    root = os.environ.get(WORKDIR_ENV)
    if not root:
        raise ValueError(f"{value!r} is relative to the pipeline's workdir, but {WORKDIR_ENV} is not set")
    return str(Path(os.path.abspath(root)) / value[len(WORKDIR_PREFIX):])


class ArtifactRef(BaseModel):
    """Base of every reference: a URI, a content digest and free-form small metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    digest: str = Field(min_length=8)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="name -> local path of side artifacts")
    mlflow_run_id: str | None = None

    @field_validator("uri", mode="before")
    @classmethod
    def _uri_here(cls, v: Any) -> Any:
        return from_portable(v)

    @field_validator("files", mode="before")
    @classmethod
    def _files_here(cls, v: Any) -> Any:
        return {k: from_portable(p) for k, p in v.items()} if isinstance(v, dict) else v

    @field_serializer("uri", when_used="json")
    def _uri_portable(self, v: str) -> str:
        return to_portable(v)

    @field_serializer("files", when_used="json")
    def _files_portable(self, v: dict[str, str]) -> dict[str, str]:
        return {k: to_portable(p) for k, p in v.items()}

    @property
    def path(self) -> Path:
        return Path(self.uri.removeprefix("file://"))

    def cache_token(self) -> str:
        """What a cache key sees of this reference: its kind and content digest (not its location)."""
        return f"{type(self).__name__}:{self.digest}"


class DatasetRef(ArtifactRef):
    """A canonical pairs Parquet file (storage.pairs) with its row count per split."""

    n_rows: int
    splits: dict[str, int] = Field(default_factory=dict)


class StoreRef(ArtifactRef):
    """One feature store (storage.FeatureStore): n_rows x dim of chosen and rejected features."""

    split: str
    n_rows: int
    dim: int
    provenance: dict[str, Any] = Field(default_factory=dict)


class FeaturesRef(BaseModel):
    """The feature stores of one dataset, one per split, made with one extraction config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stores: dict[str, StoreRef]
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def digest(self) -> str:
        return "+".join(f"{k}={v.digest}" for k, v in sorted(self.stores.items()))

    def cache_token(self) -> str:
        return f"FeaturesRef:{self.digest}"

    def __getitem__(self, split: str) -> StoreRef:
        return self.stores[split]


class HeadRef(ArtifactRef):
    """A trained head directory (head.safetensors + head.json) of width m on features of width dim."""

    phase: str
    dim: int
    width: int


class ReportRef(ArtifactRef):
    """An evaluation output directory: metrics JSON, plots and a markdown report."""


REFERENCE_TYPES = (ArtifactRef, FeaturesRef)
