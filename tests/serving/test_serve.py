"""``mlflow models serve -m models:/NAME@ALIAS`` answers scoring requests as ``coala score`` does; a request
with a missing column gets a 4xx with a clear message. A real server on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROWS, pipeline_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def served(registry, tiny_lm, tmp_path_factory):
    """The scorer registered as ``served`` and served from ``models:/served@champion``; yields (url, tracking uri)."""
    from tasks.scorer import register_scorer

    tracking, _, make, uri = registry
    register_scorer(tracking, make(11, 0.6), {}, pipeline_config(tiny_lm, name="served"))
    port = _free_port()
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = tmp_path_factory.mktemp("serve") / "server.log"
    bindir = str(Path(sys.executable).parent)  # mlflow execs uvicorn from PATH, as in an activated virtualenv
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([mlflow_bin, "models", "serve", "-m", "models:/served@champion", "--env-manager", "local",
                                 "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(url + "/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow models serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url, uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_served_answers_equal_coala_score(served, tmp_path) -> None:
    from typer.testing import CliRunner

    from coala_cli.main import app

    url, uri = served
    status, body = _post(url + "/invocations", {"dataframe_records": ROWS})
    assert status == 200, body
    served_rewards = [p["reward"] for p in body["predictions"]]
    inp = tmp_path / "rows.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "scores.jsonl"
    r = CliRunner().invoke(app, ["score", "--model-uri", "models:/served@champion", "--input", str(inp), "--output", str(out)],
                           env={"MLFLOW_TRACKING_URI": uri})
    assert r.exit_code == 0, r.output
    assert served_rewards == pytest.approx([json.loads(x)["reward"] for x in out.read_text().splitlines()], rel=1e-6)


def test_missing_column_is_a_4xx_with_a_clear_message(served) -> None:
    url, _ = served
    status, body = _post(url + "/invocations", {"dataframe_records": [{"prompt": "What is seven times eight?"}]})
    assert 400 <= status < 500
    assert "response" in json.dumps(body)
