"""Padding never leaks into pooled vectors; truncation keeps the response; batching laws; config and keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_lm import make_pairs

from coala_core.errors import ConfigError
from coala_core.features import ExtractionConfig, FeatureExtractor, TextEncoder, feature_store_key, load_model, pool
from coala_core.features.batching import BackoffRunner, GroupRunner, batch_order, computed_tokens


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ExtractionConfig.build(model=str(tiny_model_dir)))


@pytest.mark.parametrize("pooling", ["mean", "last", "attention", "response_mean", "response_last"])
@pytest.mark.parametrize("layers", [(-1,), (1,), (1, -1)])
def test_padded_batch_equals_text_alone(loaded, pooling, layers):
    cfg = ExtractionConfig.build(model="x", pooling=pooling, layers=layers, max_tokens=64, logprob_features=True)
    ex = FeatureExtractor(loaded, cfg)
    t = make_pairs(9, seed=3)
    prompts, responses = t.column("prompt").to_pylist(), t.column("chosen").to_pylist()
    lengths = {len(e.ids) for e in ex.encoder.encode(prompts, responses)}
    assert len(lengths) > 3, "the test needs texts of different lengths so the batch is padded"
    batched = ex.features(prompts, responses, GroupRunner(ex.engine.run, 16))
    alone = np.concatenate([ex.features([p], [r], GroupRunner(ex.engine.run, 1)) for p, r in zip(prompts, responses, strict=True)])
    assert batched.dtype == np.float32 and batched.shape == (len(responses), ex.dim)
    assert ex.dim == loaded.hidden_size * len(layers) + 2
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "last", "attention"])
def test_pool_ignores_padding_positions(pooling):
    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 7, 5, generator=g)
    M = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 1 + [0] * 6])
    a = torch.randn(5, generator=g)
    ref = pool(H, M, pooling, a)
    H2 = H.clone()
    H2[M == 0] = 1e3 * torch.randn(int((M == 0).sum()), 5, generator=g)
    torch.testing.assert_close(pool(H2, M, pooling, a), ref)
    # oracle on row 1 (4 real tokens)
    h = H[1, :4].numpy()
    s = h @ a.numpy() / np.sqrt(5)
    w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    expected = {"mean": h.mean(0), "last": h[-1], "attention": w @ h}[pooling]
    np.testing.assert_allclose(ref[1].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_truncation_cuts_prompt_from_left_and_keeps_response(loaded):
    tok = loaded.tokenizer
    enc = TextEncoder(tok, max_tokens=24, use_chat_template=True)
    prompt = [{"role": "user", "content": "What is seven times eight? Let us count the groups together. " * 4}]
    response = "The answer is fifty six."
    (full,) = TextEncoder(tok, max_tokens=10_000).encode([prompt], [response])
    (cut,) = enc.encode([prompt], [response])
    assert not full.prompt_truncated and cut.prompt_truncated and not cut.response_truncated
    assert len(cut.ids) == 24
    assert cut.ids == full.ids[-24:]  # the left of the prompt went, the tail is intact
    assert tok.decode(cut.ids).endswith(response + "<|im_end|>\n")
    assert cut.dropped_tokens == len(full.ids) - 24


def test_response_longer_than_budget_is_cut_and_counted(loaded):
    enc = TextEncoder(loaded.tokenizer, max_tokens=8)
    (e,) = enc.encode([[{"role": "user", "content": "hi"}]], ["The answer is fifty six because seven eights make fifty six."])
    assert e.response_truncated and len(e.ids) == 8


def test_plain_concatenation_without_chat_template(tiny_plain_model_dir):
    lm = load_model(ExtractionConfig.build(model=str(tiny_plain_model_dir)))
    enc = TextEncoder(lm.tokenizer, max_tokens=256)
    assert not enc.uses_chat_template
    prompt = [{"role": "user", "content": "Can you explain"}, {"role": "assistant", "content": "Show me each step."}]
    (e,) = enc.encode([prompt], ["I added the spoons"])
    assert lm.tokenizer.decode(e.ids) == "Can you explain\nShow me each step.\nI added the spoons"


def test_bucketing_never_computes_more_and_order_is_a_permutation():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=301).tolist()
    assert sorted(batch_order(lengths, True).tolist()) == list(range(301))
    for b in (1, 7, 32):
        bucketed, plain = computed_tokens(lengths, b, True), computed_tokens(lengths, b, False)
        assert sum(lengths) <= bucketed <= plain
    assert computed_tokens(lengths, 1, True) == sum(lengths)


def test_oom_backoff_halves_batch_and_keeps_results():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.tensor([[float(sum(s))] for s in batch])

    seqs = [[i] * (i + 1) for i in range(10)]
    runner = BackoffRunner(forward, batch_size=16)
    out = runner.run(seqs)
    assert out[:, 0].tolist() == [float(sum(s)) for s in seqs]
    assert runner.batch_size == 2 and runner.oom_backoffs == 3
    assert runner.useful_tokens == sum(len(s) for s in seqs)

    def always_oom(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError):
        BackoffRunner(always_oom, batch_size=4).run(seqs)

    def other_error(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape"):
        BackoffRunner(other_error, batch_size=4).run(seqs)


def test_config_presets_keys_and_dtype_rules():
    paper = ExtractionConfig.preset("paper")
    assert paper.max_tokens == 128 and ExtractionConfig().max_tokens == 512
    with pytest.raises(ConfigError, match="pooling"):
        ExtractionConfig.build(pooling="max")
    with pytest.raises(ConfigError, match="preset"):
        ExtractionConfig.preset("nope")
    base = ExtractionConfig.build(model="m")
    k = feature_store_key("d1", "m", "r1", base, "float32")
    assert k == feature_store_key("d1", "m", "r1", base.replace(batch_size=3, device="cpu", bucketing=False), "float32")
    assert k.startswith("feat-")
    different = [
        feature_store_key("d2", "m", "r1", base, "float32"),
        feature_store_key("d1", "m2", "r1", base, "float32"),
        feature_store_key("d1", "m", "r2", base, "float32"),
        feature_store_key("d1", "m", "r1", base.replace(pooling="last"), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(max_tokens=128), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(layer=3), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(layers=(-1, 3)), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(logprob_features=True), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(share_prefix=False), "float32"),
        feature_store_key("d1", "m", "r1", base.replace(chunk_rows=64), "float32"),
        feature_store_key("d1", "m", "r1", base, "bfloat16"),
    ]
    assert len({k, *different}) == len(different) + 1
    from coala_core.features.model import resolve_dtype

    with pytest.raises(ConfigError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
