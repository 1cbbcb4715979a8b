"""Response pooling, several layers, likelihood features, the shared prompt pass and the head/store identity,
each against a hand computation on a tiny random model."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from tiny_lm import make_pairs

from coala_core.errors import ConfigError, ProvenanceMismatchError
from coala_core.feature_identity import identity_mismatches
from coala_core.features import (
    ExtractionConfig,
    FeatureExtractor,
    extract_features,
    feature_columns,
    load_model,
    strip_aux,
    zero_shot_rewards,
)
from coala_core.features.batching import GroupRunner, length_splits
from storage import FeatureStore


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ExtractionConfig.build(model=str(tiny_model_dir)))


def _hidden(loaded, ids: list[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """All hidden states (the last one post-norm, as the extractor defines layer -1) and the logits of one text."""
    with torch.no_grad():
        out = loaded.model(torch.tensor([ids]), output_hidden_states=True)
        final = loaded.backbone(input_ids=torch.tensor([ids])).last_hidden_state
    hs = (*out.hidden_states[:-1], final)
    return tuple(h[0].float() for h in hs), out.logits[0].float()


def _pairs(n=8, seed=5):
    t = make_pairs(n, seed=seed)
    return t.column("prompt").to_pylist(), t.column("chosen").to_pylist(), t.column("rejected").to_pylist()


@pytest.mark.parametrize("layer", [-1, 1, 0])
def test_response_pooling_equals_hand_computation_over_response_positions(loaded, layer):
    cfg = ExtractionConfig.build(model="x", max_tokens=48, layers=(layer,))
    ex_mean = FeatureExtractor(loaded, cfg.replace(pooling="response_mean"))
    ex_last = FeatureExtractor(loaded, cfg.replace(pooling="response_last"))
    prompts, chosen, rejected = _pairs()
    got_mean = ex_mean.pair_features(prompts, chosen, rejected)
    got_last = ex_last.pair_features(prompts, chosen, rejected)
    groups = got_mean[2]
    for i, g in enumerate(groups):
        for k, (mean_rows, last_rows) in enumerate(((got_mean[0], got_last[0]), (got_mean[1], got_last[1]))):
            ids = g.prefix + g.parts[k]
            hs, _ = _hidden(loaded, ids)
            H = hs[layer].numpy()
            # the response's own tokens: located by decoding, independent of the extractor's bookkeeping
            text = chosen[i] if k == 0 else rejected[i]
            start = len(g.prefix)
            n_resp = len(ex_mean.encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
            stop = start + min(n_resp, len(g.parts[k]))
            assert ex_mean.encoder.tokenizer.decode(ids[start:stop]).strip() in text
            np.testing.assert_allclose(mean_rows[i], H[start:stop].mean(0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(last_rows[i], H[stop - 1], rtol=1e-5, atol=1e-5)
    # the template's closing tokens are outside the response: response_last is not the text's last token
    ex_text_last = FeatureExtractor(loaded, cfg.replace(pooling="last"))
    assert not np.allclose(ex_text_last.pair_features(prompts, chosen, rejected)[0], got_last[0])


def test_pmi_equals_two_separate_log_likelihood_computations(loaded):
    cfg = ExtractionConfig.build(model="x", max_tokens=48, pooling="response_mean", logprob_features=True)
    ex = FeatureExtractor(loaded, cfg)
    prompts, chosen, rejected = _pairs(6)
    prompts[0], chosen[0], rejected[0] = [], "Fifty six.", "Fifty six, I think."  # no prompt: PMI 0
    f_c, f_r, groups = ex.pair_features(prompts, chosen, rejected)
    cols = feature_columns(ex.provenance("d"))
    j_ll, j_pmi = cols["loglik_mean"][0], cols["pmi_mean"][0]
    null = ex.encoder.null_prefix()

    def mean_loglik(context: list[int], part: list[int]) -> float:
        _, logits = _hidden(loaded, context + part)
        lp = torch.log_softmax(logits, dim=-1)
        pos = torch.arange(len(context) - 1, len(context) + len(part) - 1)
        return float(lp[pos, torch.tensor(part)].mean())

    for i, g in enumerate(groups):
        for k, rows in enumerate((f_c, f_r)):
            cond = mean_loglik(g.prefix, g.parts[k])
            uncond = mean_loglik(null, g.parts[k])
            assert rows[i, j_ll] == pytest.approx(cond, abs=2e-5)
            assert rows[i, j_pmi] == pytest.approx(cond - uncond, abs=2e-5)
    # with the chat template an empty prompt formats exactly as the null conversation
    assert groups[0].prefix == null and abs(f_c[0, j_pmi]) < 1e-6


def test_shared_prefix_pass_equals_full_sequences(loaded):
    """The KV-cache reuse changes no feature: every pooling, several layers, likelihoods."""
    poolings = ["mean", "last", "attention", "response_mean", "response_last"]
    cfg = ExtractionConfig.build(model="x", max_tokens=40, logprob_features=True)
    ex = FeatureExtractor(loaded, cfg)
    engine = ex.make_engine(poolings, [-1, 1, 0], True)
    prompts, chosen, rejected = _pairs(10, seed=9)
    groups = ex.encoder.encode_pairs([[dict(m) for m in p] for p in prompts], chosen, rejected)
    assert any(g.prompt_truncated for g in groups)
    shared = ex.run_groups(groups, GroupRunner(engine.run, 6), engine=engine, reuse_prefix=True)
    full = ex.run_groups(groups, GroupRunner(engine.run, 6), engine=engine, reuse_prefix=False)
    for key in shared.pooled:
        np.testing.assert_allclose(shared.pooled[key].numpy(), full.pooled[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=str(key))
    np.testing.assert_allclose(shared.loglik.numpy(), full.loglik.numpy(), atol=1e-5)
    np.testing.assert_allclose(shared.pmi.numpy(), full.pmi.numpy(), atol=1e-5)
    assert shared.tokens < full.tokens  # each prompt ran once, not twice


def test_shared_pass_in_length_sorted_sub_batches_equals_full_sequences(loaded):
    """Short and long responses in one batch: the response pass runs in two sub-batches, each on its own copy
    of the prompt cache, and still gives every text's features exactly as a whole-sequence pass."""
    ex = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=128, logprob_features=True))
    engine = ex.make_engine(["last", "response_mean", "mean"], [-1, 1], True)
    prompts = [[{"role": "user", "content": f"What is {a} times eight?"}] for a in ("seven", "six", "nine", "two")]
    short = ["Yes.", "No.", "Six.", "Ok."]
    long = ["Let us count the groups of eight together, one group at a time, until we reach seven groups."] * 4
    groups = ex.encoder.encode_pairs(prompts, short, long)
    assert not any(g.prompt_truncated for g in groups)
    subs = length_splits([len(p) for g in groups for p in g.parts])
    assert len(subs) == 2 and sorted(np.concatenate(subs).tolist()) == list(range(8))
    shared, full = engine.run(groups, reuse_prefix=True), engine.run(groups, reuse_prefix=False)
    for key in shared.pooled:
        np.testing.assert_allclose(shared.pooled[key].numpy(), full.pooled[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=str(key))
    np.testing.assert_allclose(shared.loglik.numpy(), full.loglik.numpy(), atol=1e-5)
    np.testing.assert_allclose(shared.pmi.numpy(), full.pmi.numpy(), atol=1e-5)
    # the short responses were not padded to the long ones: prefixes, then each sub-batch padded to its own
    # longest, in the conditional pass and again in the null (PMI) pass
    parts = [p for g in groups for p in g.parts]
    padded = sum(len(s) * max(len(parts[i]) for i in s) for s in subs)
    n_prefix = len(groups) * max(len(g.prefix) for g in groups) + len(ex.encoder.null_prefix())
    assert shared.computed_tokens == n_prefix + 2 * padded < n_prefix + 2 * 8 * max(len(p) for p in parts)


@pytest.mark.parametrize("seed", range(6))
def test_length_splits_is_the_least_padding_cut(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=int(rng.integers(1, 14))).tolist()
    subs = length_splits(lengths)
    assert sorted(np.concatenate(subs).tolist()) == list(range(len(lengths)))
    padded = sum(len(s) * max(lengths[i] for i in s) for s in subs)
    srt = sorted(lengths)
    one = len(srt) * srt[-1]
    best = min([one] + [i * srt[i - 1] + (len(srt) - i) * srt[-1] for i in range(1, len(srt))])
    assert padded - best <= 0.10 * one  # within the allowed slack of the optimum
    assert len(subs) == 1 or one - best > 0.10 * one  # and only split when splitting pays
    assert all(max(lengths[i] for i in a) <= min(lengths[i] for i in b) for a, b in itertools.pairwise(subs))


def test_pair_truncation_cuts_the_prompt_once_to_fit_the_longer_response(loaded):
    ex = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=30))
    prompt = [{"role": "user", "content": "What is seven times eight? Let us count the groups together. " * 3}]
    short, long = "Fifty six.", "The answer is fifty six because seven eights make fifty six."
    (g,) = ex.encoder.encode_pairs([prompt], [short], [long])
    assert g.prompt_truncated and len(g.prefix) + len(g.parts[1]) == 30 and len(g.prefix) + len(g.parts[0]) < 30
    alone = ex.encoder.encode([prompt], [long])[0]
    assert alone.ids == g.prefix + g.parts[1]  # the longer text is cut exactly as it would be alone
    # per-text truncation (share_prefix off) gives the shorter text more prompt
    ex_text = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=30, share_prefix=False))
    assert ex_text.provenance("d")["truncation"] == "text" and ex.provenance("d")["truncation"] == "pair"
    (solo,) = ex_text.encoder.encode([prompt], [short])
    assert len(solo.ids) == 30


