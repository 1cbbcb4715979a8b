"""The head's guidance of decoding (method.md section 7, the paper's App. H.3), scored from the KV cache.

At a guided step every active row takes its ``top_k`` most likely next tokens, the head scores the reply so far
extended by each (:mod:`coala_core.generation.extension`), the k scores of the row are min-max normalised to
[0, 1] and ``scale`` times them is added to those k logits. With ``scale`` 0 the logits are unchanged.

Where each extension's features come from (counted in :class:`GenerationStats`):

- *cached*: the decoding's own cache, when the decoding context is exactly the head's scoring prefix and the
  text fits ``max_tokens`` uncut: one forward of k short blocks per row on that cache (the common case);
- *fresh*: when the training truncation cuts the prompt (prefix + reply + candidate + suffix > ``max_tokens``;
  the cut moves with every reply token, so no earlier cache holds that context) or the decoding prompt was cut
  differently: the cut context (pinned BOS + the kept prompt tail + the reply) runs once per row and cut, with a
  cache, and the k blocks on top of it: exact, one context pass instead of k full texts;
- *full*: when the reply itself no longer fits ``max_tokens`` (training cuts the response from the right) or
  the head uses likelihood columns (``logprob_features``, which need a second, empty-conversation context): the
  training forward pass (:meth:`coala_core.features.forward.GroupForward.run`) on each extension's whole ids,
  cut by the trainer's rule, all extensions in one batch.

Every path scores the token ids the decoding produced (never a re-tokenisation of their text), so all three
agree with each other to rounding; they equal :meth:`HeadScorer.score` on the decoded text whenever decoding
and tokenising that text gives back the same ids (tested).

An extension whose text is empty or blank (a special token before any reply text) gets no score and ranks
lowest, as in :meth:`HeadScorer.score`'s callers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coala_core.features.forward import assemble
from coala_core.generation.decode import DecodeState, norm_layers
from coala_core.generation.extension import Blocks, ContextStats, context_pass, pool_blocks, run_blocks
from coala_core.generation.scorer import HeadScorer, Message


@dataclass
class GenerationStats:
    """``tokens``: every sampled token (all candidates); ``seconds``: decoding plus the mode's own scoring
    (rerank, guidance), not the final scoring of the replies. ``extensions_*``: where the guidance's features
    came from (see :mod:`coala_core.generation.guidance`)."""

    mode: str
    prompts: int = 0
    tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    guidance_calls: int = 0
    scored_extensions: int = 0
    extensions_cached: int = 0
    extensions_fresh: int = 0
    extensions_full: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "tokens_per_second": self.tokens_per_second}


def scoring_parts(scorer: HeadScorer, prompt: Sequence[Message]) -> tuple[list[int], list[int], list[int]]:
    """(pinned, prefix, suffix) token ids of the head's text for ``prompt`` as the trainer builds it
    (:class:`coala_core.features.text.TextEncoder`): a pinned BOS (never cut), the formatted prompt up to the
    reply, and the template's closing tokens after it."""
    enc = scorer.extractor.encoder
    prefix_text, _, suffix_text = enc.split3(list(prompt), "Hello")
    tok = scorer.tokenizer

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []

    prefix, suffix, pinned = ids(prefix_text), ids(suffix_text), []
    if enc.uses_chat_template:
        if prefix and enc.bos_id is not None and prefix[0] == enc.bos_id:
            pinned, prefix = prefix[:1], prefix[1:]
    elif getattr(enc, "_plain_bos", False) and enc.bos_id is not None:
        pinned = [enc.bos_id]
    return pinned, prefix, suffix


