"""Typed, validated configuration shared by every stage.

Each stage defines one pydantic model deriving from :class:`StageConfig`. A config is frozen, rejects
unknown fields, loads from YAML (optionally one section of a multi-stage file) and accepts overrides by
field name. Validation errors are re-raised as :class:`coala_core.errors.ConfigError` whose message names
the field, the rule and the value received.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from coala_core.errors import ConfigError, MissingInputError


def format_validation_error(model: str, err: ValidationError) -> str:
    """Render a pydantic error as 'model.field: rule (got value)' lines."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        lines.append(f"{model}.{loc}: {e['msg']} (got {value!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


class StageConfig(BaseModel):
    """Base of every stage config: frozen, strict about unknown keys, YAML-loadable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: named bundles of field values: a config whose ``preset`` field names one starts from those values and
    #: the fields given explicitly override them (e.g. the authors' defaults as ``preset: paper``)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in cls.PRESETS:
            return {**cls.PRESETS[data["preset"]], **data}
        return data

    @classmethod
    def build(cls, data: Mapping[str, Any] | None = None, **overrides: Any) -> Self:
        """Validate ``data`` updated by ``overrides`` (``None`` overrides are ignored)."""
        merged = dict(data or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(format_validation_error(cls.__name__, err)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None, **overrides: Any) -> Self:
        """Load from a YAML file; ``section`` picks one top-level key of a multi-stage file."""
        data = load_yaml(path)
        if section is not None:
            check_sections(data, path)
            data = data.get(section) or {}
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: section {section!r} must be a mapping, got {type(data).__name__}")
        return cls.build(data, **overrides)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with some fields changed."""
        return type(self).build(self.model_dump(), **changes)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Top-level sections a config YAML may have (the pipeline's, plus those of the stage commands). A misspelled
# section would otherwise be ignored silently by every command that reads only its own section.
CONFIG_SECTIONS: set[str] = {"run", "dataset", "features", "phase1", "phase2", "train", "evaluation", "generate",
                             "baseline", "baselines", "llm_baseline", "llm_baselines", "score", "serve", "dask",
                             "edufeedback", "import"}


def register_sections(*names: str) -> None:
    """Declare more top-level config sections (for a stage added later)."""
    CONFIG_SECTIONS.update(names)


def check_sections(data: Mapping[str, Any], path: str | Path) -> None:
    """ConfigError naming every unknown top-level section of a config file."""
    unknown = sorted(str(k) for k in data if k not in CONFIG_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown config section(s) {unknown}; known sections: {sorted(CONFIG_SECTIONS)}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (for tracking params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
