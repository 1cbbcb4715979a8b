"""Helpers: a tiny random Llama model with a byte-level BPE tokenizer, saved as safetensors, and pairs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tutor.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is seven times eight? Let us count the groups together.",
    "The answer is fifty six because seven eights make fifty six.",
    "Can you explain how you got that number? Show me each step.",
    "I added the spoons and subtracted the ones she used.",
] * 20


def save_tiny_model(path: Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


def make_pairs(n: int, seed: int = 0) -> pa.Table:
    """``n`` canonical pairs with prompts and responses of varied length (some prompts empty)."""
    import random

    rng = random.Random(seed)
    words = " ".join(CORPUS[:4]).split()
    rows = []
    for i in range(n):
        turns = rng.randint(0, 3)
        prompt = [
            {"role": "user" if t % 2 == 0 else "assistant", "content": " ".join(rng.choices(words, k=rng.randint(2, 25)))}
            for t in range(turns)
        ]
        chosen = " ".join(rng.choices(words, k=rng.randint(1, 20)))
        rejected = chosen + " " + " ".join(rng.choices(words, k=rng.randint(1, 12)))
        rows.append(
            {
                "pair_id": f"p{i:04d}",
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "source": "synthetic",
                "group_id": f"g{i // 2}",
                "split": "train",
                "meta": "{}",
            }
        )
    from storage.pairs import from_records

    return from_records(rows)
