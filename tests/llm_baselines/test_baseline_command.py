"""``coala baseline --method dpo|orpo``: a DPO step on a tiny random model, run through the command, logs its
TRL metrics (per step and held-out) and its compute to the MLflow experiment, and writes per-pair rewards."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coala_cli.main import app
from storage.pairs import from_records, write_pairs


@pytest.fixture()
def pairs_file(tmp_path, rows):
    recs = [{**r, "source": "s", "group_id": f"g{i // 2}", "split": "train" if i < 6 else "test"}
            for i, r in enumerate(rows * 2)]
    for i, r in enumerate(recs):
        r["pair_id"] = f"p{i}"
    write_pairs(from_records(recs), tmp_path / "pairs.parquet")
    return tmp_path / "pairs.parquet"


def test_dpo_step_logs_its_metrics(tmp_path, tiny_lm_dir, pairs_file, monkeypatch):
    from mlflow.tracking import MlflowClient

    from tasks.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded store under --workdir

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("llm_baseline:\n  batch_size: 3\n  learning_rate: 1.0e-3\n  max_tokens: 64\n  score_batch_size: 4\n")
    out, work = tmp_path / "out", tmp_path / "work"
    res = CliRunner().invoke(app, ["baseline", "--method", "dpo", "--pairs", str(pairs_file), "--model", str(tiny_lm_dir),
                                   "--config", str(cfg), "--output", str(out), "--workdir", str(work),
                                   "--experiment", "coala-test", "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "dpo: 10 test pairs" in res.output and "MLflow run" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["label"].startswith("DPO")  # 6 train pairs, batch 3
    assert metrics["compute"]["dpo_train"]["tflops"] > 0 and metrics["peak_rss_gib"] > 0
    scores = pq.read_table(out / "scores.parquet").to_pydict()
    assert len(scores["pair_id"]) == 10 and set(scores) >= {"reward_chosen", "reward_rejected", "margin"}

    client = MlflowClient(tracking_uri=tracking_uri(work))
    exp = client.get_experiment_by_name("coala-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["coala.method"] == "dpo"
    m = run.data.metrics
    for name in ("train/loss", "train/rewards/accuracies", "train/rewards/margins", "test/rewards/accuracies",
                 "test/rewards/chosen", "test/rewards/rejected", "test/rewards/margins", "test/accuracy",
                 "compute/total_tflops", "compute/peak_rss_gib"):
        assert name in m, name
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # one value per optimiser step
    assert run.data.params["llm_baseline.method"] == "dpo"


def test_baseline_bad_method_is_one_line_error(pairs_file):
    res = CliRunner().invoke(app, ["baseline", "--method", "ppo", "--pairs", str(pairs_file)])
    assert res.exit_code == 1 and "--method: 'ppo' is not one of heads, dpo, orpo" in res.output
