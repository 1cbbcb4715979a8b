"""Log the trained head as an MLflow pyfunc model (models-from-code, no pickle) and register it with an alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from tasks.refs import HeadRef
from tasks.stage import TrackingContext

MODEL_CODE = Path(__file__).with_name("scorer_model.py")


def register_scorer(tracking: TrackingContext, head: HeadRef, provenance: dict[str, Any], config: Any) -> str:
    """Log the scorer in the pipeline's parent run, register it as ``run.registered_model`` and point
    ``run.model_alias`` at the new version; returns the version number."""
    client = tracking.client()
    extraction = config.features.to_dict()
    with mlflow.start_run(run_id=tracking.parent_run_id):
        info = mlflow.pyfunc.log_model(
            name="reward_model", python_model=str(MODEL_CODE), artifacts={"head": head.uri},
            model_config={"extraction": extraction, "backbone": provenance.get("model_id", extraction.get("model")),
                          "head_digest": head.digest},
            code_paths=None, registered_model_name=config.run.registered_model,
            pip_requirements=["coala-pipeline"], metadata={"head_digest": head.digest[:36]},
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(config.run.registered_model, config.run.model_alias, version)
    return version
