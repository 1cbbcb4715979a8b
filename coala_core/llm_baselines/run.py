"""One LM preference-tuning baseline run end to end: fine-tune on the training pairs (DPO or ORPO through
TRL), score the held-out pairs by the implicit reward, and account its compute; what ``coala baseline
--method dpo|orpo`` runs (tracking and files are the caller's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.errors import DataError
from coala_core.evaluation import evaluate_rewards
from coala_core.llm_baselines.compute import StageCompute, measure
from coala_core.llm_baselines.config import PreferenceTuneConfig
from coala_core.llm_baselines.evaluate import score_pairs
from coala_core.llm_baselines.formatting import format_pairs
from coala_core.llm_baselines.model import load_lm, trainable_copy
from coala_core.llm_baselines.train import CheckpointStore, tune

LABELS = {"dpo": "DPO (TRL, full fine-tune; implicit reward)", "orpo": "ORPO (TRL, full fine-tune; log-odds reward)"}


@dataclass
class BaselineRun:
    """Per-pair held-out rewards, TRL-named metrics, the training log and the compute of each stage."""

    method: str
    config: PreferenceTuneConfig
    pair_ids: list[str]
    groups: list[str]
    r_w: np.ndarray
    r_l: np.ndarray
    evaluation: Any  # coala_core.evaluation.Evaluation
    trl_metrics: dict[str, float]
    log_history: list[dict[str, Any]]
    stages: list[StageCompute]
    model: dict[str, Any] = field(default_factory=dict)
    base_log_odds: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def label(self) -> str:
        return LABELS[self.method]

    def summary(self) -> dict[str, Any]:
        train = self.stages[1]
        ev = self.evaluation
        return {
            "method": self.method, "label": self.label, "n_test_pairs": len(self.pair_ids),
            "accuracy": ev.metrics["accuracy"], "ci95": list(ev.ci["accuracy"]),
            "trl_metrics": self.trl_metrics, "steps": train.extra.get("steps"),
            "max_steps": train.extra.get("max_steps"), "stopped_early": train.extra.get("stopped_early", False),
            "compute": {s.name: s.to_dict() for s in self.stages},
            "total_seconds": sum(s.seconds for s in self.stages[1:]),
            "total_tflops": sum(s.tflops for s in self.stages[1:]),
            "peak_rss_gib": max(s.peak_rss_bytes for s in self.stages) / 2**30,
            "config": self.config.to_dict(), "model": self.model,
        }


def run_preference_baseline(train_rows: Sequence[Mapping[str, Any]], test_rows: Sequence[Mapping[str, Any]],
                            config: PreferenceTuneConfig, *, model: str = "default", n_boot: int = 1000,
                            seed: int = 0, checkpoints: CheckpointStore | None = None) -> BaselineRun:
    """Fine-tune ``model`` on ``train_rows`` (canonical pair rows) and score ``test_rows``; with
    ``checkpoints`` the training resumes from, and saves, trainer checkpoints (see :func:`tune`)."""
    from coala_core.features.config import ExtractionConfig

    if not train_rows or not test_rows:
        raise DataError(f"baseline: need training and held-out pairs (got {len(train_rows)} and {len(test_rows)})")
    with measure("load_model") as load:
        lm = load_lm(ExtractionConfig.build({"model": model}))
    tok = lm.frozen.tokenizer
    train_text = format_pairs(train_rows, tok, config.max_tokens, config.use_chat_template)
    test_text = format_pairs(test_rows, tok, config.max_tokens, config.use_chat_template)
    res = tune(trainable_copy(lm), tok, train_text, config, checkpoints=checkpoints,
               model_key=f"{lm.frozen.model_id}@{lm.frozen.revision}")
    scored = score_pairs(res.policy, tok, test_text, config, reference=res.reference)
    groups = [str(r.get("group_id", r.get("pair_id"))) for r in test_rows]
    ev = evaluate_rewards(scored.r_w, scored.r_l, groups=groups, n_boot=n_boot, seed=seed)
    base = None if scored.base_r_w is None or scored.base_r_l is None else (scored.base_r_w, scored.base_r_l)
    return BaselineRun(
        method=config.method, config=config, pair_ids=[str(r["pair_id"]) for r in test_rows], groups=groups,
        r_w=scored.r_w, r_l=scored.r_l, evaluation=ev, trl_metrics=scored.metrics, log_history=res.log_history,
        stages=[load, res.compute, scored.compute], base_log_odds=base,
        model={"id": lm.frozen.model_id, "revision": lm.frozen.revision, "source": lm.source},
    )
