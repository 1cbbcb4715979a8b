"""Plain sampling, best-of-n reranking and head-guided decoding (method.md section 7), batched over prompts.

- ``plain``: sample one reply per prompt (temperature, top-p, repetition penalty; seeded).
- ``rerank``: sample ``n`` replies per prompt the same way, score each (prompt, reply) with the head, return
  them in descending reward order; the reply is the best one.
- ``guided`` (the paper's App. H.3): every ``guidance_every`` tokens take the ``guidance_top_k`` most likely
  next tokens of each row, extend the reply so far by each, score all B x k extensions with the head in one
  batched forward pass on the decoding's KV cache (:mod:`coala_core.generation.guidance`), min-max normalise the k scores of each row to [0, 1] and add ``guidance_scale`` times
  them to those k logits before sampling. With ``guidance_scale`` 0 the logits are unchanged, so guided
  decoding with the same seed returns exactly the plain samples.

Prompts decode together in batches of ``batch_size`` (left padding); every row samples from its own seeded
generator, so a batch gives the same tokens as decoding its prompts one at a time.

Every reply is scored with the head at the end (the ``reward`` of the result), through the training feature
path (:class:`coala_core.generation.scorer.HeadScorer`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.generation.config import GenerateConfig
from coala_core.generation.decode import DecodeSettings, decode_batch, eos_ids
from coala_core.generation.guidance import GenerationStats, HeadGuidance, scoring_parts
from coala_core.generation.sampling import row_generators
from coala_core.generation.scorer import HeadScorer, Message

__all__ = ["Candidate", "Generation", "GenerationStats", "HeadGuidance", "TextGenerator"]


@dataclass(frozen=True)
class Candidate:
    text: str
    reward: float
    tokens: int


@dataclass(frozen=True)
class Generation:
    """One prompt's result: the reply, its head reward, its length, and (rerank) every candidate, best first."""

    prompt: list[Message]
    response: str
    reward: float
    tokens: int
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "response": self.response, "reward": self.reward, "tokens": self.tokens}
        if self.candidates:
            out["candidates"] = [c.__dict__ for c in self.candidates]
        return out


class TextGenerator:
    """Decodes with the head's own backbone (the frozen LM that makes its features) and scores with the head."""

    def __init__(self, scorer: HeadScorer, config: GenerateConfig) -> None:
        self.scorer, self.config = scorer, config
        loaded = scorer.extractor.loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.pad_id = scorer.extractor.pad_id
        self.eos = eos_ids(self.tokenizer, self.model)
        max_pos = getattr(self.model.config, "max_position_embeddings", None)
        self.prompt_budget = config.max_prompt_tokens if not max_pos else max(1, min(config.max_prompt_tokens, int(max_pos) - config.max_new_tokens))
        self.settings = DecodeSettings(config.max_new_tokens, config.temperature, config.top_p,
                                       config.repetition_penalty, config.guidance_every)

    def prompt_ids(self, prompt: Sequence[Message]) -> list[int]:
        """Token ids of the prompt followed by the opening of the assistant turn, exactly the head's scoring
        prefix (:func:`coala_core.generation.guidance.scoring_parts`: chat template when the features used one,
        else the plain concatenation; a leading BOS pinned), cut from the left to ``max_prompt_tokens`` and to
        the model's context length less ``max_new_tokens``."""
        pinned, prefix, _ = scoring_parts(self.scorer, prompt)
        keep = max(0, self.prompt_budget - len(pinned))
        return pinned + (prefix[len(prefix) - keep:] if len(prefix) > keep else prefix)

    def _decode_all(self, prompts: list[list[Message]], stats: GenerationStats, guided: bool) -> list[list[int]]:
        """Decode ``prompts`` in batches of ``batch_size``; row i of the list samples from its own generator
        (seeded from the config's seed and i), so the batch size does not change the samples."""
        out: list[list[int]] = []
        bs = self.config.batch_size
        device = next(self.model.parameters()).device
        for i in range(0, len(prompts), bs):
            batch = prompts[i:i + bs]
            guide = HeadGuidance(self.scorer, batch, self.config.guidance_scale, self.config.guidance_top_k, stats) if guided else None
            gens = row_generators(self.config.seed, range(i, i + len(batch)), device)
            out.extend(decode_batch(self.model, [self.prompt_ids(p) for p in batch], self.settings, pad_id=self.pad_id,
                                    eos=self.eos, generators=gens, guide=guide))
        return out

    def generate(self, prompts: Sequence[Sequence[Message]], mode: str | None = None) -> tuple[list[Generation], GenerationStats]:
        """Replies for ``prompts`` in ``mode`` (default: the config's); returns them with the run's stats."""
        mode = mode or self.config.mode
        prompts = [list(p) for p in prompts]
        stats = GenerationStats(mode=mode, prompts=len(prompts))
        n = self.config.n if mode == "rerank" else 1
        expanded: list[list[Message]] = [list(p) for p in prompts for _ in range(n)]
        t0 = time.perf_counter()
        ids = self._decode_all(expanded, stats, guided=(mode == "guided"))
        texts = [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        stats.tokens = sum(len(x) for x in ids)
        rewards = np.asarray(self._score(expanded, texts), dtype=np.float64) if mode == "rerank" else None
        stats.seconds = time.perf_counter() - t0
        if rewards is None:
            rewards = np.asarray(self._score(expanded, texts), dtype=np.float64)
        results = []
        for j, prompt in enumerate(prompts):
            cands = [Candidate(texts[j * n + c], float(rewards[j * n + c]), len(ids[j * n + c])) for c in range(n)]
            ranked = sorted(cands, key=lambda c: -c.reward)  # stable: ties keep sampling order
            best = ranked[0]
            results.append(Generation(list(prompt), best.text, best.reward, best.tokens, ranked if mode == "rerank" else []))
        stats.output_tokens = sum(g.tokens for g in results)
        return results, stats

    def _score(self, prompts: list[list[Message]], texts: list[str]) -> list[float]:
        """Head rewards of the replies; an empty reply (EOS first) gets -inf (ranked last)."""
        ok = [i for i, t in enumerate(texts) if t.strip()]
        out = [float("-inf")] * len(texts)
        if ok:
            for i, r in zip(ok, self.scorer.score([prompts[i] for i in ok], [texts[i] for i in ok]), strict=True):
                out[i] = float(r)
        return out
