"""A tiny random causal LM (Llama architecture, byte-level BPE) for tests and smoke runs (e.g. `--quick` modes).

Nothing is downloaded: the tokenizer is trained on a few sentences, the weights are seeded random, and the
result is saved as a safetensors model directory that every loader in the project accepts.
"""

from __future__ import annotations

from pathlib import Path

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
    "Julia has twelve spoons; three were used to taste the stew.",
] * 10


def save_tiny_lm(path: Path, *, chat_template: bool = True, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                 vocab_size: int = 320) -> Path:
    """Write a tiny random LlamaForCausalLM (vocab ~300) and its tokenizer to ``path``; return ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path
