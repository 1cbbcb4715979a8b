from __future__ import annotations

import pytest
from pydantic import Field

from coala_core.config import StageConfig, flatten
from coala_core.errors import ConfigError, MissingInputError


class Demo(StageConfig):
    beta: float = Field(1e-3, gt=0)
    n_patterns: int = Field(10, ge=1)


def test_yaml_section_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  beta: 0.5\n  n_patterns: 3\n")
    c = Demo.from_yaml(p, section="train", n_patterns=7)
    assert (c.beta, c.n_patterns) == (0.5, 7)
    assert c.replace(beta=2.0).beta == 2.0


def test_errors_name_field_rule_value(tmp_path):
    with pytest.raises(ConfigError, match=r"Demo\.beta: Input should be greater than 0 \(got -1\)"):
        Demo.build({"beta": -1})
    with pytest.raises(ConfigError, match=r"Demo\.typo: Extra inputs are not permitted"):
        Demo.build({"typo": 1})
    with pytest.raises(MissingInputError):
        Demo.from_yaml(tmp_path / "none.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        Demo.from_yaml(tmp_path / "l.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


class WithPreset(StageConfig):
    PRESETS = {"paper": {"beta": 2.5, "n_patterns": 4}}
    preset: str = "default"
    beta: float = 1.0
    n_patterns: int = 10


def test_preset_fills_fields_and_explicit_fields_win():
    assert WithPreset.build({"preset": "paper"}).beta == 2.5
    c = WithPreset.build({"preset": "paper", "n_patterns": 7})
    assert (c.beta, c.n_patterns) == (2.5, 7)
    assert WithPreset.build({}).beta == 1.0
