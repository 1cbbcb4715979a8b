"""Batched sampling with a reused KV cache, and the head's guidance as a hook on the next-token logits.

One call decodes B sequences together: prompts are left-padded (attention mask, position ids counted over the
real tokens), the prompt is run once, and every later step feeds one token per row with the cache of all
earlier positions. The decoder (``get_decoder()``, the same module that makes the head's features) runs, and
the LM head maps its last hidden state to the next-token logits. Per step and row:

    logits -> repetition penalty -> guidance (every N-th step, when a guide is given) -> temperature -> top-p
           -> one draw from the row's own seeded generator

Rows that produced EOS keep receiving the pad token (masked) until all rows are done or ``max_new_tokens`` is
reached. A guide (:class:`Guide`) sees the hidden states of its layers for every position fed (so it can keep
running pooled statistics) and, at a guided step, the cache, mask and positions (:class:`DecodeState`), on
which it may run further tokens as long as it leaves the cache as it found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from coala_core.generation.sampling import repetition_penalty, sample_next


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    guidance_every: int = 1


@dataclass
class DecodeState:
    """The decoding at a step: ``cache`` holds every fed position, ``mask`` (B, T) marks the real ones,
    ``next_pos`` (B,) is each row's position id for its next token, ``generated`` the reply tokens so far."""

    cache: Any
    mask: torch.Tensor
    next_pos: torch.Tensor
    generated: list[list[int]]
    active: torch.Tensor
    prompt_ids: list[list[int]]


class Guide(Protocol):
    @property
    def layers(self) -> Sequence[int]:
        """Hidden-state indices (0..L, as normalised by :func:`norm_layers`) the guide wants from every forward."""

    def observe(self, hidden: dict[int, torch.Tensor], mask: torch.Tensor, prompt: bool) -> None:
        """Hidden states (B, t, d) of the positions just fed, their mask (B, t); ``prompt``: the prompt pass."""

    def __call__(self, logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Guided logits (B, V) from ``logits`` (B, V)."""


def norm_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Hidden-state indices in 0..L (``-1`` is L, the last block after the final norm)."""
    return [k % (num_layers + 1) for k in layers]


def run_decoder(decoder: Any, num_layers: int, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache: Any = None, layers: Sequence[int] = ()) -> tuple[dict[int, torch.Tensor], torch.Tensor, Any]:
    """(hidden states of ``layers`` (normalised indices), final post-norm hidden state, cache) of one forward
    of the decoder, as :class:`coala_core.features.forward.GroupForward` takes them: index L is the final
    normalised state, other indices ``hidden_states[k]``. ``mask`` is 2D (B, cache + new) or a prepared 4D mask."""
    need_hs = any(k != num_layers for k in layers)
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                  output_hidden_states=need_hs)
    final = out.last_hidden_state
    H = {k: (final if k == num_layers else out.hidden_states[k]) for k in layers}
    return H, final, out.cache


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
    generators: Sequence[torch.Generator],
    guide: Guide | None = None,
) -> list[list[int]]:
    """Sample a continuation for each prompt (token ids, EOS excluded) with a KV cache; see the module docstring.
    ``generators[b]`` is row b's random stream."""
    device = next(model.parameters()).device
    decoder, lm_head = model.get_decoder(), model.get_output_embeddings()
    L = int(model.config.num_hidden_layers)
    layers = list(guide.layers) if guide is not None else []
    B, T = len(prompt_ids), max(1, max(len(p) for p in prompt_ids))
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, p in enumerate(prompt_ids):
        if p:
            ids[b, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[b, T - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    vocab = int(lm_head.weight.shape[0])
    seen = torch.zeros((B, vocab), dtype=torch.bool, device=device)
    seen.scatter_(1, ids.clamp(max=vocab - 1), mask.bool())
    generated: list[list[int]] = [[] for _ in range(B)]
    active = torch.ones(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(sorted(eos) or [-1], device=device)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        H, final, cache = run_decoder(decoder, L, ids, mask, positions, None, layers)
        if guide is not None:
            guide.observe(H, mask, True)
        logits = lm_head(final[:, -1, :]).float()
        for step in range(settings.max_new_tokens):
            logits = repetition_penalty(logits, seen, settings.repetition_penalty)
            if guide is not None and step % settings.guidance_every == 0:
                state = DecodeState(cache, mask, positions[:, -1] + 1, generated, active, [list(p) for p in prompt_ids])
                logits = guide(logits, state)
            nxt = sample_next(logits, temperature=settings.temperature, top_p=settings.top_p, generators=generators,
                              active=active)
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
            H, final, cache = run_decoder(decoder, L, nxt.unsqueeze(1), mask, positions, cache, layers)
            if guide is not None:
                guide.observe(H, active.long().unsqueeze(1), False)
            logits = lm_head(final[:, -1, :]).float()
    return generated
