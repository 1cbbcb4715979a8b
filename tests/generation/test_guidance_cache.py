"""Guided decoding scores the top-k extensions from the decoding's KV cache: the features equal those of the
training forward pass on the same token ids (and of :meth:`HeadScorer.score` on the texts whose ids round-trip
through decode + tokenise), for every pooling, several layers, a float16 store, no chat template, and the
training truncation (prompt cut from the left; reply cut from the right: the full forward). Batches decode as prompts alone do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROMPTS, reference_scores

from coala_core.features import ExtractionConfig, FeatureExtractor, load_model
from coala_core.generation import GenerateConfig, HeadGuidance, HeadScorer, TextGenerator, to_messages
from coala_core.generation.decode import decode_batch
from coala_core.generation.guidance import GenerationStats, scoring_parts
from coala_core.generation.sampling import row_generators
from coala_core.phase2.head import random_relu_head

MSGS = [to_messages(p) for p in PROMPTS] + [to_messages("Seven")]


def make_scorer(tiny_lm: Path, store_dtype: str = "float32", **extraction) -> HeadScorer:
    cfg = ExtractionConfig.build({"model": str(tiny_lm), "max_tokens": 64, "device": "cpu", "dtype": "float32", **extraction})
    ex = FeatureExtractor(load_model(cfg), cfg)
    head = random_relu_head(ex.dim, 8, seed=1).with_theta2(np.random.default_rng(0).standard_normal(8), beta=1.0)
    return HeadScorer(ex, head, store_dtype=store_dtype)


class CheckingGuidance(HeadGuidance):
    """Compares every guided step's extension scores with the references (recorded, asserted by the test)."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.diffs: list[float] = []
        self.text_diffs: list[float] = []

    def extension_scores(self, state, top, rows):
        got = super().extension_scores(state, top, rows)
        tok = self.scorer.tokenizer
        texts: list[tuple[int, str, float]] = []
        for b in rows:
            cands = [int(t) for t in top[b].tolist()]
            ref, groups = reference_scores(self.scorer, self.prompts[b], list(state.generated[b]), cands)
            assert np.array_equal(np.isnan(got[b]), np.isnan(ref)), (got[b], ref)
            ok = ~np.isnan(ref)
            self.diffs.extend(np.abs(got[b][ok] - ref[ok]).tolist())
            for j, c in enumerate(cands):  # the text path, where decoding + tokenising gives back the same ids
                if groups[j] is None:
                    continue
                text = tok.decode(list(state.generated[b]) + [c], skip_special_tokens=True)
                again = self.scorer.extractor.encoder.encode_groups([self.prompts[b]], [[text]])[0]
                if again.prefix == groups[j].prefix and again.parts == groups[j].parts:
                    texts.append((b, text, float(got[b, j])))
        if texts:
            by_text = self.scorer.score([self.prompts[b] for b, _, _ in texts], [t for _, t, _ in texts], one_batch=True)
            self.text_diffs.extend(np.abs(by_text - np.array([g for _, _, g in texts])).tolist())
        return got


def _guided_run(scorer: HeadScorer, prompts, max_new_tokens: int = 24, **cfg):
    gen = TextGenerator(scorer, GenerateConfig.build({"mode": "guided", "guidance_every": 2, "guidance_top_k": 6,
                                                      "max_new_tokens": max_new_tokens, "temperature": 1.0,
                                                      "repetition_penalty": 1.0, **cfg}))
    stats = GenerationStats(mode="guided")
    guide = CheckingGuidance(scorer, prompts, 2.0, 6, stats)
    out = decode_batch(gen.model, [gen.prompt_ids(p) for p in prompts], gen.settings, pad_id=gen.pad_id, eos=gen.eos,
                       generators=row_generators(0, range(len(prompts)), gen.model.device), guide=guide)
    return out, guide, stats


CASES = {  # max_tokens 56: two prompts fit (decoding cache) until the reply grows, two are cut (fresh context)
    "mean": {"pooling": "mean"},
    "last": {"pooling": "last"},
    "response_mean": {"pooling": "response_mean"},
    "response_last": {"pooling": "response_last"},
    "attention": {"pooling": "attention"},
    "mean-2-layers-fp16-store": {"pooling": "mean", "layers": "-1,1", "store_dtype": "float16"},
    "last-no-template": {"pooling": "last", "use_chat_template": False, "max_tokens": 48},
}