class HeadGuidance:
    """The guide for :func:`coala_core.generation.decode.decode_batch` (see the module docstring)."""

    def __init__(self, scorer: HeadScorer, prompts: Sequence[list[Message]], scale: float, top_k: int,
                 stats: GenerationStats) -> None:
        self.scorer, self.prompts, self.scale, self.top_k, self.stats = scorer, list(prompts), float(scale), int(top_k), stats
        ex = scorer.extractor
        self.loaded, self.config = ex.loaded, ex.config
        self.L = int(self.loaded.num_layers)
        self.store_layers = norm_layers(self.config.layers, self.L)
        self.incremental = not self.config.logprob_features
        self.layers: list[int] = sorted(set(self.store_layers)) if self.incremental else []
        self.a = ex.a if self.config.pooling == "attention" else None
        self.ctx = ContextStats(self.layers, a=self.a)
        self.max_tokens = int(ex.encoder.max_tokens)
        self.parts = [scoring_parts(scorer, p) for p in self.prompts]
        self.special = set(int(t) for t in getattr(scorer.tokenizer, "all_special_ids", []) or [])
        self.cached_ok: list[bool] | None = None
        self.decoder = self.loaded.model.get_decoder()

    def observe(self, hidden: dict[int, torch.Tensor], mask: torch.Tensor, prompt: bool) -> None:
        if self.layers:
            self.ctx.add(hidden, mask, torch.zeros_like(mask, dtype=torch.bool) if prompt else mask.bool())

    def __call__(self, logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
        k = min(self.top_k, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices  # (B, k)
        rows = torch.nonzero(state.active).flatten().tolist()
        if not rows:
            return logits
        S = self.extension_scores(state, top, rows)[rows]
        self.stats.guidance_calls += 1
        self.stats.scored_extensions += int(np.isfinite(S).sum())
        lo = np.min(np.where(np.isnan(S), np.inf, S), axis=1, keepdims=True)
        hi = np.max(np.where(np.isnan(S), -np.inf, S), axis=1, keepdims=True)
        span = hi - lo
        norm = np.where(np.isfinite(span) & (span > 0), (S - lo) / np.where(span > 0, span, 1.0), 0.0)
        norm = np.nan_to_num(norm, nan=0.0)  # an extension with no text ranks lowest
        bonus = torch.zeros(top.shape, dtype=logits.dtype, device=logits.device)
        bonus[rows] = torch.as_tensor(self.scale * norm, dtype=logits.dtype, device=logits.device)
        return logits.scatter_add(1, top, bonus)

    def extension_scores(self, state: DecodeState, top: torch.Tensor, rows: Sequence[int]) -> np.ndarray:
        """Head rewards (B, k) of each row's reply extended by each of its ``top`` tokens (NaN: no text, or a row
        not in ``rows``)."""
        B, k = top.shape
        tok = self.scorer.tokenizer
        if self.cached_ok is None:
            self.cached_ok = [list(state.prompt_ids[b]) == pin + pre for b, (pin, pre, _) in enumerate(self.parts)]
        out = np.full((B, k), np.nan)
        cached: list[list[tuple[list[int], bool] | None]] = [[None] * k for _ in range(B)]
        fresh: dict[tuple[int, int], list[tuple[int, list[int], bool]]] = defaultdict(list)
        full: list[tuple[int, int, list[int], bool]] = []
        top_l = top.tolist()
        for b in rows:
            g = state.generated[b]
            pinned, prefix, suffix = self.parts[b]
            budget = self.max_tokens - len(pinned)
            blank = not tok.decode(g, skip_special_tokens=True).strip()
            for j, c in enumerate(top_l[b]):
                if blank and not tok.decode(g + [c], skip_special_tokens=True).strip():
                    continue
                real = c not in self.special
                block = ([c] if real else []) + suffix
                part = len(g) + len(block)
                if not self.incremental or part > budget:
                    full.append((b, j, block, real))
                elif self.cached_ok[b] and len(pinned) + len(prefix) + part <= self.max_tokens:
                    cached[b][j] = (block, real)
                else:
                    fresh[(b, budget - part)].append((j, block, real))
        if any(e is not None for r in cached for e in r):
            blocks = Blocks.build(cached, self.scorer.extractor.pad_id, state.mask.device)
            Hb = run_blocks(self.decoder, self.L, state.cache, state.mask, state.next_pos, blocks, self.layers,
                            self.loaded.dtype)
            f = pool_blocks(self.ctx, torch.arange(B, device=state.mask.device), Hb, blocks, self.config.pooling,
                            self.store_layers)
            which = [(b, j) for b in range(B) for j in range(k) if cached[b][j] is not None]
            r = self.scorer.score_features(f[[b * k + j for b, j in which]])
            for (b, j), v in zip(which, r, strict=True):
                out[b, j] = v
            self.stats.extensions_cached += len(which)
        if fresh:
            self._fresh(fresh, state, out)
        if full:
            self._full(full, state, top_l, out)
        return out

    def _full(self, full: list[tuple[int, int, list[int], bool]], state: DecodeState, top_l: list[list[int]],
              out: np.ndarray) -> None:
        """Score extensions by the training forward pass on their whole ids, cut by the trainer's rule (the reply
        is longer than the budget, or the head has likelihood columns): one text per extension, one batch."""
        enc, ex = self.scorer.extractor.encoder, self.scorer.extractor
        groups = []
        for b, _, block, real in full:
            pinned, prefix, suffix = self.parts[b]
            resp = list(state.generated[b]) + block[: int(real)]
            groups.append(enc._fit(pinned + prefix if enc.uses_chat_template else prefix, [(resp, suffix)]))
        o = ex.engine.run(groups, reuse_prefix=False)
        r = self.scorer.score_features(assemble(o, self.config.pooling, self.config.layers, self.config.logprob_features))
        for (b, j, _, _), v in zip(full, r, strict=True):
            out[b, j] = v
        self.stats.extensions_full += len(full)

    def _fresh(self, fresh: dict[tuple[int, int], list[tuple[int, list[int], bool]]], state: DecodeState,
               out: np.ndarray) -> None:
        """Score the extensions whose cut context is not the decoding's: one context pass per (row, cut)."""
        keys = list(fresh)
        seqs, n_resp = [], []
        for b, keep in keys:
            pinned, prefix, _ = self.parts[b]
            g = state.generated[b]
            seqs.append(pinned + prefix[max(0, len(prefix) - keep):] + g)
            n_resp.append(len(g))
        dev = state.mask.device
        cache, M, next_pos, ctx = context_pass(self.decoder, self.L, seqs, n_resp, self.scorer.extractor.pad_id,
                                               self.layers, self.a, dev)
        blocks = Blocks.build([[(blk, real) for _, blk, real in fresh[key]] for key in keys], self.scorer.extractor.pad_id, dev)
        Hb = run_blocks(self.decoder, self.L, cache, M, next_pos, blocks, self.layers, self.loaded.dtype)
        f = pool_blocks(ctx, torch.arange(len(keys), device=dev), Hb, blocks, self.config.pooling, self.store_layers)
        kmax = blocks.ids.shape[1]
        idx = [i * kmax + e for i, key in enumerate(keys) for e in range(len(fresh[key]))]
        r = iter(self.scorer.score_features(f[idx]))
        for key in keys:
            for j, _, _ in fresh[key]:
                out[key[0], j] = next(r)
        self.stats.extensions_fresh += len(idx)
