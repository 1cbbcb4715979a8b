"""The README's "Using the head" block, exactly as written (the port filled in), in a project folder whose
``.coala/mlflow.db`` holds ``coala-reward-head``: ``mlflow models serve -m models:/NAME@ALIAS`` answers scoring
requests as ``coala score`` does; a request with a missing column gets a 4xx with a clear message; the
``coala score`` and ``coala generate`` commands run. A real server on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from coala_testsupport.readme import readme_commands
from coala_testsupport.serving import ROWS, pipeline_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def readme_block() -> list[str]:
    return readme_commands("Using the head")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def project(registry, tiny_lm):
    """The project folder: ``coala-reward-head@champion`` registered, the example files and the virtualenv."""
    from tasks.scorer import register_scorer

    tracking, _, make, uri = registry
    register_scorer(tracking, make(11, 0.6), {}, pipeline_config(tiny_lm, name="coala-reward-head"))
    folder = Path(uri.removeprefix("sqlite:///")).parents[1]
    for rel in ("examples/new_responses.jsonl", "configs/paper.yaml"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, folder / rel)
    if not (folder / ".venv").exists():
        (folder / ".venv").symlink_to(REPO / ".venv")
    return folder


@pytest.fixture(scope="module")
def served(project):
    """The README's serve command on a free port; yields the port."""
    port = _free_port()
    serve = next(c for c in readme_block() if " mlflow models serve " in c).replace("-p 5001", f"-p {port}")
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = project / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["bash", "-c", serve], cwd=project, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow models serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _coala(project: Path, line: str, monkeypatch):
    from typer.testing import CliRunner

    from coala_cli.main import app

    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return CliRunner().invoke(app, shlex.split(line)[1:])


def test_readme_curl_request_and_coala_score_agree(served, project, monkeypatch) -> None:
    curl = next(c for c in readme_block() if c.startswith("curl ")).replace(":5001/", f":{served}/")
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120, check=True)
    body = json.loads(out.stdout)
    assert len(body["predictions"]) == 2 and all(isinstance(p["reward"], float) for p in body["predictions"])
    status, direct = _post(f"http://127.0.0.1:{served}/invocations", {"dataframe_records": ROWS})
    assert status == 200, direct
    rows = project / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    r = _coala(project, f"coala score --model-uri models:/coala-reward-head@champion --input {rows} --output {project / 'o.jsonl'}",
               monkeypatch)
    assert r.exit_code == 0, r.output
    expected = [json.loads(x)["reward"] for x in (project / "o.jsonl").read_text().splitlines()]
    assert [p["reward"] for p in direct["predictions"]] == pytest.approx(expected, rel=1e-6)


def test_missing_column_is_a_4xx_with_a_clear_message(served) -> None:
    status, body = _post(f"http://127.0.0.1:{served}/invocations", {"dataframe_records": [{"prompt": "What is seven times eight?"}]})
    assert 400 <= status < 500
    assert "Model is missing inputs ['response']" in body["message"] and body["error_class"] == "SCHEMA_ENFORCEMENT_FAILED"


def test_readme_coala_commands_as_written(project, monkeypatch) -> None:
    commands = [c for c in readme_block() if c.startswith("coala ")]
    assert [c.split()[1] for c in commands] == ["score", "generate", "generate"]
    for line in commands:
        r = _coala(project, line, monkeypatch)
        assert r.exit_code == 0, f"{line}\n{r.output}"
    scored = [json.loads(x) for x in (project / "work" / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == len((project / "examples" / "new_responses.jsonl").read_text().splitlines())
    assert all(isinstance(s["reward"], float) for s in scored)
    guided = json.loads((project / "work" / "guided.jsonl").read_text())
    assert guided["mode"] == "guided" and guided["prompt"] == "I think 7 x 8 is 54."
