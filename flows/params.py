"""Typed flow parameters: the overrides a user may change from the Prefect UI's run form.

A deployment's parameters are the config path on the serving host plus :class:`PipelineParams`, whose
JSON schema the UI turns into a form that validates each field (type, bounds) before a run starts. Fields
left empty keep the YAML's value; :meth:`PipelineParams.to_overrides` maps the set ones to the dotted keys
of :func:`flows.config.PipelineConfig.from_yaml`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]


def _key(dotted: str) -> dict[str, Any]:
    return {"json_schema_extra": {"config_key": dotted}}


class PipelineParams(BaseModel):
    """Overrides of the pipeline YAML that a run form may set (empty = keep the YAML's value)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="COALA pipeline overrides")

    run_name: str | None = Field(None, min_length=1, description="prefix of the MLflow parent run",
                                 **_key("run.name"))
    dataset_input: str | None = Field(None, min_length=1, description="input file on the serving host",
                                      **_key("dataset.input"))
    dataset_limit: int | None = Field(None, ge=1, description="use at most this many source records",
                                      **_key("dataset.options.limit"))
    features_model: str | None = Field(None, min_length=1, description="model id, local path or 'default'",
                                       **_key("features.model"))
    features_max_tokens: int | None = Field(None, ge=8, description="tokens per text", **_key("features.max_tokens"))
    phase1_n_patterns: int | None = Field(None, ge=1, description="gate patterns P of Phase I",
                                          **_key("phase1.n_patterns"))
    phase1_path_n_betas: int | None = Field(None, ge=1, description="betas on the Phase I path",
                                            **_key("phase1.path_n_betas"))
    phase2_l2_grid: list[PositiveFloat] | None = Field(None, min_length=1, description="Phase II L2 grid",
                                                       **_key("phase2.l2_grid"))
    evaluation_n_boot: int | None = Field(None, ge=0, description="bootstrap resamples", **_key("evaluation.n_boot"))
    register_model: bool | None = Field(None, description="register the head in the MLflow model registry",
                                        **_key("run.register_model"))

    def to_overrides(self) -> dict[str, Any]:
        """The set fields as dotted config overrides."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                extra = info.json_schema_extra
                assert isinstance(extra, dict)
                out[str(extra["config_key"])] = value
        return out
