"""Turning (prompt messages, response) into token ids: chat template, left truncation of the prompt.

A text is split into a *prefix* (everything before the response: system text, the prompt turns, the header
of the assistant turn) and a *response part* (the response and whatever closes the assistant turn, e.g.
``<|im_end|>``). Both are tokenised separately with ``add_special_tokens=False`` and concatenated, so the
split point is exact. When prefix + response exceed ``max_tokens``, tokens are cut from the left of the
prefix and the response is kept whole; a leading BOS token is pinned and never cut. Only when the response
part alone is longer than the budget is the response itself cut (from the right), counted separately.

Without a chat template (or with ``use_chat_template=False``) the text is the plain concatenation of the
prompt messages' contents and the response, one newline between each, with the tokenizer's BOS in front if
it normally adds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coala_core.errors import DataError

Message = dict[str, str]


@dataclass(frozen=True)
class EncodedText:
    """Token ids of one text (length <= max_tokens) and what truncation did to it."""

    ids: list[int]
    prompt_truncated: bool
    response_truncated: bool
    dropped_tokens: int


class TextEncoder:
    """Formats and tokenises texts for one tokenizer and ``max_tokens`` budget."""

    def __init__(self, tokenizer: Any, max_tokens: int, use_chat_template: bool = True) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.uses_chat_template = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
        bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_id: int | None = bos
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self._plain_bos = bos is not None and len(probe) > 0 and probe[0] == bos

    # ---- formatting --------------------------------------------------------------------------------
    def split(self, prompt: Sequence[Message], response: str) -> tuple[str, str]:
        """(prefix text, response text) whose concatenation is the full formatted text."""
        if not self.uses_chat_template:
            prefix = "".join(m["content"] + "\n" for m in prompt)
            return prefix, response
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        messages.append({"role": "assistant", "content": response})
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        for needle in (response, response.strip()):
            at = full.rfind(needle) if needle else -1
            if at >= 0:
                return full[:at], full[at:]
        raise DataError(
            "chat template dropped or rewrote the response text; cannot locate it in the formatted text "
            f"(response starts {response[:40]!r}); set use_chat_template=False"
        )

    # ---- tokenising --------------------------------------------------------------------------------
    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str]) -> list[EncodedText]:
        """Encode ``responses[i]`` after ``prompts[i]``; identical prefixes are tokenised once."""
        if len(prompts) != len(responses):
            raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
        splits = [self.split(p, r) for p, r in zip(prompts, responses, strict=True)]
        unique_prefixes = list(dict.fromkeys(s[0] for s in splits))
        prefix_ids = dict(zip(unique_prefixes, self._ids(unique_prefixes), strict=True))
        response_ids = self._ids([s[1] for s in splits])
        return [self._fit(prefix_ids[pre], resp) for (pre, _), resp in zip(splits, response_ids, strict=True)]

    def _fit(self, prefix: list[int], response: list[int]) -> EncodedText:
        pinned: list[int] = []
        if self.uses_chat_template:
            if prefix and self.bos_id is not None and prefix[0] == self.bos_id:
                pinned, prefix = prefix[:1], prefix[1:]
        elif self._plain_bos and self.bos_id is not None:
            pinned = [self.bos_id]
        budget = self.max_tokens - len(pinned)
        if len(response) >= budget:
            dropped = len(prefix) + len(response) - budget
            return EncodedText(pinned + response[:budget], bool(prefix), len(response) > budget, dropped)
        keep = budget - len(response)
        kept = prefix[len(prefix) - keep :] if len(prefix) > keep else prefix
        return EncodedText(pinned + kept + response, len(prefix) > keep, False, len(prefix) - len(kept))
