"""DPO/ORPO baselines on a tiny random Llama: a TRL step lowers the loss, the scorer agrees with TRL and
with a hand computation, the FLOP model, and prompt-side truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coala_core.errors import ConfigError, DimensionMismatchError
from coala_core.llm_baselines import (
    PreferenceTuneConfig,
    TokenCounter,
    backward_flops,
    dpo_metrics,
    dpo_rewards,
    format_pairs,
    forward_flops,
    log_odds,
    matmul_params,
    score_pairs,
    sequence_logps,
    tokenize_pairs,
    train_step_flops,
    trainable_copy,
    tune,
)


def test_flop_formula():
    assert forward_flops(10, 3) == 60.0
    assert backward_flops(10, 3) == 120.0
    assert train_step_flops(10, 3, reference=False) == 180.0  # 6NT
    assert train_step_flops(10, 3, reference=True) == 240.0  # 6NT + reference forward 2NT


def test_matmul_params_tied_embeddings(loaded):
    model = loaded.frozen.model
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied matrix once
    emb = model.get_input_embeddings().weight.numel()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert matmul_params(model, lm_head=True) == total
    assert matmul_params(model, lm_head=False) == total - emb


def test_format_pairs_cuts_prompt_from_left_and_keeps_response(loaded, rows):
    tok = loaded.frozen.tokenizer
    long_rows = [dict(rows[0], prompt=[{"role": "user", "content": "What is seven times eight? " * 40}])]
    (p,) = format_pairs(long_rows, tok, max_tokens=48)
    assert p.prompt_truncated
    assert p.chosen.startswith("Show me each step.") and p.chosen.endswith(tok.eos_token)
    assert p.prompt.endswith("<|im_start|>assistant\n")  # the end of the prompt survives, its start is cut
    chosen, rejected = tokenize_pairs([p], tok, None)
    assert max(len(chosen[0].ids), len(rejected[0].ids)) <= 48 + 1  # at most one token of re-tokenising drift


def test_sequence_logps_matches_hand_computation(loaded, rows):
    tok, model = loaded.frozen.tokenizer, loaded.frozen.model
    pairs = format_pairs(rows[:3], tok, max_tokens=64)
    chosen, _ = tokenize_pairs(pairs, tok, 64)
    got, counts = sequence_logps(model, chosen, pad_id=tok.pad_token_id, batch_size=2)
    for i, s in enumerate(chosen):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([s.ids])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        want = sum(float(lp[t - 1, s.ids[t]]) for t in range(s.response_start, len(s.ids)))
        assert got[i] == pytest.approx(want, abs=1e-3)
        assert counts[i] == len(s.ids) - s.response_start


def test_implicit_reward_accuracy_hand_made():
    policy_w, ref_w = np.array([-10.0, -12.0, -9.0, -20.0]), np.array([-11.0, -11.0, -9.5, -20.0])
    policy_l, ref_l = np.array([-15.0, -14.0, -9.0, -21.0]), np.array([-14.0, -14.5, -9.0, -20.0])
    r_w, r_l = dpo_rewards(policy_w, ref_w, 0.1), dpo_rewards(policy_l, ref_l, 0.1)
    np.testing.assert_allclose(r_w, [0.1, -0.1, 0.05, 0.0])
    np.testing.assert_allclose(r_l, [-0.1, 0.05, 0.0, -0.1])
    m = dpo_metrics(r_w, r_l)
    assert m["rewards/accuracies"] == 0.75  # pairs 0, 2, 3 right; pair 1 wrong
    assert m["rewards/margins"] == pytest.approx(np.mean([0.2, -0.15, 0.05, 0.1]))
    assert m["loss"] == pytest.approx(np.mean(np.logaddexp(0, -(r_w - r_l))))
    with pytest.raises(DimensionMismatchError):
        dpo_rewards(policy_w, ref_w[:3], 0.1)
    # log odds: p = exp(mean log-prob); 2 tokens of log(0.5) each -> p = 0.5 -> log odds 0
    np.testing.assert_allclose(log_odds(np.array([2 * np.log(0.5)]), np.array([2])), [0.0], atol=1e-12)
    assert log_odds(np.array([-1.0]), np.array([1]))[0] > log_odds(np.array([-2.0]), np.array([1]))[0]


def test_dpo_step_lowers_loss_and_scorer_agrees_with_trl(loaded, rows):
    tok = loaded.frozen.tokenizer
    pairs = format_pairs(rows, tok, max_tokens=64)
    cfg = PreferenceTuneConfig.build({"method": "dpo", "batch_size": len(pairs), "learning_rate": 1e-3})
    res = tune(trainable_copy(loaded), tok, pairs, cfg)
    assert res.steps == 1
    first = res.log_history[0]
    scored = score_pairs(res.policy, tok, pairs, cfg, reference=res.reference)
    # The reference is the starting policy: TRL's step-1 log-probs (before the update) equal ours on it.
    chosen, rejected = tokenize_pairs(pairs, tok, cfg.max_tokens)
    ref_w, _ = sequence_logps(res.reference, chosen, pad_id=tok.pad_token_id)
    ref_l, _ = sequence_logps(res.reference, rejected, pad_id=tok.pad_token_id)
    assert first["logps/chosen"] == pytest.approx(ref_w.mean(), rel=1e-4)
    assert first["logps/rejected"] == pytest.approx(ref_l.mean(), rel=1e-4)
    assert first["loss"] == pytest.approx(np.log(2.0), abs=1e-5)  # policy == reference before the step
    assert scored.metrics["loss"] < np.log(2.0) - 1e-3  # one step on this batch lowers its DPO loss
    assert scored.metrics["rewards/accuracies"] > 0.5
    c = res.compute
    assert c.tokens == sum(len(s.ids) for s in chosen + rejected)
    assert c.flops == pytest.approx(8.0 * matmul_params(res.policy, lm_head=True) * c.tokens)
    assert scored.compute.flops == pytest.approx(2 * 2.0 * matmul_params(res.policy, lm_head=True) * c.tokens)


def test_orpo_runs_and_scores_log_odds(loaded, rows):
    tok = loaded.frozen.tokenizer
    pairs = format_pairs(rows, tok, max_tokens=64)
    cfg = PreferenceTuneConfig.build({"method": "orpo", "batch_size": 4, "learning_rate": 1e-3})
    res = tune(trainable_copy(loaded), tok, pairs, cfg)
    assert res.reference is None and res.steps == 2
    scored = score_pairs(res.policy, tok, pairs, cfg)
    assert np.all(np.isfinite(scored.r_w)) and scored.r_w.shape == (len(pairs),)
    assert res.compute.flops == pytest.approx(6.0 * matmul_params(res.policy, lm_head=True) * res.compute.tokens)
    with pytest.raises(ConfigError):
        score_pairs(res.policy, tok, pairs, cfg.replace(method="dpo"))


def test_token_counter_counts_mask_ones():
    def collate(examples):
        return {"input_ids": torch.zeros(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}

    counter = TokenCounter(collate)
    counter([{}])
    assert (counter.tokens, counter.padded_tokens, counter.batches) == (8, 10, 1)
