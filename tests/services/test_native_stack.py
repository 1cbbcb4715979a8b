"""The docker-compose topology, natively: PostgreSQL, the Prefect server, the MLflow server and the serving worker.

PostgreSQL from the Debian packages is initialised in a temporary folder (``initdb``, scram passwords) and listens
on a free port of 127.0.0.1 only; the compose file's own init script creates the Prefect and MLflow databases.
The servers and the worker get the commands and environment variables that ``docker-compose config`` resolves for
their services (from .env.example), with the compose hostnames replaced by 127.0.0.1 and its ports by free ones.
The pipeline (tiny config) runs once through the served deployment; the test checks the Prefect flow run through
the API, the MLflow runs and the registered model through MLflow, and all of them in the PostgreSQL tables.
Every process is stopped with its group, and every folder made here is removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compose import compose_model  # noqa: E402


def _server_helpers():  # noqa: ANN202 - the module of tests/flows/test_integration_servers.py
    """The process helpers of the SQLite server test (its module imports its folder's conftest by name)."""
    if "test_integration_servers" not in sys.modules:
        sys.path.insert(0, str(HERE.parent / "flows"))
        saved = sys.modules.pop("conftest", None)
        try:
            import test_integration_servers  # noqa: F401
        finally:
            if saved is not None:
                sys.modules["conftest"] = saved
    return sys.modules["test_integration_servers"]


H = _server_helpers()
pytestmark = pytest.mark.services

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
REPO = HERE.parents[1]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
DEPLOYMENT_NAME = "stack"


def _pg_user_prefix() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its commands as the packages' ``postgres`` user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser; PostgreSQL cannot be started")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Stack:
    root: Path
    procs: object  # test_integration_servers.Processes
    env: dict[str, str]  # the .env values used
    pg_port: int
    prefect_api: str
    mlflow_uri: str
    services: dict  # the resolved compose services

    def pg_connect(self, db: str):  # noqa: ANN201
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=self.env["POSTGRES_USER"],
                                password=self.env["POSTGRES_PASSWORD"], dbname=db, connect_timeout=5)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _native(value: str, ports: dict[str, int]) -> str:
    """A compose value with the service hostnames and container ports replaced by 127.0.0.1 and free ports."""
    return (value.replace("@postgres:5432/", f"@127.0.0.1:{ports['postgres']}/")
            .replace("http://prefect-server:4200", f"http://127.0.0.1:{ports['prefect']}")
            .replace("http://mlflow:5000", f"http://127.0.0.1:{ports['mlflow']}")
            .replace(f"127.0.0.1:{ports['published_prefect']}/api", f"127.0.0.1:{ports['prefect']}/api"))


def _with_options(cmd: list[str], **options: str) -> list[str]:
    """``cmd`` with the value after each ``--name`` replaced (``workers="1"`` sets ``--workers 1``)."""
    out = list(cmd)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        out[out.index(flag) + 1] = value
    return out