def test_several_layers_are_concatenated_each_rms_normalised(loaded):
    one = {k: FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=40, pooling="response_mean", layers=(k,)))
           for k in (-1, 1)}
    both = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=40, pooling="response_mean", layers="1,-1",
                                                           logprob_features=True))
    prompts, chosen, rejected = _pairs(5)
    rows = both.pair_features(prompts, chosen, rejected)[0]
    d = loaded.hidden_size
    assert rows.shape == (5, 2 * d + 2) and both.dim == 2 * d + 2
    prov = both.provenance("d")
    assert prov["layers"] == [1, -1] and prov["layer_norm"] == "rms" and prov["dim"] == 2 * d + 2
    assert feature_columns(prov) == {"layer1": (0, d), "layer-1": (d, 2 * d), "loglik_mean": (2 * d, 2 * d + 1),
                                     "pmi_mean": (2 * d + 1, 2 * d + 2)}
    for i, k in enumerate((1, -1)):
        raw = one[k].pair_features(prompts, chosen, rejected)[0]
        rms = np.sqrt((raw.astype(np.float64) ** 2).mean(1, keepdims=True))
        np.testing.assert_allclose(rows[:, i * d : (i + 1) * d], raw / rms, rtol=1e-5, atol=1e-6)
    assert strip_aux(rows, prov).shape == (5, 2 * d)
    single = one[-1].provenance("d")
    assert single["layer_norm"] == "none" and single["layers"] == [-1] and "aux_columns" not in single


