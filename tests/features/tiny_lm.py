"""Helpers: a tiny random Llama model with a byte-level BPE tokenizer, saved as safetensors, and pairs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from coala_core.testing import CORPUS, save_tiny_lm


def save_tiny_model(path: Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    return save_tiny_lm(path, chat_template=chat_template, seed=seed, vocab_size=400)


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
