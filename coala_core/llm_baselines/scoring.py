"""Implicit rewards of a fine-tuned LM, held-out pairwise accuracy and TRL-named metrics.

- DPO: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), log-probabilities summed over response tokens.
- ORPO: r(x, y) = log odds of the policy's length-normalised likelihood, a - log(1 - e^a) with a the mean
  response-token log-probability (the quantity ORPO's odds-ratio term compares).
- Base LM (no training): the same log odds under the reference model; a zero-shot floor.

Tokenisation follows TRL's DPO trainer: ``prompt`` and ``prompt + response`` are tokenised, the response
starts where the two token lists diverge, and sequences longer than ``max_length`` keep their start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coala_core.errors import DimensionMismatchError
from coala_core.llm_baselines.formatting import PairText


@dataclass(frozen=True)
class TokenizedSequence:
    """Token ids of prompt + response and the index where the response starts."""

    ids: list[int]
    response_start: int


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pairs(pairs: Sequence[PairText], tokenizer: Any, max_length: int | None) -> tuple[list[TokenizedSequence], list[TokenizedSequence]]:
    """(chosen sequences, rejected sequences), each of length n_pairs, tokenised as TRL's DPO trainer does."""
    chosen: list[TokenizedSequence] = []
    rejected: list[TokenizedSequence] = []
    for p in pairs:
        prompt_ids = tokenizer(p.prompt)["input_ids"]
        full_c = tokenizer(p.prompt + p.chosen)["input_ids"]
        full_r = tokenizer(p.prompt + p.rejected)["input_ids"]
        start = min(_common_prefix(prompt_ids, full_c), _common_prefix(prompt_ids, full_r))
        for full, dest in ((full_c, chosen), (full_r, rejected)):
            ids = list(full[:max_length]) if max_length is not None else list(full)
            dest.append(TokenizedSequence(ids, min(start, len(ids))))
    return chosen, rejected


def sequence_logps(model: Any, seqs: Sequence[TokenizedSequence], *, pad_id: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Sum of response-token log-probabilities (n,) float64 and response token counts (n,).

    Token t is predicted from positions < t; only response positions (>= response_start) count. Runs under
    ``torch.inference_mode``; batches are right-padded and sorted by length to limit padding.
    """
    n = len(seqs)
    out, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
    order = sorted(range(n), key=lambda i: -len(seqs[i].ids))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, n, batch_size):
                idx = order[b:b + batch_size]
                T = max(len(seqs[i].ids) for i in idx)
                ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
                att = torch.zeros((len(idx), T), dtype=torch.long)
                resp = torch.zeros((len(idx), T), dtype=torch.bool)
                for r, i in enumerate(idx):
                    s = seqs[i]
                    ids[r, :len(s.ids)] = torch.tensor(s.ids)
                    att[r, :len(s.ids)] = 1
                    resp[r, max(s.response_start, 1):len(s.ids)] = True
                ids, att, resp = ids.to(device), att.to(device), resp.to(device)
                logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float()
                logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                mask = resp[:, 1:]
                sums = (logp * mask).sum(-1).double().cpu().numpy()
                for r, i in enumerate(idx):
                    out[i] = sums[r]
                    counts[i] = int(mask[r].sum())
    finally:
        model.train(was_training)
    return out, counts


def scored_tokens(seqs: Sequence[TokenizedSequence]) -> int:
    """Real (non-pad) tokens a forward pass over ``seqs`` processes."""
    return int(sum(len(s.ids) for s in seqs))


def dpo_rewards(policy_logps: np.ndarray, reference_logps: np.ndarray, beta: float) -> np.ndarray:
    """beta * (log pi(y|x) - log pi_ref(y|x)), per sequence."""
    policy_logps, reference_logps = np.asarray(policy_logps, np.float64), np.asarray(reference_logps, np.float64)
    if policy_logps.shape != reference_logps.shape:
        raise DimensionMismatchError(f"policy and reference log-probs: shapes {policy_logps.shape} and {reference_logps.shape} differ")
    return beta * (policy_logps - reference_logps)


def log_odds(sum_logps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with log p the mean response-token log-probability; stable for p near 0 and 1."""
    a = np.asarray(sum_logps, np.float64) / np.maximum(np.asarray(counts), 1)
    a = np.minimum(a, -1e-12)  # p < 1 strictly
    return a - np.log(-np.expm1(a))


def dpo_metrics(r_w: np.ndarray, r_l: np.ndarray) -> dict[str, float]:
    """TRL's DPO names on implicit rewards: rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies (strict r_w > r_l), and the DPO loss mean -log sigmoid(r_w - r_l)."""
    r_w, r_l = np.asarray(r_w, np.float64), np.asarray(r_l, np.float64)
    return {
        "rewards/chosen": float(r_w.mean()), "rewards/rejected": float(r_l.mean()),
        "rewards/margins": float((r_w - r_l).mean()), "rewards/accuracies": float((r_w > r_l).mean()),
        "loss": float(np.logaddexp(0.0, -(r_w - r_l)).mean()),
    }


def orpo_metrics(lp_w: np.ndarray, n_w: np.ndarray, lp_l: np.ndarray, n_l: np.ndarray, beta: float) -> dict[str, float]:
    """TRL's ORPO names: rewards/* = beta * mean response log-prob, log_odds_chosen, log_odds_ratio."""
    a_w = np.asarray(lp_w, np.float64) / np.maximum(n_w, 1)
    a_l = np.asarray(lp_l, np.float64) / np.maximum(n_l, 1)
    lo = log_odds(lp_w, n_w) - log_odds(lp_l, n_l)
    return {
        "rewards/chosen": float(beta * a_w.mean()), "rewards/rejected": float(beta * a_l.mean()),
        "rewards/margins": float(beta * (a_w - a_l).mean()), "rewards/accuracies": float((a_w > a_l).mean()),
        "log_odds_chosen": float(lo.mean()), "log_odds_ratio": float(-np.logaddexp(0.0, -lo).mean()),
        "nll_loss": float(-a_w.mean()),
    }
