"""The README's "Scaling out" commands: each `coala` line parses with the CLI's own option parsing and its config
(with the `--set` overrides) validates; `dask` and `prefect` lines name commands and options that exist.
Running them needs a cluster (several GPU machines, a Prefect server); the Dask paths themselves run in
tests/dist/test_dask_extract.py and test_dask_phase1.py on a LocalCluster."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import PipelineConfig, parse_overrides

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    parts = text.split("## Scaling out", 1)
    assert len(parts) == 2, "README has no 'Scaling out' section"
    body = parts[1].split("\n## ", 1)[0]
    lines = [ln.strip() for block in re.findall(r"```bash\n(.*?)```", body, re.S) for ln in block.splitlines()]
    return [shlex.split(ln) for ln in lines if ln and not ln.startswith("#")]


def _options(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.setdefault(arg, []).append(argv[i + 1])
    return out


def _help(argv: list[str]) -> str:
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120,
                          env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "COLUMNS": "200",
                               "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(REPO / ".coala")})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pipeline_commands_configure_dask() -> None:
    runs = [c for c in _commands() if c[0].endswith("coala") and c[1:3] == ["pipeline", "run"]]
    assert len(runs) == 2
    for argv in runs:
        opts = _options(argv)
        config = PipelineConfig.from_yaml(REPO / opts["--config"][0], parse_overrides(opts["--set"]))
        assert config.run.task_runner == "dask" and config.run.dask_workers >= 2
    assert PipelineConfig.from_yaml(REPO / "configs/demo.yaml", parse_overrides(_options(runs[1])["--set"])).run.dask_address \
        == "tcp://10.0.0.1:8786"


def test_other_commands_exist_with_their_options() -> None:
    commands = _commands()
    extract = [c for c in commands if c[0].endswith("coala") and c[1:3] == ["features", "extract"]]
    assert len(extract) == 1
    text = _help([str(BIN / "coala"), "features", "extract"])
    for opt in _options(extract[0]):
        assert opt in text, f"coala features extract has no {opt}"
    prefect = [c for c in commands if c[0] == "prefect"]
    assert {" ".join(c[1:3]) for c in prefect} >= {"work-pool create", "worker start"}
    deploy = next(c for c in prefect if "deploy" in c)
    text = _help([str(BIN / "prefect"), "deploy"])
    for opt in _options(deploy):
        assert opt in text, f"prefect deploy has no {opt}"
    assert "coala_pipeline" in (REPO / deploy[deploy.index("deploy") + 1].split(":")[0]).read_text()
    dask = [c for c in commands if c[0] == "dask"]
    assert [c[1] for c in dask] == ["scheduler", "cuda"]
    text = _help([str(BIN / "dask"), "scheduler"])
    assert "--host" in text and "--port" in text


@pytest.mark.parametrize("value", ["ray", ""])
def test_a_wrong_task_runner_is_a_config_error(value: str) -> None:
    from coala_core.errors import ConfigError

    with pytest.raises(ConfigError, match="task_runner"):
        PipelineConfig.from_yaml(REPO / "configs/demo.yaml", {"run.task_runner": value})
