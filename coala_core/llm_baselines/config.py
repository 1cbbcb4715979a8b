"""The one config of the LM preference-tuning baselines (DPO and ORPO through TRL).

Defaults follow TRL (beta 0.1, sigmoid DPO loss, one epoch) except where CPU work asks otherwise, and each
such change is named here: learning rate 5e-6 (TRL's 1e-6 barely moves a 135M model in 16 steps), fp32
(no bf16 on CPU), gradient checkpointing off (it adds a forward pass per step, which the FLOP count would
then have to include), dropout off (TRL's default).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from coala_core.config import StageConfig

Method = Literal["dpo", "orpo"]


class PreferenceTuneConfig(StageConfig):
    """Full fine-tuning of a causal LM on preference pairs with TRL.

    - ``method``: ``dpo`` (policy + frozen reference) or ``orpo`` (no reference; SFT + odds-ratio term).
    - ``beta``: DPO's KL strength, or ORPO's weight lambda of the odds-ratio term (TRL names both ``beta``).
    - ``max_tokens``: budget of prompt + response tokens; the prompt is cut from the left, the response kept.
    - ``use_chat_template``: format texts with the tokenizer's chat template (as the feature extractor does).
    - ``batch_size`` pairs per optimiser step (``per_device_train_batch_size``), ``grad_accum`` micro-steps.
    - ``max_seconds``: stop training after this much wall time (a partial epoch; the result records the steps
      run out of the epoch's steps, so a report can say so). ``None``: the whole run.
    - ``checkpoint_steps``: where the caller keeps checkpoints (``coala baseline`` does, under ``--output``),
      save the policy, optimiser, scheduler and RNG state every this many optimiser steps, at a wall-time stop
      and at the last step; a rerun of the same training resumes from the newest complete one.
    """

    method: Method = "dpo"
    beta: float = Field(0.1, gt=0.0)
    learning_rate: float = Field(5e-6, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    max_tokens: int = Field(128, ge=8)
    use_chat_template: bool = True
    score_batch_size: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)
    num_threads: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0.0)
    checkpoint_steps: int = Field(25, ge=1)

    def training_identity(self) -> dict[str, Any]:
        """The fields that decide the trained weights (a checkpoint is resumed only under the same ones);
        wall-time limit, threads, checkpoint spacing and the scoring batch do not change them."""
        skip = {"max_seconds", "num_threads", "checkpoint_steps", "score_batch_size"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}
