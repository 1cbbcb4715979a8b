"""What to train: one spec with a section per concern, the same in ``coala train --config`` and the pipeline YAML.

``phase1`` (:class:`coala_core.phase1.Phase1Config`: the convex program, its solver, the beta path, data
movement and the memory budget), ``phase2`` (:class:`coala_core.phase2.Phase2Config`: the loss, solver and
validation grid of the theta2 refit) and ``train`` (:class:`TrainConfig`: which first layer, explicit betas).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coala_core.config import StageConfig, format_validation_error, load_yaml
from coala_core.errors import ConfigError
from coala_core.phase1.config import Phase1Config
from coala_core.phase2.config import Phase2Config

SECTIONS = ("phase1", "phase2", "train")


class TrainConfig(StageConfig):
    """How the head is assembled around Phase I and Phase II."""

    first_layer: Literal["phase1", "random"] = Field(
        "phase1", description="phase1: the convex Phase I network; random: a seeded random ReLU layer (an ablation)")
    random_width: int = Field(default=20, ge=1, description="m for first_layer: random")
    phase1_betas: list[float] | None = Field(default=None, description="explicit Phase I beta path (default: a grid)")
    seed: int = Field(0, description="seed of the random first layer")


class HeadSpec(BaseModel):
    """The full training spec: ``phase1``, ``phase2`` and ``train`` sections (frozen; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase1: Phase1Config = Field(default_factory=lambda: Phase1Config.build())
    phase2: Phase2Config = Field(default_factory=lambda: Phase2Config.build())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.build())

    @classmethod
    def build(cls, data: Mapping[str, Any] | None = None, **sections: Any) -> HeadSpec:
        """Validate sections given as mappings or config objects; ``sections`` replace those of ``data``."""
        merged = {**dict(data or {}), **{k: v for k, v in sections.items() if v is not None}}
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(format_validation_error("HeadSpec", err)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, ignore: Iterable[str] = (),
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> HeadSpec:
        """The ``phase1``/``phase2``/``train`` sections of a YAML file. Other top-level sections named in
        ``ignore`` (the pipeline's ``run``, ``dataset``, ...) are skipped; any other one is an error (a
        misspelled section never passes silently). ``overrides``: section -> field values (None = unset)."""
        data = load_yaml(path)
        unknown = sorted(set(data) - set(SECTIONS) - set(ignore))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; expected {list(SECTIONS)}"
                              + (f" (or the pipeline's {sorted(ignore)})" if ignore else ""))
        sections: dict[str, Any] = {}
        for name in SECTIONS:
            raw = data.get(name) or {}
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{path}: section {name!r} must be a mapping, got {type(raw).__name__}")
            sections[name] = dict(raw)
        return cls.with_overrides(sections, overrides)

    @classmethod
    def with_overrides(cls, sections: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None) -> HeadSpec:
        """``sections`` (section -> mapping) updated by ``overrides`` whose None values mean "not given"."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            base = dict(sections.get(name) or {})
            base.update({k: v for k, v in (overrides or {}).get(name, {}).items() if v is not None})
            out[name] = base
        return cls.build(out)

    def replace(self, **sections: Any) -> HeadSpec:
        """A copy with whole sections replaced (config objects or mappings)."""
        return type(self).build(self.to_dict(), **sections)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
