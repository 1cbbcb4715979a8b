"""Small, JSON-serialisable references that tasks return instead of data.

A reference names where an artifact lives (a URI), its shape, and its content digest. The digest is the
artifact's identity downstream: cache keys are built from digests, never from paths, so moving a work
folder keeps the cache and changing an input's bytes invalidates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ArtifactRef(BaseModel):
    """Base of every reference: a URI, a content digest and free-form small metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    digest: str = Field(min_length=8)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="name -> local path of side artifacts")
    mlflow_run_id: str | None = None

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