def test_zero_shot_rewards_read_the_likelihood_columns(loaded):
    ex = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=40, logprob_features=True))
    prompts, chosen, rejected = _pairs(6)
    f_c, f_r, _ = ex.pair_features(prompts, chosen, rejected)
    prov = ex.provenance("d")
    r_w, r_l = zero_shot_rewards(f_c, f_r, prov, "pmi_mean")
    np.testing.assert_array_equal(r_w, f_c[:, -1]) and np.testing.assert_array_equal(r_l, f_r[:, -1])
    r_w, _ = zero_shot_rewards(f_c, f_r, prov, "loglik_mean")
    np.testing.assert_array_equal(r_w, f_c[:, -2])
    with pytest.raises(ConfigError, match="logprob-features"):
        zero_shot_rewards(f_c, f_r, FeatureExtractor(loaded, ExtractionConfig.build(model="x")).provenance("d"))


def test_identity_ignores_storage_layout_and_dataset_but_not_what_defines_features(loaded, tmp_path):
    """Issue 16: a head trained on a store with 64-row chunks scores a store with 4,096-row chunks."""
    from coala_core.phase2.head import RewardHead
    from storage.heads import load_head, save_head

    n = 12
    table = make_pairs(n)
    stores = {}
    for name, kw in {"c4": {"chunk_rows": 4}, "c4096": {"chunk_rows": 4096, "store_dtype": "float16"}}.items():
        cfg = ExtractionConfig.build(model="x", max_tokens=40, pooling="response_last", **kw)
        ex = FeatureExtractor(loaded, cfg)
        store = FeatureStore.open_or_create(str(tmp_path / f"{name}.zarr"), n_rows=n, dim=ex.dim, dtype=cfg.store_dtype,
                                            chunk_rows=cfg.chunk_rows, provenance=ex.provenance(f"digest-{name}"))
        extract_features(table, store, cfg, extractor=ex, show_progress=False)
        stores[name] = store
    d = loaded.hidden_size
    head = RewardHead(theta1=np.eye(d)[:, :3], theta2=np.ones(3), mean=np.zeros(d), scale=np.ones(d), gates=np.zeros((d, 2)))
    save_head(tmp_path / "head", head, provenance=stores["c4"].provenance)
    assert load_head(tmp_path / "head", expected_dim=d, expected_provenance=stores["c4096"].provenance).dim == d
    for change, key in (({"pooling": "response_mean"}, "pooling"), ({"layers": (1,)}, "layers"), ({"max_tokens": 41}, "max_tokens"),
                        ({"logprob_features": True}, "logprob_features"), ({"share_prefix": False}, "truncation"),
                        ({"use_chat_template": False}, "use_chat_template")):
        other = FeatureExtractor(loaded, ExtractionConfig.build(model="x", max_tokens=40, pooling="response_last").replace(**change))
        with pytest.raises(ProvenanceMismatchError, match=key):
            load_head(tmp_path / "head", expected_provenance=other.provenance("digest-c4"))
    prov = stores["c4"].provenance
    for key, value in (("model_id", "other"), ("model_revision", "r2"), ("compute_dtype", "bfloat16")):
        assert any(m.startswith(key) for m in identity_mismatches(prov, {**prov, key: value}))
    # older provenance spelled one layer as "layer": it reads as layers [k]
    legacy = {k: v for k, v in prov.items() if k != "layers"} | {"layer": -1}
    assert identity_mismatches(legacy, prov) == [] and identity_mismatches(prov, legacy) == []
    assert json.loads(json.dumps(identity_mismatches({**prov, "layers": [1]}, prov)))


