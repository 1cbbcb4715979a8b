"""Preference pairs -> the exact texts every method reads, within one token budget.

The texts come from the feature extractor's own formatter (:class:`coala_core.features.text.TextEncoder`):
the tokenizer's chat template when it has one (or the plain concatenation), so COALA's features and the
fine-tuned LMs see the same characters. For the LM baselines each response ends with the tokenizer's EOS
(the chat template's own ``<|im_end|>`` when templated; appended otherwise), as TRL expects. When prompt +
the longer response exceed ``max_tokens``, prompt tokens are cut from the left (a leading BOS is kept) and the
response is kept whole, the rule the feature extractor applies per text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coala_core.errors import DataError
from coala_core.features.text import TextEncoder


@dataclass(frozen=True)
class PairText:
    """One preference pair as TRL's plain-text format: ``prompt`` + ``chosen`` / ``prompt`` + ``rejected``."""

    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    prompt_truncated: bool = False


def _messages(cell: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in (cell or [])]


def _with_eos(text: str, eos: str | None, templated: bool) -> str:
    if templated:
        text = text.rstrip()
    if eos and not text.endswith(eos):
        text = text + eos
    return text


def format_pairs(rows: Iterable[Mapping[str, Any]], tokenizer: Any, max_tokens: int, use_chat_template: bool = True) -> list[PairText]:
    """Canonical pair rows (``pair_id``, ``prompt`` messages, ``chosen``, ``rejected``) -> :class:`PairText`.

    Every returned pair tokenises to at most about ``max_tokens`` tokens per sequence (re-tokenising a cut
    prompt can differ by a token at the seam; the trainers' ``max_length`` catches the rest).
    """
    encoder = TextEncoder(tokenizer, max_tokens, use_chat_template)
    eos = getattr(tokenizer, "eos_token", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    out: list[PairText] = []
    for i, row in enumerate(rows):
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"pair row {i} ({row.get('pair_id')!r}): field {key!r} must be a non-empty string")
        msgs = _messages(row.get("prompt"))
        prefix, chosen = encoder.split(msgs, row["chosen"])
        prefix_r, rejected = encoder.split(msgs, row["rejected"])
        if prefix_r != prefix:
            raise DataError(f"pair row {i} ({row.get('pair_id')!r}): chosen and rejected format to different prompts")
        chosen = _with_eos(chosen, eos, encoder.uses_chat_template)
        rejected = _with_eos(rejected, eos, encoder.uses_chat_template)
        n_resp = max(len(tokenizer(chosen, add_special_tokens=False)["input_ids"]),
                     len(tokenizer(rejected, add_special_tokens=False)["input_ids"]))
        ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        pinned = ids[:1] if ids and bos is not None and ids[0] == bos else []
        rest = ids[len(pinned):]
        keep = max(0, max_tokens - n_resp - len(pinned))
        truncated = len(rest) > keep
        if truncated:
            rest = rest[len(rest) - keep:] if keep > 0 else []
            prefix = tokenizer.decode(pinned + rest, skip_special_tokens=False)
        out.append(PairText(str(row.get("pair_id", i)), prefix, chosen, rejected, truncated))
    return out


def as_trl_columns(pairs: Sequence[PairText]) -> dict[str, list[str]]:
    """The ``prompt``/``chosen``/``rejected`` columns of TRL's standard (non-conversational) format."""
    return {"prompt": [p.prompt for p in pairs], "chosen": [p.chosen for p in pairs], "rejected": [p.rejected for p in pairs]}