@pytest.mark.parametrize("case", list(CASES))
def test_cached_extension_scores_equal_the_training_forward(tiny_lm, case) -> None:
    kw = dict(CASES[case])
    store_dtype = kw.pop("store_dtype", "float32")
    scorer = make_scorer(tiny_lm, store_dtype=store_dtype, **{"max_tokens": 56, **kw})
    out, guide, stats = _guided_run(scorer, MSGS, max_new_tokens=16)
    tol = 2e-3 if store_dtype == "float16" else 1e-4  # fp16 rounding of a feature can flip at a boundary
    assert stats.extensions_cached > 0 and stats.extensions_fresh > 0, stats
    assert len(guide.diffs) == stats.scored_extensions
    assert max(guide.diffs) < tol, (case, max(guide.diffs))
    assert len(guide.text_diffs) >= 10 and max(guide.text_diffs) < tol, (case, len(guide.text_diffs), max(guide.text_diffs))


def test_long_replies_fall_back_to_the_full_forward(tiny_lm) -> None:
    scorer = make_scorer(tiny_lm, max_tokens=24, pooling="mean")
    out, guide, stats = _guided_run(scorer, MSGS[3:], max_new_tokens=30, temperature=0.0)
    assert len(out[0]) > 24 - 2  # the reply alone outgrew the budget at some guided step
    assert stats.extensions_full > 0 and max(guide.diffs) < 1e-4


def test_likelihood_feature_heads_are_scored_by_the_full_forward(tiny_lm) -> None:
    scorer = make_scorer(tiny_lm, pooling="mean", logprob_features=True)
    out, guide, stats = _guided_run(scorer, MSGS[:2], max_new_tokens=6)
    assert stats.extensions_cached == stats.extensions_fresh == 0 and stats.extensions_full > 0
    assert max(guide.diffs) < 1e-4


@pytest.mark.parametrize("mode", ["plain", "guided", "rerank"])
def test_a_batch_samples_what_its_prompts_sample_alone(scorer, mode) -> None:
    """Each row draws from its own seeded generator and guidance normalises per row, so batch size 3 and batch
    size 1 give the same replies (same seed, temperature 0.7, top-p 0.9)."""
    cfg = {"mode": mode, "max_new_tokens": 12, "guidance_every": 2, "guidance_top_k": 5, "n": 2, "seed": 5}
    together, _ = TextGenerator(scorer, GenerateConfig.build({**cfg, "batch_size": 3})).generate(MSGS)
    alone, _ = TextGenerator(scorer, GenerateConfig.build({**cfg, "batch_size": 1})).generate(MSGS)
    assert [g.response for g in together] == [g.response for g in alone]
    assert [[c.text for c in g.candidates] for g in together] == [[c.text for c in g.candidates] for g in alone]
    assert len({g.response for g in together}) > 1


def test_guidance_leaves_the_decoding_cache_as_it_was(scorer) -> None:
    """Greedy guided decoding at scale 0 (the extensions run on the cache every step, then are cropped) equals
    greedy plain decoding token for token."""
    base = {"temperature": 0.0, "max_new_tokens": 10, "batch_size": 4}
    plain, _ = TextGenerator(scorer, GenerateConfig.build({**base, "mode": "plain"})).generate(MSGS)
    guided, stats = TextGenerator(scorer, GenerateConfig.build({**base, "mode": "guided", "guidance_scale": 0.0,
                                                                "guidance_every": 1})).generate(MSGS)
    assert stats.extensions_cached > 0
    assert [g.response for g in guided] == [p.response for p in plain]


def test_prompt_ids_are_the_head_scoring_prefix(scorer) -> None:
    gen = TextGenerator(scorer, GenerateConfig.build({"mode": "plain"}))
    tok = scorer.tokenizer
    for p in MSGS:
        text = tok.apply_chat_template([dict(m) for m in p], add_generation_prompt=True, tokenize=False)
        assert gen.prompt_ids(p) == list(tok(text, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        assert scoring_parts(scorer, MSGS[0])[2] == list(tok("<|im_end|>\n", add_special_tokens=False)["input_ids"])