@pytest.mark.parametrize("logprob", [False, True])
def test_extraction_flops_count_the_output_layer_where_it_runs(loaded, tmp_path, logprob):
    """The likelihood columns run the output layer on every response token twice (with and without the prompt);
    the FLOPs count them (before: the decoder alone, whatever the columns)."""
    from coala_core.engine.compute import matmul_params

    n = 6
    table = make_pairs(n, seed=3)
    cfg = ExtractionConfig.build(model="x", max_tokens=40, pooling="response_mean", logprob_features=logprob)
    ex = FeatureExtractor(loaded, cfg)
    store = FeatureStore.open_or_create(str(tmp_path / "s.zarr"), n_rows=n, dim=ex.dim, dtype=cfg.store_dtype,
                                        chunk_rows=cfg.chunk_rows, provenance=ex.provenance("d"))
    stats = extract_features(table, store, cfg, extractor=ex, show_progress=False)
    groups = ex.encoder.encode_pairs([[dict(m) for m in p] for p in table.column("prompt").to_pylist()],
                                     table.column("chosen").to_pylist(), table.column("rejected").to_pylist())
    response_tokens = sum(len(p) for g in groups for p in g.parts)
    decoder = matmul_params(loaded.backbone, lm_head=False)
    vocab, width = loaded.model.get_output_embeddings().weight.shape
    assert stats.head_tokens == (2 * response_tokens if logprob else 0)
    assert stats.head_params == (vocab * width if logprob else 0)
    assert stats.flops == 2.0 * decoder * stats.computed_tokens + 2.0 * vocab * width * stats.head_tokens
    assert stats.to_dict()["flops"] == stats.flops and stats.computed_tokens > 0
