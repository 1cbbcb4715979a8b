"""From a model reference to a ready scorer: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/PATH``,
a downloaded MLflow model directory, or a head directory.

An MLflow reference is downloaded (MLflow's own artifact resolution, so a tracking server works as the local
SQLite store does); a model directory yields the head artifact and the backbone recorded at registration. The
backbone is then loaded and its provenance (model id, revision, dtype, hidden size, pooling, layer, max
tokens, ...) compared with the head's: a mismatch is a ProvenanceMismatchError, never a silent score.

This module imports neither Prefect nor anything from flows, so the registered pyfunc model (which ships it)
loads with MLflow alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coala_core.errors import ConfigError, MissingInputError
from coala_core.features import FeatureExtractor, load_model
from coala_core.generation import HeadScorer, extraction_config_for
from storage.heads import META, check_provenance, load_head

#: overrides the backbone recorded with a registered model (a local copy of the weights)
BACKBONE_ENV = "COALA_BACKBONE"


@dataclass(frozen=True)
class ResolvedModel:
    """A head directory and the backbone reference stored with it (``{}`` for a bare head directory)."""

    head_dir: Path
    backbone: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    download_dir: Path | None = None  # a temporary copy of an MLflow reference, removed by :meth:`cleanup`

    def cleanup(self) -> None:
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)


def _from_model_dir(path: Path, source: str, download_dir: Path | None = None) -> ResolvedModel:
    from mlflow.models import Model

    flavor = Model.load(str(path)).flavors.get("python_function", {})
    config = flavor.get("config") or flavor.get("model_config") or {}  # MLflow 3 stores model_config as "config"
    head_rel = (flavor.get("artifacts") or {}).get("head", {}).get("path")
    head_dir = path / head_rel if head_rel else path / "artifacts" / "head"
    if not (head_dir / META).is_file():
        raise MissingInputError(f"{source}: the MLflow model has no COALA head artifact ({head_dir} lacks {META})")
    return ResolvedModel(head_dir, dict(config.get("backbone") or {}), source, download_dir)


def resolve(uri: str, *, tracking_uri: str | None = None) -> ResolvedModel:
    """Where the head of ``uri`` lives locally and which backbone its registration names."""
    path = Path(uri).expanduser()
    if path.is_dir():
        if (path / META).is_file():
            return ResolvedModel(path, {}, uri)
        if (path / "MLmodel").is_file():
            return _from_model_dir(path, uri)
        raise MissingInputError(f"{uri}: neither a head directory ({META}) nor an MLflow model directory (MLmodel)")
    if not uri.startswith(("models:/", "runs:/")):
        raise MissingInputError(f"model not found: {uri} (expected models:/NAME@ALIAS, runs:/ID/PATH or a head directory)")
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri and tracking_uri.startswith("sqlite:///") and tracking_uri.endswith("/mlflow.db"):
        from tasks.relocation import rebase_mlflow_store

        rebase_mlflow_store(Path(tracking_uri.removeprefix("sqlite:///")).parent)  # a moved or copied workdir: its own files
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    dst = Path(tempfile.mkdtemp(prefix="coala-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as err:
        shutil.rmtree(dst, ignore_errors=True)
        raise MissingInputError(f"{uri}: {err.message.splitlines()[0] if err.message else err}") from None
    if (local / META).is_file():
        return ResolvedModel(local, {}, uri, dst)
    if (local / "MLmodel").is_file():
        return _from_model_dir(local, uri, dst)
    shutil.rmtree(dst, ignore_errors=True)
    raise MissingInputError(f"{uri}: downloaded, but it is neither a head directory nor an MLflow model")


def backbone_override(backbone: Mapping[str, Any]) -> str | None:
    """The model to load when the registration's hub id is not the way to reach it: ``$COALA_BACKBONE``,
    else the local path recorded at registration when it still exists, else None (use the hub id)."""
    env = os.environ.get(BACKBONE_ENV)
    if env:
        return env
    local = backbone.get("local_path")
    if local and Path(local).expanduser().exists():
        return str(local)
    return None


def load_scorer(
    head_dir: str | Path,
    *,
    backbone: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    num_threads: int | None = None,
) -> HeadScorer:
    """The head plus the backbone that made its features, with the provenance of the loaded backbone checked
    against the head's (ProvenanceMismatchError naming every differing field)."""
    head = load_head(head_dir)
    prov = dict(head.meta.get("feature_provenance") or {})
    missing = [k for k in ("model_id", "pooling", "max_tokens") if k not in prov]
    if missing:
        raise ConfigError(f"head {head_dir}: its feature provenance lacks {missing}; cannot reproduce its features")
    cfg = extraction_config_for(prov, model=backbone, device=device, batch_size=batch_size, num_threads=num_threads)
    extractor = FeatureExtractor(load_model(cfg), cfg)
    actual = extractor.provenance(dataset_digest=str(prov.get("dataset_digest", "")))
    check_provenance({k: v for k, v in prov.items() if k in actual}, actual,
                     f"head {head_dir} scored with backbone {cfg.model!r}")
    return HeadScorer(extractor, head, store_dtype=str(prov.get("store_dtype", "float32")))


def open_scorer(uri: str, *, backbone: str | None = None, tracking_uri: str | None = None, **speed: Any) -> tuple[HeadScorer, ResolvedModel]:
    """:func:`resolve` then :func:`load_scorer`; ``backbone`` (a path or hub id) overrides the recorded one."""
    resolved = resolve(uri, tracking_uri=tracking_uri)
    try:
        override = backbone or backbone_override(resolved.backbone)
        return load_scorer(resolved.head_dir, backbone=override, **speed), resolved
    finally:
        resolved.cleanup()  # the head is in memory now
