"""Fixtures for the generation and scoring tests: a tiny random LM and a head trained on its features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

PROMPTS = [
    "What is seven times eight?",
    [{"role": "user", "content": "Julia has twelve spoons."}, {"role": "assistant", "content": "How many were used?"},
     {"role": "user", "content": "Three were used to taste the stew."}],
    "Can you explain how you got that number?",
]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coala_core.testing import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-llama")


@pytest.fixture(scope="session")
def head_dir(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head whose provenance is that of the tiny LM's features (mean pooling, 64 tokens, fp32)."""
    from coala_core.features import ExtractionConfig, FeatureExtractor, load_model
    from coala_core.phase2.head import random_relu_head
    from storage.heads import save_head

    cfg = ExtractionConfig.build(model=str(tiny_lm), max_tokens=64, device="cpu", dtype="float32", chunk_rows=32)
    ex = FeatureExtractor(load_model(cfg), cfg)
    rng = np.random.default_rng(0)
    head = random_relu_head(ex.loaded.hidden_size, 8, seed=1)
    head = head.with_theta2(rng.standard_normal(8), beta=1.0)
    out = tmp_path_factory.mktemp("heads") / "head"
    save_head(out, head, provenance={**ex.provenance("d" * 64), "split": "train"}, metrics={"val_accuracy": 0.6})
    return out


@pytest.fixture(scope="session")
def scorer(head_dir: Path, tiny_lm: Path):
    from tasks.model_uri import load_scorer

    return load_scorer(head_dir, backbone=str(tiny_lm))


def pair_rows(n: int = 6) -> list[dict]:
    """Canonical pairs rows over the test prompts (for the feature-store comparison and the CLI tests)."""
    from coala_core.generation import to_messages

    rows = []
    for i in range(n):
        prompt = to_messages(PROMPTS[i % len(PROMPTS)])
        rows.append({"pair_id": f"p{i}", "prompt": prompt, "chosen": f"The answer is {i + 50}, because we count groups.",
                     "rejected": f"Let us look at step {i}.", "source": "test", "group_id": f"g{i}",
                     "split": "test", "meta": "{}"})
    return rows


def reference_scores(scorer, prompt, generated: list[int], cands: list[int]) -> tuple[np.ndarray, list]:
    """Head scores of ``generated + [c]`` for each candidate by the training forward pass on those ids (text cut
    by the trainer's own rule, ``TextEncoder._fit``); NaN where the text is blank. Also the groups."""
    from coala_core.features.forward import assemble
    from coala_core.generation.guidance import scoring_parts

    enc, tok, cfg = scorer.extractor.encoder, scorer.tokenizer, scorer.extractor.config
    pinned, prefix, suffix = scoring_parts(scorer, prompt)
    special = set(tok.all_special_ids)
    out, groups, idx = np.full(len(cands), np.nan), [], []
    for j, c in enumerate(cands):
        if not tok.decode(generated + [c], skip_special_tokens=True).strip():
            continue
        resp = generated + ([] if c in special else [c])
        groups.append(enc._fit(pinned + prefix if enc.uses_chat_template else prefix, [(resp, suffix)]))
        idx.append(j)
    if groups:
        o = scorer.extractor.engine.run(groups, reuse_prefix=False)
        out[idx] = scorer.score_features(assemble(o, cfg.pooling, cfg.layers, cfg.logprob_features))
    return out, [groups[idx.index(j)] if j in idx else None for j in range(len(cands))]
