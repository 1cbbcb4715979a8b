"""An interrupted DPO training resumes from its last complete checkpoint and ends where an uninterrupted run
ends; checkpoints of another training are refused; ``coala baseline`` stopped by its wall-time limit is
continued by the same command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from coala_cli.main import app
from coala_core.errors import ConfigError
from coala_core.llm_baselines import PreferenceTuneConfig, format_pairs, trainable_copy, tune
from coala_core.llm_baselines.train import training_identity
from storage.pairs import from_records, write_pairs
from storage.tune_checkpoints import PROGRESS, TuneCheckpoints


class Cut(RuntimeError):
    pass


class CutAfter(TuneCheckpoints):
    """Checkpoints that stop the process right after step ``at`` is saved (a kill after a save)."""

    def __init__(self, root, at: int) -> None:
        super().__init__(root)
        self.at = at

    def mark(self, step, progress):
        super().mark(step, progress)
        if step == self.at:
            raise Cut(f"cut after step {step}")


def _weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _losses(history) -> list[float]:
    return [h["loss"] for h in history if "loss" in h and "step" in h]


def test_interrupted_dpo_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, loaded, rows):
    tok = loaded.frozen.tokenizer
    pairs = format_pairs(rows, tok, max_tokens=64)
    cfg = PreferenceTuneConfig.build({"method": "dpo", "batch_size": 2, "learning_rate": 1e-3, "checkpoint_steps": 1})
    whole = tune(trainable_copy(loaded), tok, pairs, cfg)
    assert whole.steps == 4

    root = tmp_path / "ck"
    with pytest.raises(Cut):
        tune(trainable_copy(loaded), tok, pairs, cfg, checkpoints=CutAfter(root, at=2), model_key="tiny")
    saved = sorted(p.name for p in (root / "trainer").glob("checkpoint-*"))
    assert saved == ["checkpoint-1", "checkpoint-2"]
    (root / "trainer" / "checkpoint-3").mkdir()  # a save cut half-way: no progress file
    (root / "trainer" / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    newest, progress = TuneCheckpoints(root).latest()
    assert newest.endswith("checkpoint-2") and progress["step"] == 2
    assert not (root / "trainer" / "checkpoint-3").exists()  # the cut save is removed, never resumed from

    resumed = tune(trainable_copy(loaded), tok, pairs, cfg, checkpoints=TuneCheckpoints(root), model_key="tiny")
    assert resumed.steps == 4 and resumed.compute.extra["resumed_from_step"] == 2
    a, b = _weights(whole.policy), _weights(resumed.policy)
    moved = max(float(np.abs(a[k] - loaded.frozen.model.state_dict()[k].numpy()).max()) for k in a)
    assert moved > 1e-4  # the training changed the weights, so equality below says something
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(_losses(resumed.log_history), _losses(whole.log_history), rtol=1e-5)
    # the whole run's tokens and FLOPs, across both processes' shares
    assert resumed.compute.tokens == whole.compute.tokens
    assert resumed.compute.flops == pytest.approx(whole.compute.flops)
    # the reference stayed the starting weights, not the checkpoint's
    ref = _weights(resumed.reference)
    for k, v in loaded.frozen.model.state_dict().items():
        np.testing.assert_array_equal(ref[k], v.numpy())
    final = json.loads((root / "trainer" / "checkpoint-4" / PROGRESS).read_text())
    assert final["step"] == 4 and final["tokens"] == whole.compute.tokens


def test_checkpoints_of_another_training_are_refused(tmp_path, loaded, rows):
    tok = loaded.frozen.tokenizer
    pairs = format_pairs(rows, tok, max_tokens=64)
    cfg = PreferenceTuneConfig.build({"method": "dpo", "batch_size": 2})
    store = TuneCheckpoints(tmp_path / "ck")
    store.claim(training_identity(cfg, pairs, "tiny"))
    store.claim(training_identity(cfg.replace(max_seconds=5.0, score_batch_size=3), pairs, "tiny"))  # same weights
    with pytest.raises(ConfigError, match=r"another training \(differs in config\.learning_rate\)"):
        store.claim(training_identity(cfg.replace(learning_rate=1e-3), pairs, "tiny"))
    with pytest.raises(ConfigError, match=r"differs in pairs_sha256"):
        store.claim(training_identity(cfg, pairs[::-1], "tiny"))
    with pytest.raises(ConfigError, match=r"differs in model"):
        store.claim(training_identity(cfg, pairs, "other-model"))


def test_wall_time_stop_keeps_checkpoints_and_the_same_command_continues(tmp_path, tiny_lm_dir, rows, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recs = [{**r, "pair_id": f"p{i}", "source": "s", "group_id": f"g{i // 2}", "split": "train" if i < 6 else "test"}
            for i, r in enumerate(rows)]
    write_pairs(from_records(recs), tmp_path / "pairs.parquet")
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("llm_baseline:\n  batch_size: 2\n  learning_rate: 1.0e-3\n  max_tokens: 64\n  checkpoint_steps: 10\n")
    out = tmp_path / "out"
    cmd = ["baseline", "--method", "dpo", "--pairs", str(tmp_path / "pairs.parquet"), "--model", str(tiny_lm_dir),
           "--config", str(cfg), "--output", str(out), "--workdir", str(tmp_path / "work"), "--n-boot", "20"]

    first = CliRunner().invoke(app, [*cmd, "--max-train-seconds", "0.001"])
    assert first.exit_code == 0, first.output
    assert "stopped after 1 of 3 steps" in first.output and "the same command continues it" in first.output
    assert (out / "checkpoints" / "trainer" / "checkpoint-1" / PROGRESS).is_file()  # saved at the stop, not at 10

    again = CliRunner().invoke(app, cmd)
    assert again.exit_code == 0, again.output
    assert "resumed from the checkpoint of step 1" in again.output and "3 steps" in again.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and not metrics["stopped_early"]
    assert not (out / "checkpoints").exists()  # the epoch finished: its checkpoints are gone


def test_a_second_command_on_the_same_output_stops_naming_the_holder(tmp_path, tiny_lm_dir, rows):
    from storage.locks import file_lock

    recs = [{**r, "pair_id": f"p{i}", "source": "s", "group_id": f"g{i // 2}", "split": "train" if i < 6 else "test"}
            for i, r in enumerate(rows)]
    write_pairs(from_records(recs), tmp_path / "pairs.parquet")
    out = tmp_path / "out"
    with file_lock(out / ".coala-baseline.lock", purpose="coala baseline --method dpo"):
        res = CliRunner().invoke(app, ["baseline", "--method", "dpo", "--pairs", str(tmp_path / "pairs.parquet"),
                                       "--model", str(tiny_lm_dir), "--output", str(out), "--no-track"])
    assert res.exit_code == 1, res.output
    assert "coala baseline --method dpo" in res.output and "Traceback" not in res.output
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
