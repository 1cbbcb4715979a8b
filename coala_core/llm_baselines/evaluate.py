"""Held-out scoring of a tuned LM by its implicit reward, with the compute of the scoring passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.errors import ConfigError
from coala_core.llm_baselines.compute import StageCompute, forward_flops, matmul_params, measure
from coala_core.llm_baselines.config import PreferenceTuneConfig
from coala_core.llm_baselines.formatting import PairText
from coala_core.llm_baselines.scoring import (
    dpo_metrics,
    dpo_rewards,
    log_odds,
    orpo_metrics,
    scored_tokens,
    sequence_logps,
    tokenize_pairs,
)


@dataclass
class ScoredPairs:
    """Implicit rewards r_w, r_l (n,) of held-out pairs, TRL-named metrics, and the scoring compute.

    ``base_r_w``/``base_r_l`` are the reference (untrained) model's log odds when a reference was scored.
    """

    method: str
    r_w: np.ndarray
    r_l: np.ndarray
    metrics: dict[str, float]
    compute: StageCompute
    base_r_w: np.ndarray | None = None
    base_r_l: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def score_pairs(policy: Any, tokenizer: Any, pairs: Sequence[PairText], config: PreferenceTuneConfig, *,
                reference: Any | None = None) -> ScoredPairs:
    """Score ``pairs`` with the method's implicit reward (DPO needs ``reference``); FLOPs = one forward per
    model per sequence (2NT each)."""
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    chosen, rejected = tokenize_pairs(pairs, tokenizer, config.max_tokens)
    tokens = scored_tokens(chosen) + scored_tokens(rejected)
    n_params = matmul_params(policy, lm_head=True)
    bs = config.score_batch_size
    with measure(f"{config.method}_score") as stage:
        lp_w, n_w = sequence_logps(policy, chosen, pad_id=pad_id, batch_size=bs)
        lp_l, n_l = sequence_logps(policy, rejected, pad_id=pad_id, batch_size=bs)
        passes = 1
        base = None
        if reference is not None:
            ref_w, _ = sequence_logps(reference, chosen, pad_id=pad_id, batch_size=bs)
            ref_l, _ = sequence_logps(reference, rejected, pad_id=pad_id, batch_size=bs)
            passes = 2
            base = (log_odds(ref_w, n_w), log_odds(ref_l, n_l))
    stage.tokens = tokens * passes
    stage.flops = forward_flops(n_params, tokens) * passes
    if config.method == "dpo":
        if reference is None:
            raise ConfigError("score_pairs: DPO's implicit reward needs the reference model (reference=None)")
        r_w, r_l = dpo_rewards(lp_w, ref_w, config.beta), dpo_rewards(lp_l, ref_l, config.beta)
        metrics = dpo_metrics(r_w, r_l)
    else:
        r_w, r_l = log_odds(lp_w, n_w), log_odds(lp_l, n_l)
        metrics = orpo_metrics(lp_w, n_w, lp_l, n_l, config.beta)
    return ScoredPairs(config.method, r_w, r_l, metrics, stage,
                       base_r_w=None if base is None else base[0], base_r_l=None if base is None else base[1],
                       extra={"response_tokens_chosen": n_w, "response_tokens_rejected": n_l})
