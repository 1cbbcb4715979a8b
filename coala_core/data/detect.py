"""Which input format a record looks like, for the hint when ``--format`` is missing or wrong.

Each rule names the fields (and, where two formats share fields, the shape of a value) that a format's
records carry. :func:`suggest_format` returns the command line that would read the records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Rule = tuple[str, str, Callable[[Mapping[str, Any]], bool]]


def _has(*names: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda d: all(n in d and d[n] is not None for n in names)


def _hh(d: Mapping[str, Any]) -> bool:
    return _has("chosen", "rejected")(d) and isinstance(d["chosen"], str) and "\n\nHuman:" in d["chosen"] and "prompt" not in d


#: (command, format, test) in the order tried: the first match wins
RULES: Sequence[Rule] = (
    ("coala data build-edufeedback", "mathdial", _has("conversation")),
    ("coala data build-edufeedback", "messages", lambda d: _has("messages")(d) or _has("conversations")(d)),
    ("coala data import", "ultrafeedback", _has("chosen", "rejected", "score_chosen")),
    ("coala data import", "hh", _hh),
    ("coala data import", "trl", _has("chosen", "rejected")),
    ("coala data import", "rated", _has("prompt", "response")),
    ("coala data import", "sentiment", _has("text", "label")),
)


def guess_format(records: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(command, format) that most of the first records look like, or ``None``."""
    votes: dict[tuple[str, str], int] = {}
    for data in records[:50]:
        for command, fmt, test in RULES:
            if test(data):
                votes[(command, fmt)] = votes.get((command, fmt), 0) + 1
                break
    return max(votes, key=lambda k: votes[k]) if votes else None


def suggest_format(records: Sequence[Mapping[str, Any]]) -> str:
    """A sentence naming the fields seen and the format they suggest (for an error message)."""
    fields = sorted({k for d in records[:50] for k in d})
    seen = f"the records have the fields {fields[:12]}"
    guess = guess_format(records)
    if guess is None:
        return (f"{seen}, which match no known format by name: labelled texts import with `--format sentiment "
                f"--text-field F --label-field F`, rated responses with `--format rated --prompt-field F "
                f"--response-field F --score-field F`")
    return f"{seen}: this looks like `{guess[0]} --format {guess[1]}`"
