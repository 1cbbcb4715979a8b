"""The registered scorer: signature, input example, code and pinned requirements shipped with it; versions
de-duplicated by head digest across all versions; the alias moves only to a version that is not worse."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from coala_testsupport.serving import ROWS, pipeline_config


def test_versions_dedup_and_alias_moves_only_when_not_worse(registry, tiny_lm) -> None:
    from tasks.scorer import register_scorer

    tracking, client, make, _ = registry
    cfg = pipeline_config(tiny_lm)
    h1, h2, h3 = make(1, 0.6), make(2, 0.5), make(3, 0.7)
    r1 = register_scorer(tracking, h1, {}, cfg)
    assert (r1.version, r1.created, r1.describe()) == ("1", True, "scorer@champion (v1)")
    r2 = register_scorer(tracking, h2, {}, cfg)  # worse: registered, alias stays
    assert (r2.version, r2.head_version, r2.created) == ("1", "2", True)
    assert "stays v1" in r2.describe() and "0.5 < 0.6" in r2.describe()
    assert str(client.get_model_version_by_alias("scorer", "champion").version) == "1"
    r1b = register_scorer(tracking, h1, {}, cfg)  # digest of v1 again: nothing registered
    r2b = register_scorer(tracking, h2, {}, cfg)  # digest of v2, which is not the latest's holder... still nothing
    assert not r1b.created and not r2b.created and r2b.head_version == "2"
    assert len(client.search_model_versions("name = 'scorer'")) == 2
    r3 = register_scorer(tracking, h3, {}, cfg)  # better: takes the alias
    assert (r3.version, r3.created) == ("3", True)
    assert str(client.get_model_version_by_alias("scorer", "champion").version) == "3"
    r4 = register_scorer(tracking, make(4, 0.1), {}, pipeline_config(tiny_lm, policy="always"))
    assert r4.version == "4" and str(client.get_model_version_by_alias("scorer", "champion").version) == "4"
    tags = client.get_model_version("scorer", "3").tags
    assert tags["coala.head_digest"] == h3.digest and float(tags["coala.val_accuracy"]) == 0.7


def test_registered_model_is_portable_and_scores_like_coala_score(registry, tiny_lm, tmp_path) -> None:
    import mlflow
    from typer.testing import CliRunner

    from coala_cli.main import app

    _, client, _, uri = registry
    info = mlflow.models.get_model_info("models:/scorer/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["prompt", "response"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["reward"]
    local = Path(mlflow.artifacts.download_artifacts("models:/scorer/1", dst_path=str(tmp_path / "m")))
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("mlflow==") for r in reqs)
    assert not any("coala" in r for r in reqs) and not any("+" in r for r in reqs)
    assert (local / "code" / "coala_core" / "generation" / "scorer.py").is_file()
    assert (local / "input_example.json").is_file() or (local / "serving_input_example.json").is_file()
    mlmodel = (local / "MLmodel").read_text()
    assert "local_path" in mlmodel and "model_id: tiny-llama" in mlmodel

    model = mlflow.pyfunc.load_model("models:/scorer@champion")
    pred = model.predict(pd.DataFrame(ROWS))
    inp = tmp_path / "rows.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "scores.jsonl"
    r = CliRunner().invoke(app, ["score", "--model-uri", "models:/scorer@champion", "--input", str(inp), "--output", str(out)],
                           env={"MLFLOW_TRACKING_URI": uri})
    assert r.exit_code == 0, r.output
    rewards = [json.loads(line)["reward"] for line in out.read_text().splitlines()]
    assert list(pred["reward"]) == pytest.approx(rewards, rel=1e-6)
    with pytest.raises(Exception, match="response"):
        model.predict(pd.DataFrame({"prompt": ["hi"]}))
