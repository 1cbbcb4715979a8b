"""The README's train command, exactly as written there, and the shipped configs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from coala_core.engine.spec import HeadSpec
from flows.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
COALA = Path(sys.executable).with_name("coala")


def readme_command(prefix: str) -> str:
    """The first command in backticks in README.md that starts with ``prefix``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = [m for m in re.findall(r"`(coala [^`]+)`", text) if m.startswith(prefix)]
    assert found, f"README.md has no `{prefix} ...` command"
    return found[0]


def test_readme_train_command_runs_as_written(small_store):
    """`coala train --features STORE --pairs P --output HEAD`, no --config: unset options change nothing
    (issue 15: it failed with 'Phase1Config.preset: Input should be ...' before)."""
    command = readme_command("coala train ")
    assert command == "coala train --features STORE --pairs P --output HEAD"
    values = {"STORE": str(small_store / "feat.zarr"), "P": str(small_store / "pairs.parquet"),
              "HEAD": str(small_store / "head")}
    argv = [values.get(tok, tok) for tok in shlex.split(command)]
    out = subprocess.run([str(COALA), *argv[1:]], capture_output=True, text=True, cwd=small_store, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "head written to" in out.stdout
    meta = json.loads((small_store / "head" / "head.json").read_text())
    assert meta["config"]["phase1"]["n_patterns"] == HeadSpec().phase1.n_patterns
    assert meta["training"]["phase"] == "phase2" and meta["training"]["phase1_path"]


@pytest.mark.parametrize("name", ["gpu.yaml", "paper.yaml", "demo.yaml", "tiny.yaml"])
def test_shipped_configs_load_in_the_pipeline_and_in_train(name):
    path = ROOT / "configs" / name
    config = PipelineConfig.from_yaml(path)
    spec = HeadSpec.from_yaml(path, ignore=list(PipelineConfig.model_fields))
    assert spec == config.head_spec()
    assert name in (ROOT / "README.md").read_text(encoding="utf-8")
    if name == "paper.yaml":
        assert spec.phase1.solver == "cronos" and spec.phase1.rho == 1e-4 and spec.phase2.solver == "adamw"
        assert spec.train.phase1_betas == [1e-3]
    if name == "gpu.yaml":
        assert spec.phase1.backend == "auto" and config.features.device == "cuda"


def test_a_pipeline_train_section_is_accepted(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text((ROOT / "configs" / "tiny.yaml").read_text() + "train:\n  first_layer: random\n  random_width: 5\n")
    config = PipelineConfig.from_yaml(cfg)
    assert config.train.first_layer == "random" and config.head_spec().train.random_width == 5
