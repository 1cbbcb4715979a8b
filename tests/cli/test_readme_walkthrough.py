"""README "Bring your own data": every command of its block, exactly as written, in a fresh folder with the
example files, on the bundled SmolLM2 model (the product path a user follows, end to end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from coala_testsupport.readme import readme_commands

REPO = Path(__file__).resolve().parents[2]


def walkthrough_commands() -> list[str]:
    return readme_commands("Bring your own data")


@pytest.mark.slow  # two Phase I beta paths at d = 576, P = 10 on the CPU: about half an hour on 2 cores (issue 10)
def test_bring_your_own_data_commands_run_as_written(tmp_path):
    commands = walkthrough_commands()
    assert len(commands) == 9 and all(c.startswith("coala ") for c in commands)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for command in commands:
        res = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    work = tmp_path / "work"
    for name in ("rated", "chats"):
        report = (work / f"{name}-report" / "report.md").read_text(encoding="utf-8")
        assert "**pairwise accuracy:" in report
        head = json.loads((work / f"{name}-head" / "head.json").read_text())
        prov = head["feature_provenance"]
        assert prov["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and prov["compute_dtype"] == "float32"
        assert head["training"]["phase"] == "phase2" and head["metrics"]["converged"]
    scored = [json.loads(ln) for ln in (work / "new_responses.scored.jsonl").read_text().splitlines() if ln.strip()]
    assert len(scored) == 4
    assert all(isinstance(r["reward"], float) and r["response"] for r in scored)
