"""Batched sampling with a reused KV cache, and the head's guidance as a hook on the next-token logits.

One call decodes B sequences together: prompts are left-padded, the prompt is run once, and every later step
feeds one token per row with the cache (``cache``) of all earlier positions. Per step and row:

    logits -> repetition penalty -> guidance (every N-th step, when a guide is given) -> temperature -> top-p
           -> one draw from the seeded generator

Rows that produced EOS keep receiving the pad token until all rows are done or ``max_new_tokens`` is reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from coala_core.generation.sampling import repetition_penalty, sample_next

#: guide(logits (B, V), generated token ids per row, active rows (B,) bool) -> logits (B, V)
Guide = Callable[[torch.Tensor, list[list[int]], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    guidance_every: int = 1


def eos_ids(tokenizer, model) -> set[int]:
    """Token ids that end a reply: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def decode_batch(
    model,
    prompt_ids: Sequence[Sequence[int]],
    settings: DecodeSettings,
    *,
    pad_id: int,
    eos: set[int],
    generator: torch.Generator,
    guide: Guide | None = None,
) -> list[list[int]]:
    """Sample a continuation for each prompt (token ids, EOS excluded) with a KV cache; see the module docstring."""
    device = next(model.parameters()).device
    B, T = len(prompt_ids), max(len(p) for p in prompt_ids)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, p in enumerate(prompt_ids):
        ids[b, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[b, T - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    seen = torch.zeros((B, vocab), dtype=torch.bool, device=device)
    seen.scatter_(1, ids.clamp(max=vocab - 1), mask.bool())
    generated: list[list[int]] = [[] for _ in range(B)]
    active = torch.ones(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(sorted(eos) or [-1], device=device)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1, :].float()
        for step in range(settings.max_new_tokens):
            logits = repetition_penalty(logits, seen, settings.repetition_penalty)
            if guide is not None and step % settings.guidance_every == 0:
                logits = guide(logits, generated, active)
            nxt = sample_next(logits, temperature=settings.temperature, top_p=settings.top_p, generator=generator)
            nxt = torch.where(active, nxt, torch.full_like(nxt, pad_id))
            done = torch.isin(nxt, eos_t) & active
            for b in torch.nonzero(active & ~done).flatten().tolist():
                generated[b].append(int(nxt[b]))
            seen[torch.arange(B, device=device), nxt.clamp(max=vocab - 1)] |= active
            active = active & ~done
            if not bool(active.any()) or step + 1 == settings.max_new_tokens:
                break
            mask = torch.cat([mask, active.long().unsqueeze(1)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                        logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1, :].float()
    return generated
