"""One YAML file configures the whole pipeline: a section per stage, validated together.

    run:        name, work folder, MLflow experiment, registered model name and alias, tracking switches
    dataset:    builder (edufeedback | import), input path, and the builder's own config fields
    features:   coala_core.features.ExtractionConfig
    phase1:     coala_core.phase1.Phase1Config
    phase2:     coala_core.phase2.Phase2Config
    train:      coala_core.engine.TrainConfig (first layer, explicit Phase I betas)
    evaluation: bootstrap size, seed, splits to report

Every stage section is the stage's own typed config, so ``coala features extract --config demo.yaml`` and
the pipeline read the same section the same way; ``coala train --config`` reads ``phase1``, ``phase2`` and
``train`` from the same file. Relative paths (``dataset.input``, ``run.workdir``) are
relative to the current directory, as everywhere in the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coala_core.config import StageConfig, flatten, format_validation_error, load_yaml
from coala_core.data import EduFeedbackConfig, ImportConfig
from coala_core.engine.spec import HeadSpec, TrainConfig
from coala_core.errors import ConfigError
from coala_core.features.config import ExtractionConfig
from coala_core.generation.config import GenerateConfig
from coala_core.phase1.config import Phase1Config
from coala_core.phase2 import Phase2Config

BUILDERS: dict[str, type[StageConfig]] = {"edufeedback": EduFeedbackConfig, "import": ImportConfig}


class RunSection(StageConfig):
    """Where the pipeline writes and how it is tracked."""

    name: str = Field("coala", min_length=1, description="prefix of the MLflow parent run and Prefect flow run")
    workdir: str = Field(".coala", min_length=1, description="artifacts, the embedded MLflow store, Prefect results")
    experiment: str = Field("coala", min_length=1)
    registered_model: str = Field("coala-reward-head", min_length=1, pattern=r"^[^/:\s][^/:]*$",
                                  description="MLflow registered model name: no '/' or ':' (checked before any stage runs)")
    model_alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]*$")
    alias_policy: Literal["not-worse", "always"] = Field(
        "not-worse", description="move the alias to a new version only when its validation accuracy is >= the holder's")
    register_model: bool = True
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(5.0, gt=0)
    task_timeout_s: float = Field(3600.0, gt=0, description="timeout of each compute task")
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="thread: tasks in this process; dask: feature shards as mapped tasks, and Phase I's passes "
                  "over the train rows (every ADMM iteration), on a Dask cluster")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster (tcp://host:8786); "
                                                       "unset: a LocalCluster of dask_workers processes")
    dask_workers: int = Field(2, ge=1, description="LocalCluster workers, and the number of extraction shards")


class DatasetSection(StageConfig):
    """``builder`` picks the core function, ``input`` the file, ``options`` the builder's config."""

    builder: Literal["edufeedback", "import"] = "edufeedback"
    input: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_valid(self) -> DatasetSection:
        self.builder_config()  # raises ConfigError naming dataset.options.<field>
        return self

    def builder_config(self) -> EduFeedbackConfig | ImportConfig:
        return BUILDERS[self.builder].build(self.options)  # type: ignore[return-value]


class EvaluationSection(StageConfig):
    splits: list[Literal["train", "validation", "test"]] = Field(default_factory=lambda: ["test"], min_length=1)
    n_boot: int = Field(1000, ge=0)
    seed: int = 0
    cv_folds: int = Field(0, ge=0, description="K > 1: also refit the head's recipe and the baselines on K group "
                          "folds of all pairs (every pair held out once; paired McNemar); 0: off")

    @model_validator(mode="after")
    def _cv_folds_valid(self) -> EvaluationSection:
        if self.cv_folds == 1:
            raise ValueError("cv_folds: 1 fold holds every pair out at once; use 0 (off) or K >= 2")
        return self


class PipelineConfig(BaseModel):
    """The composed config of the whole DAG (frozen; unknown sections are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunSection = Field(default_factory=RunSection)
    dataset: DatasetSection
    features: ExtractionConfig = Field(default_factory=ExtractionConfig)
    phase1: Phase1Config = Field(default_factory=Phase1Config)
    phase2: Phase2Config = Field(default_factory=Phase2Config)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="coala generate --config reads it")

    @classmethod
    def build(cls, data: dict[str, Any]) -> PipelineConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error("PipelineConfig", err)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
        """Load ``path`` and apply dotted overrides such as ``{"phase2.l2": 0.1}``."""
        data = load_yaml(path)
        for dotted, value in (overrides or {}).items():
            set_dotted(data, dotted, value)
        return cls.build(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def head_spec(self) -> HeadSpec:
        """The training spec (``phase1``, ``phase2``, ``train``): what ``coala train --config`` reads."""
        return HeadSpec(phase1=self.phase1, phase2=self.phase2, train=self.train)

    def params(self) -> dict[str, Any]:
        """The flattened config, as MLflow params (``phase1.beta``, ``features.model``, ...)."""
        return flatten(self.to_dict())

    @property
    def workdir(self) -> Path:
        return Path(self.run.workdir).resolve()


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "phase2.l2", 0.1)`` sets ``d["phase2"]["l2"]``, creating sections as needed."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section (got {child!r})")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["phase2.l2=0.1", "dataset.options.limit=50"]`` -> dotted dict, values parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected SECTION.FIELD=VALUE")
        out[key.strip()] = yaml.safe_load(raw)
    return out
