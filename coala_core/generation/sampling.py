"""Next-token logits processing and sampling, in a fixed order: repetition penalty, (guidance,) temperature,
top-p, then one draw per row from that row's own seeded ``torch.Generator``.

Shapes: ``logits`` (B, V) float32; ``seen`` (B, V) bool marks tokens already in each row's text.

Every row of a call has its own random stream (:func:`row_generators`: seeded from the run's seed and the
row's index in the call), so a row's sample does not depend on which other rows share its batch: decoding
prompts together or one at a time gives the same tokens (up to floating-point rounding of the batched forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def row_seed(seed: int, row: int) -> int:
    """The seed of row ``row`` of a run seeded with ``seed`` (a 63-bit value mixed by numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, int(row)]).generate_state(2, np.uint64)[0] >> 1)


def row_generators(seed: int, rows: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per row index in ``rows`` (see :func:`row_seed`)."""
    return [torch.Generator(device=device).manual_seed(row_seed(seed, r)) for r in rows]


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


def sample_next(logits: torch.Tensor, *, temperature: float, top_p: float, generators: Sequence[torch.Generator],
                active: torch.Tensor | None = None) -> torch.Tensor:
    """One token id per row (B,): greedy when ``temperature`` is 0, else a draw from the tempered nucleus with
    row b's generator ``generators[b]``.

    An active row makes exactly one ``torch.multinomial`` draw per step whatever its logits, so its random
    stream advances identically however the rows are batched; inactive rows (``active`` False) draw nothing
    and get token 0.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if len(generators) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits for {len(generators)} generators")
    probs = torch.softmax(top_p_filter(logits / temperature, top_p), dim=-1)
    out = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    rows = range(logits.shape[0]) if active is None else torch.nonzero(active).flatten().tolist()
    for b in rows:
        out[b] = torch.multinomial(probs[b], 1, generator=generators[b])[0]
    return out
