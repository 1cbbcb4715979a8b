"""Next-token logits processing and sampling, in a fixed order: repetition penalty, (guidance,) temperature,
top-p, then one draw from a seeded ``torch.Generator``.

Shapes: ``logits`` (B, V) float32; ``seen`` (B, V) bool marks tokens already in each row's text.
"""

from __future__ import annotations

import torch


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty (Keskar et al. 2019, as in transformers): a seen token's logit is divided by ``penalty``
    when positive and multiplied by it when negative."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one); the rest
    get -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p  # mass before this token already enough
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token id per row (B,): greedy when ``temperature`` is 0, else a draw from the tempered nucleus.

    Exactly one ``torch.multinomial`` call per step whatever the logits, so two runs with the same seed and
    the same batches consume the random stream identically.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(top_p_filter(logits / temperature, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
