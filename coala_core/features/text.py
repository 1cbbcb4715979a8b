"""Turning (prompt messages, response) into token ids: chat template, left truncation of the prompt.

A text is split into a *prefix* (everything before the response: system text, the prompt turns, the header
of the assistant turn), the *response* itself, and a *suffix* (whatever closes the assistant turn, e.g.
``<|im_end|>``; empty without a template). The three are tokenised separately with
``add_special_tokens=False`` and concatenated, so the split points are exact; the *response part* is the
response followed by the suffix.

Texts are encoded in *groups* that share one prompt: a pair (chosen, rejected) is one group of two, a text
scored alone a group of one. When prefix + the longest response part of the group exceed ``max_tokens``,
tokens are cut from the left of the prefix, once for the whole group, so every text of a group sees the same
prompt tokens (and the prefix can be run once for all of them); a leading BOS token is pinned and never cut.
Only when a response part alone is longer than the budget is it cut (from the right), counted separately.

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


@dataclass(frozen=True)
class EncodedGroup:
    """Texts sharing one prompt: ``prefix`` (pinned BOS included) then each text's response part.

    ``parts[k]`` is text k's response part (response tokens, then the template's closing tokens), cut to the
    budget; ``proper[k]`` how many of its leading tokens are the response itself (at least 1).
    """

    prefix: list[int]
    parts: list[list[int]]
    proper: list[int]
    prompt_truncated: bool
    response_truncated: list[bool]
    dropped_tokens: list[int]

    def text(self, k: int) -> EncodedText:
        return EncodedText(self.prefix + self.parts[k], self.prompt_truncated, self.response_truncated[k], self.dropped_tokens[k])


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
    def split3(self, prompt: Sequence[Message], response: str) -> tuple[str, str, str]:
        """(prefix text, response text, suffix text) whose concatenation is the full formatted text."""
        if not self.uses_chat_template:
            prefix = "".join(m["content"] + "\n" for m in prompt)
            return prefix, response, ""
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        messages.append({"role": "assistant", "content": response})
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        for needle in (response, response.strip()):
            at = full.rfind(needle) if needle else -1
            if at >= 0:
                return full[:at], needle, full[at + len(needle) :]
        raise DataError(
            "chat template dropped or rewrote the response text; cannot locate it in the formatted text "
            f"(response starts {response[:40]!r}); set use_chat_template=False"
        )

    def split(self, prompt: Sequence[Message], response: str) -> tuple[str, str]:
        """(prefix text, response part text) whose concatenation is the full formatted text."""
        prefix, resp, suffix = self.split3(prompt, response)
        return prefix, resp + suffix

    # ---- tokenising --------------------------------------------------------------------------------
    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _unique_ids(self, texts: list[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        return dict(zip(unique, self._ids(unique), strict=True))

    def encode_groups(self, prompts: Sequence[Sequence[Message]], responses: Sequence[Sequence[str]]) -> list[EncodedGroup]:
        """One group per prompt: ``responses[i]`` (one or more texts) after ``prompts[i]``.

        If a template formats the prompt differently depending on the response (so the prefixes differ), the
        group is encoded as separate groups of one; the caller sees ``len(result) != len(prompts)`` only through
        :meth:`encode_pairs`, which handles that case.
        """
        if len(prompts) != len(responses):
            raise DataError(f"{len(prompts)} prompts for {len(responses)} response lists")
        splits = [[self.split3(p, r) for r in rs] for p, rs in zip(prompts, responses, strict=True)]
        flat = [s for group in splits for s in group]
        prefix_ids = self._unique_ids([s[0] for s in flat])
        suffix_ids = self._unique_ids([s[2] for s in flat])
        resp_ids = iter(self._ids([s[1] for s in flat]))
        out: list[EncodedGroup] = []
        for group in splits:
            resps = [next(resp_ids) for _ in group]
            prefixes = {s[0] for s in group}
            if len(prefixes) != 1:
                raise DataError("the chat template formats the prompt differently for the texts of one pair")
            out.append(self._fit(prefix_ids[group[0][0]], [(r, suffix_ids[s[2]]) for r, s in zip(resps, group, strict=True)]))
        return out

    def encode_pairs(self, prompts: Sequence[Sequence[Message]], chosen: Sequence[str], rejected: Sequence[str]) -> list[EncodedGroup]:
        """A group of two (chosen, rejected) per pair, sharing the prompt cut."""
        return self.encode_groups(prompts, [[c, r] for c, r in zip(chosen, rejected, strict=True)])

    def encode(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str]) -> list[EncodedText]:
        """Encode ``responses[i]`` after ``prompts[i]``, each text on its own; identical prefixes tokenised once."""
        if len(prompts) != len(responses):
            raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
        return [g.text(0) for g in self.encode_groups(prompts, [[r] for r in responses])]

    def null_prefix(self) -> list[int]:
        """Token ids before a response in an empty conversation (the condition of the PMI's second term).

        Never empty: with no template and no BOS it is the tokenizer's EOS (or BOS) token, the usual
        document separator."""
        prefix, _, _ = self.split3([], "x")
        ids = self._ids([prefix])[0] if prefix else []
        if self.uses_chat_template:
            return ids or self._fallback_context()
        if self._plain_bos and self.bos_id is not None:
            return [self.bos_id]
        return self._fallback_context()

    def _fallback_context(self) -> list[int]:
        tok = self.tokenizer
        for tid in (getattr(tok, "eos_token_id", None), self.bos_id, getattr(tok, "pad_token_id", None)):
            if tid is not None:
                return [int(tid)]
        raise DataError("tokenizer has no EOS, BOS or pad token to condition a response on an empty conversation")

    def _fit(self, prefix: list[int], texts: list[tuple[list[int], list[int]]]) -> EncodedGroup:
        pinned: list[int] = []
        if self.uses_chat_template:
            if prefix and self.bos_id is not None and prefix[0] == self.bos_id:
                pinned, prefix = prefix[:1], prefix[1:]
        elif self._plain_bos and self.bos_id is not None:
            pinned = [self.bos_id]
        budget = self.max_tokens - len(pinned)
        parts, proper, cut = [], [], []
        for resp, suffix in texts:
            part = resp + suffix
            cut.append(len(part) > budget)
            part = part[:budget]
            parts.append(part)
            proper.append(max(1, min(len(resp), len(part))))
        keep = max(0, budget - max(len(p) for p in parts))
        kept = prefix[len(prefix) - keep :] if len(prefix) > keep else prefix
        dropped_prefix = len(prefix) - len(kept)
        dropped = [dropped_prefix + len(r) + len(s) - len(p) for (r, s), p in zip(texts, parts, strict=True)]
        return EncodedGroup(pinned + kept, parts, proper, dropped_prefix > 0, cut, dropped)
