"""kill -9 of `coala pipeline run`: the server dies with it; the next run or `coala runs repair` ends its runs.

Before: MLflow runs stayed RUNNING and Prefect flow runs Running for ever, the temporary Prefect server kept
running with no parent, and a rerun fixed none of them; two pipelines on one fresh workdir crashed in MLflow's
database migration.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
from harness import REPO, alive, cmdline, coala, descendants, kill9, mlflow_runs, prefect_flow_runs, wait_for

TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from coala_core.testing import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


def start_pipeline(workdir, model):
    return coala("pipeline", "run", "--config", TINY, "--set", f"run.workdir={workdir}", "--set", f"features.model={model}",
                 "--set", "run.system_metrics=false", wait=False)


#: kill points: the stage-th stage run of the pipeline (dataset, features, phase1, ...) has started, then a random
#: delay; seeded by COALA_CAMPAIGN_SEED like the CLI campaign, so a failure replays
RNG = random.Random(int(os.environ.get("COALA_CAMPAIGN_SEED", "0")))


def kill_mid_stage(workdir, model, stage=1, delay=0.0):
    """Start the pipeline, kill -9 it once its ``stage``-th stage run (1 = the first; a cache hit records a run too)
    has started and ``delay`` seconds more have passed, while a stage's MLflow run is RUNNING."""
    proc = start_pipeline(workdir, model)
    before = len(mlflow_runs(workdir))
    assert wait_for(lambda: len(mlflow_runs(workdir)) >= before + 1 + stage or proc.poll() is not None, 900)
    time.sleep(delay)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    servers = [p for p in descendants(proc.pid) if "uvicorn" in cmdline(p)]
    assert servers, "the ephemeral Prefect server runs as a child of the pipeline"
    kill9(proc)
    assert wait_for(lambda: not any(alive(p) for p in servers), 30), "the Prefect server outlived its parent"
    assert any(s == "RUNNING" for _, s in mlflow_runs(workdir))
    assert any(s == "RUNNING" for _, s in prefect_flow_runs(workdir))


@pytest.mark.slow
def test_kill9_pipeline_then_repair_or_rerun_ends_every_run_and_the_server_dies(tmp_path, tiny_model):
    workdir = tmp_path / "wd"
    (stage_a, stage_b), (delay_a, delay_b) = RNG.sample([1, 2, 3], 2), (RNG.uniform(0, 0.5), RNG.uniform(0, 0.5))
    print(f"kill points: stage {stage_a} + {delay_a:.2f} s, then stage {stage_b} + {delay_b:.2f} s")
    kill_mid_stage(workdir, tiny_model, stage_a, delay_a)
    res = coala("runs", "repair", "--workdir", workdir)
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout.strip().splitlines()[-1])
    assert done["sessions"] == 1 and done["mlflow_runs"] >= 2 and done["flow_runs"] >= 2
    assert {s for _, s in mlflow_runs(workdir)} <= {"KILLED", "FINISHED"}
    assert "RUNNING" not in {s for _, s in prefect_flow_runs(workdir)}
    assert "CRASHED" in {s for _, s in prefect_flow_runs(workdir)}
    again = coala("runs", "repair", "--workdir", workdir)
    assert json.loads(again.stdout.strip().splitlines()[-1])["sessions"] == 0

    kill_mid_stage(workdir, tiny_model, stage_b, delay_b)  # killed again, elsewhere; the next run repairs by itself
    res = start_pipeline(workdir, tiny_model)
    _, err = res.communicate(timeout=1800)
    assert res.returncode == 0, err[-3000:]
    assert "repaired 1 dead run(s) of this workdir" in err
    assert {s for _, s in mlflow_runs(workdir)} <= {"KILLED", "FINISHED"}
    assert {s for _, s in prefect_flow_runs(workdir)} <= {"CRASHED", "COMPLETED"}


def test_a_second_pipeline_on_a_busy_workdir_stops_with_a_message(tmp_path, tiny_model):
    workdir = tmp_path / "wd"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom flows.runtime import workdir_lock\n"
         "with workdir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)", str(workdir)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = start_pipeline(workdir, tiny_model).communicate(timeout=300)
        assert f"workdir {workdir} is in use by another pipeline (pid {holder.pid}" in res[1]
        assert "Traceback" not in res[1]
        res = coala("runs", "repair", "--workdir", workdir)
        assert res.returncode == 1 and "in use by another pipeline" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not (workdir / "mlflow.db").exists()  # the refused run touched nothing


def _hold(workdir, seconds):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom flows.runtime import workdir_lock\n"
         "with workdir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))",
         str(workdir), str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_pipeline_waits_with_coala_workdir_wait_s(tmp_path, monkeypatch):
    """`COALA_WORKDIR_WAIT_S=SECONDS`: the second run waits for the first one instead of stopping."""
    import time

    from flows.runtime import workdir_lock

    workdir = tmp_path / "wd"
    holder = _hold(workdir, 3)
    monkeypatch.setenv("COALA_WORKDIR_WAIT_S", "120")
    t0 = time.monotonic()
    with workdir_lock(workdir):
        waited = time.monotonic() - t0
    assert waited > 2.0  # it got the workdir only once the first run (3 s) let it go
    holder.wait()


def test_a_lock_timeout_inside_a_run_is_not_reported_as_a_busy_workdir(tmp_path):
    """A store lock that times out inside the run is that error, not "workdir in use by another pipeline"."""
    from flows.runtime import workdir_lock
    from storage.locks import LockTimeoutError

    with pytest.raises(LockTimeoutError, match="store lock held"):
        with workdir_lock(tmp_path / "wd", wait_s=0):
            raise LockTimeoutError("store lock held by pid 1")
