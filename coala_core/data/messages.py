"""Message lists: normalising roles, parsing HH-RLHF transcripts, splitting implicit-prompt pairs.

An implicit-prompt pair is two full transcripts that share every turn but the last assistant reply (HH-RLHF,
TRL's implicit form, UltraFeedback's message lists). :func:`split_implicit` cuts them at their last shared
turn: the shared turns are the prompt, and what follows must be exactly one assistant message on each side.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from coala_core.data.sources import Record, record_error

Message = dict[str, str]
ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def as_messages(rec: Record, value: Any, field: str) -> list[Message]:
    """A prompt or response value -> list of {role, content}: a string is one ``user`` message, ``""`` none."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else []
    if not isinstance(value, list):
        raise record_error(rec, f"field {field!r} must be a string or a list of messages, got {type(value).__name__}")
    out: list[Message] = []
    for j, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise record_error(rec, f"{field}[{j}] must be a {{role, content}} object, got {type(msg).__name__}")
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or role.lower() not in ROLE_ALIASES:
            raise record_error(rec, f"{field}[{j}].role must be one of {sorted(ROLE_ALIASES)}, got {role!r}")
        if not isinstance(content, str):
            raise record_error(rec, f"{field}[{j}].content must be a string, got {type(content).__name__}")
        out.append({"role": ROLE_ALIASES[role.lower()], "content": content})
    return out


def response_text(rec: Record, value: Any, field: str) -> str:
    """A response given as a string or as a one-message assistant list -> its text."""
    if isinstance(value, str):
        return value
    msgs = as_messages(rec, value, field)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        roles = [m["role"] for m in msgs]
        raise record_error(rec, f"field {field!r} must be one assistant message, got roles {roles}")
    return msgs[0]["content"]


def parse_hh(rec: Record, text: Any, field: str) -> list[Message]:
    """An HH-RLHF transcript ``\\n\\nHuman: ...\\n\\nAssistant: ...`` -> messages (user / assistant).

    Consecutive turns of one speaker (a few HH transcripts have two ``Assistant:`` turns in a row) are merged,
    joined by a blank line, so the final reply is one message.
    """
    if not isinstance(text, str):
        raise record_error(rec, f"field {field!r} must be a string transcript, got {type(text).__name__}")
    parts = _HH_TURN.split(text)
    if len(parts) < 3:
        raise record_error(rec, f"field {field!r} has no 'Human:'/'Assistant:' turns")
    if parts[0].strip():
        raise record_error(rec, f"field {field!r} has text before its first turn: {parts[0][:40]!r}")
    roles = {"Human": "user", "Assistant": "assistant"}
    out: list[Message] = []
    for i in range(1, len(parts), 2):
        role, content = roles[parts[i]], parts[i + 1].strip()
        if out and out[-1]["role"] == role:  # a speaker's consecutive turns are one turn (as in APS)
            out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": role, "content": content})
    return out


def split_implicit(chosen: Sequence[Message], rejected: Sequence[Message]) -> tuple[list[Message], str, str] | str:
    """Cut two transcripts at their last shared turn.

    Returns (prompt, chosen reply, rejected reply), or a drop reason: ``no_shared_prompt`` when what follows
    the shared turns is not one message on each side, ``last_turn_not_assistant`` when it is not an assistant
    turn. Identical transcripts return their last turn on both sides (dropped later as equal).
    """
    if list(chosen) == list(rejected):
        if not chosen or chosen[-1]["role"] != "assistant":
            return "last_turn_not_assistant"
        return list(chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"]
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if len(chosen) - k != 1 or len(rejected) - k != 1:
        return "no_shared_prompt"
    if chosen[k]["role"] != "assistant" or rejected[k]["role"] != "assistant":
        return "last_turn_not_assistant"
    return list(chosen[:k]), chosen[k]["content"], rejected[k]["content"]


def prompt_key(prompt: Sequence[Message]) -> str:
    """Short stable hash of a prompt (group ids: rows with one prompt share a group)."""
    text = json.dumps(list(prompt), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