def _wait_postgres(bin_dir: str, port: int, procs: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.alive("postgres")
        if subprocess.run([f"{bin_dir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"postgres not ready after {timeout_s:.0f} s:\n{procs.tail('postgres')}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not PG_BINS:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it where it may)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary (dev and server extras) is not installed")
    bin_dir, prefix = PG_BINS[0], _pg_user_prefix()
    # not under pytest's per-user temp folder: that one is private to root, and postgres runs as its own user
    root = Path(tempfile.mkdtemp(prefix="coala-stack-"))
    t0 = time.monotonic()
    procs = H.Processes(root)
    try:
        values = _env_file(REPO / ".env.example")
        ports = {"postgres": H.free_port(), "prefect": H.free_port(), "mlflow": H.free_port(),
                 "published_prefect": int(values["PREFECT_PORT"])}
        services = compose_model()["services"]
        pgdata, sockets, pwfile = root / "pgdata", root / "sockets", root / "pwfile"
        sockets.mkdir()
        pwfile.write_text(values["POSTGRES_PASSWORD"] + "\n")
        if prefix:
            shutil.chown(root, "postgres")
            shutil.chown(sockets, "postgres")
            shutil.chown(pwfile, "postgres")
            os.chmod(root, 0o755)  # the servers' logs and homes below stay writable by this process (root)
        subprocess.run([*prefix, f"{bin_dir}/initdb", "-D", str(pgdata), "-U", values["POSTGRES_USER"], "--pwfile", str(pwfile),
                        "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        procs.start("postgres", [*prefix, f"{bin_dir}/postgres", "-D", str(pgdata), "-p", str(ports["postgres"]),
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                                 "-c", "fsync=off"], H.clean_env())
        _wait_postgres(bin_dir, ports["postgres"], procs)
        pg_env = {k: str(v) for k, v in services["postgres"]["environment"].items()}
        init = subprocess.run(["bash", str(REPO / "docker" / "postgres-init.sh")], capture_output=True, text=True, timeout=60,
                              env=H.clean_env(**pg_env, PATH=f"{bin_dir}:{os.environ['PATH']}", PGHOST="127.0.0.1",
                                              PGPORT=str(ports["postgres"]), PGPASSWORD=values["POSTGRES_PASSWORD"]))
        assert init.returncode == 0, init.stderr

        prefect = services["prefect-server"]
        prefect_env = {k: _native(str(v), ports) for k, v in prefect["environment"].items()}
        prefect_env["PREFECT_HOME"] = str(root / "prefect-home")
        procs.start("prefect-server", [str(H.BIN / prefect["command"][0]),
                                       *_with_options(prefect["command"][1:], host="127.0.0.1", port=str(ports["prefect"]))],
                    H.clean_env(**prefect_env))
        mlflow = services["mlflow"]
        mlflow_cmd = [_native(c, ports) for c in mlflow["command"]]
        mlflow_cmd = _with_options(mlflow_cmd, host="127.0.0.1", port=str(ports["mlflow"]), workers="1",
                                   artifacts_destination=str(root / "mlartifacts"))
        procs.start("mlflow-server", [str(H.BIN / mlflow_cmd[0]), *mlflow_cmd[1:]],
                    H.clean_env(**{k: str(v) for k, v in mlflow["environment"].items()}))
        H.wait_http(f"http://127.0.0.1:{ports['prefect']}/api/health", procs, "prefect-server", timeout_s=180)
        H.wait_http(f"http://127.0.0.1:{ports['mlflow']}/health", procs, "mlflow-server", timeout_s=180)
        print(f"stack up in {time.monotonic() - t0:.1f} s")
        yield Stack(root, procs, values, ports["postgres"], f"http://127.0.0.1:{ports['prefect']}/api",
                    f"http://127.0.0.1:{ports['mlflow']}", {**services, "_ports": ports})
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def test_stack_listens_on_loopback_only(stack: Stack) -> None:
    with stack.pg_connect("postgres") as con, con.cursor() as cur:
        cur.execute("show listen_addresses")
        assert cur.fetchone()[0] == "127.0.0.1"
        cur.execute("select datname from pg_database where datname in (%s, %s) order by 1",
                    (stack.env["MLFLOW_DB"], stack.env["PREFECT_DB"]))
        assert [r[0] for r in cur.fetchall()] == sorted([stack.env["MLFLOW_DB"], stack.env["PREFECT_DB"]])
    con.close()
    assert stack.prefect_api.startswith("http://127.0.0.1:") and stack.mlflow_uri.startswith("http://127.0.0.1:")


def test_pipeline_through_the_served_deployment(stack: Stack, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from coala_core.testing import save_tiny_lm

    model = save_tiny_lm(stack.root / "tiny-llama", chat_template=False)
    workdir = stack.root / "work"
    worker = stack.services["worker"]
    ports = stack.services["_ports"]
    worker_env = {k: _native(str(v), ports) for k, v in worker["environment"].items()}
    cmd = _with_options(worker["command"], config=str(TINY_CONFIG), name=DEPLOYMENT_NAME, cron="0 0 1 1 *")
    cmd = [arg for arg in cmd if not arg.startswith("run.workdir=")]
    assert cmd[-1] == "--set"
    cmd = [str(H.BIN / cmd[0]), *cmd[1:-1], *H._sets(model, workdir)]
    worker_env.update(PREFECT_HOME=str(stack.root / "worker-home"), PREFECT_RUNNER_POLL_FREQUENCY="1")
    stack.procs.start("worker", cmd, H.clean_env(**worker_env))
    deployment_name = f"coala-pipeline/{DEPLOYMENT_NAME}"
    try:
        with temporary_settings({PREFECT_API_URL: stack.prefect_api}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while True:
                stack.procs.alive("worker")
                try:
                    client.read_deployment_by_name(deployment_name)
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, stack.procs.tail("worker")
                    time.sleep(0.5)
            run = run_deployment(deployment_name, timeout=240, poll_interval=1)
            assert run.state.is_completed(), f"{run.state}\n{stack.procs.tail('worker')}"
            subflows, tasks = H._subflow_task_states(client, run.id)
            assert subflows == dict.fromkeys(H.SUBFLOWS, "COMPLETED")
            assert set(tasks.values()) == {"Completed"}
            stack.procs.settle("worker")
    finally:
        stack.procs.stop("worker")

    client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    exp = client.get_experiment_by_name("coala-tiny")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert parent.info.status == "FINISHED"
    version = client.get_model_version_by_alias("coala-tiny-head", "champion")
    assert version.run_id == parent.info.run_id
    assert any((stack.root / "mlartifacts").rglob("head.safetensors"))  # the artifact volume's folder

    # the same facts in the PostgreSQL tables behind both servers
    with stack.pg_connect(stack.env["PREFECT_DB"]) as con, con.cursor() as cur:
        cur.execute("select fr.state_type, d.name from flow_run fr join deployment d on d.id = fr.deployment_id "
                    "where fr.id = %s", (str(run.id),))
        assert cur.fetchone() == ("COMPLETED", DEPLOYMENT_NAME)
        cur.execute("select count(*) from flow_run where parent_task_run_id is not null and state_type = 'COMPLETED'")
        assert cur.fetchone()[0] >= len(H.SUBFLOWS)
    con.close()
    with stack.pg_connect(stack.env["MLFLOW_DB"]) as con, con.cursor() as cur:
        cur.execute("select r.status, count(*) from runs r join experiments e on e.experiment_id = r.experiment_id "
                    "where e.name = 'coala-tiny' group by r.status")
        assert dict(cur.fetchall()) == {"FINISHED": 1 + len(H.STAGES)}
        cur.execute("select a.alias, v.version, v.run_id from registered_model_aliases a join model_versions v "
                    "on v.name = a.name and v.version = a.version where a.name = 'coala-tiny-head'")
        assert cur.fetchall() == [("champion", 1, parent.info.run_id)]
    con.close()
