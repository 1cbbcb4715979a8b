"""Log the trained head as an MLflow pyfunc model (models-from-code, no pickle) and register it with an alias.

A new model version is made only when the head changed: each version carries the head's content digest in
its tag ``coala.head_digest``, and a pipeline run whose head has the digest of the latest version (a fully
cached rerun) keeps that version and only points the alias at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from tasks.refs import HeadRef
from tasks.stage import TrackingContext

MODEL_CODE = Path(__file__).with_name("scorer_model.py")
HEAD_DIGEST_TAG = "coala.head_digest"


@dataclass(frozen=True)
class Registration:
    """The model version the alias points at after a pipeline run, and whether this run created it."""

    name: str
    version: str
    alias: str
    created: bool


def latest_version(client: MlflowClient, name: str) -> Any | None:
    """The highest version of registered model ``name``, or None when it has none (or does not exist)."""
    versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    return versions[0] if versions else None


def register_scorer(tracking: TrackingContext, head: HeadRef, provenance: dict[str, Any], config: Any) -> Registration:
    """Point ``run.model_alias`` of ``run.registered_model`` at a version holding ``head``: the latest version
    when its head digest equals ``head.digest``, else a new version logged in the pipeline's parent run."""
    client = tracking.client()
    name, alias = config.run.registered_model, config.run.model_alias
    latest = latest_version(client, name)
    if latest is not None and latest.tags.get(HEAD_DIGEST_TAG) == head.digest:
        client.set_registered_model_alias(name, alias, latest.version)
        return Registration(name, str(latest.version), alias, created=False)
    extraction = config.features.to_dict()
    with mlflow.start_run(run_id=tracking.parent_run_id):
        info = mlflow.pyfunc.log_model(
            name="reward_model", python_model=str(MODEL_CODE), artifacts={"head": head.uri},
            model_config={"extraction": extraction, "backbone": provenance.get("model_id", extraction.get("model")),
                          "head_digest": head.digest},
            code_paths=None, registered_model_name=name,
            pip_requirements=["coala-pipeline"], metadata={"head_digest": head.digest[:36]},
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, HEAD_DIGEST_TAG, head.digest)
    client.set_registered_model_alias(name, alias, version)
    return Registration(name, version, alias, created=True)
