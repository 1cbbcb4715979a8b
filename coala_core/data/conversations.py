"""Tutoring conversations as speaker-labelled turns, and the parsers that build them.

A :class:`Conversation` is a list of :class:`Turn` with speaker ``tutor``, ``student`` or ``system``.
Consecutive turns of one speaker are merged (joined by ``turn_separator``, move tags concatenated), so after
parsing tutor and student turns alternate, which is what APS assumes.

MathDial: the ``conversation`` field holds ``|EOM|``-separated turns. ``Teacher: (move)text`` is the tutor,
with its move tag in parentheses moved out of the text into ``Turn.tags``; every other turn is the student's,
whether it starts with ``Student:``, with the student's name (``Cody:``, taken from ``student_profile``) or
with no prefix at all; the prefix is stripped.

Generic messages: ``{"messages": [{"role": ..., "content": ...}], ...}``; roles are mapped by the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from coala_core.data.config import EduFeedbackConfig
from coala_core.data.sources import Record, record_error, require_str

TUTOR, STUDENT, SYSTEM = "tutor", "student", "system"
EOM = "|EOM|"
_TEACHER = re.compile(r"^\s*Teacher\s*:\s*", re.IGNORECASE)
_MOVE_TAG = re.compile(r"^\(([^()]{1,40})\)\s*")
_STUDENT = re.compile(r"^\s*Student\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    speaker: str  # tutor | student | system
    content: str
    tags: tuple[str, ...] = ()  # tutor move tags (MathDial), one per merged source turn


@dataclass(frozen=True)
class Conversation:
    """One conversation: ``conversation_id`` (unique), ``group_id`` (split unit), turns, record metadata."""

    conversation_id: str
    group_id: str
    turns: tuple[Turn, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    n_merged: int = 0  # source turns folded into the previous turn of the same speaker

    def of(self, speaker: str) -> list[int]:
        """Indices (into ``turns``) of the turns of ``speaker``."""
        return [i for i, t in enumerate(self.turns) if t.speaker == speaker]


def merge_turns(turns: list[Turn], separator: str) -> tuple[tuple[Turn, ...], int]:
    """Fold consecutive turns of one speaker into one; returns (turns, number folded)."""
    out: list[Turn] = []
    folded = 0
    for t in turns:
        if out and out[-1].speaker == t.speaker:
            prev = out[-1]
            out[-1] = Turn(t.speaker, prev.content + separator + t.content, prev.tags + t.tags)
            folded += 1
        else:
            out.append(t)
    return tuple(out), folded


def _scalar_id(rec: Record, name: str | None) -> str | None:
    if not name or name not in rec.data or rec.data[name] is None:
        return None
    value = rec.data[name]
    if isinstance(value, (dict, list)):
        raise record_error(rec, f"field {name!r} must be a scalar id, got {type(value).__name__}")
    return str(value)


def _ids(rec: Record, cfg: EduFeedbackConfig, prefix: str, default_group_field: str | None) -> tuple[str, str]:
    conv = _scalar_id(rec, cfg.id_field)
    conv_id = f"{prefix}-{conv}" if conv is not None else f"{prefix}-L{rec.line}"
    group_field = cfg.group_field or default_group_field
    group = _scalar_id(rec, group_field)
    if cfg.group_field and group is None:
        raise record_error(rec, f"missing group field {cfg.group_field!r}")
    return conv_id, (f"{prefix}-{group_field}-{group}" if group is not None else conv_id)


def _student_prefixes(rec: Record) -> list[re.Pattern[str]]:
    patterns = [_STUDENT]
    profile = rec.data.get("student_profile")
    if isinstance(profile, str) and profile.split():
        name = re.sub(r"\W+$", "", profile.split()[0])
        if name:
            patterns.append(re.compile(rf"^\s*{re.escape(name)}\s*:\s*"))
    return patterns


def parse_mathdial(rec: Record, cfg: EduFeedbackConfig) -> Conversation:
    """A MathDial record -> Conversation (tutor = ``Teacher:`` turns; move tags moved into ``Turn.tags``)."""
    if "conversation" not in rec.data:
        from coala_core.data.detect import suggest_format

        raise record_error(rec, f"missing field 'conversation' of the mathdial format; {suggest_format([rec.data])}")
    text = require_str(rec, "conversation")
    students = _student_prefixes(rec)
    turns: list[Turn] = []
    for raw in text.split(EOM):
        m = _TEACHER.match(raw)
        if m:
            body = raw[m.end():]
            tag = _MOVE_TAG.match(body)
            tags = (tag.group(1).strip(),) if tag else ()
            body = body[tag.end():] if tag else body
            turns.append(Turn(TUTOR, body.strip(), tags))
            continue
        body = raw
        for pat in students:
            sm = pat.match(body)
            if sm:
                body = body[sm.end():]
                break
        turns.append(Turn(STUDENT, body.strip()))
    if not any(t.content for t in turns):
        raise record_error(rec, "field 'conversation' has no non-empty turn")
    merged, folded = merge_turns(turns, cfg.turn_separator)
    conv_id, group_id = _ids(rec, cfg, "mathdial", "qid")
    meta: dict[str, Any] = {k: rec.data[k] for k in ("qid", "scenario") if k in rec.data and rec.data[k] is not None}
    return Conversation(conv_id, group_id, merged, meta, folded)


_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def _role_of(rec: Record, role: str, cfg: EduFeedbackConfig) -> str:
    """The speaker of an input role. ShareGPT's ``human``/``gpt`` also answer to ``user``/``assistant`` (so the
    default ``tutor_role`` works), while options and messages keep the file's own role names."""
    names = (role, _SHAREGPT_ROLES.get(role, role))
    if cfg.role_map is not None:
        key = next((n for n in names if n in cfg.role_map), None)
        if key is None:
            raise record_error(rec, f"role {role!r} is not in role_map (mapped roles: {sorted(cfg.role_map)})")
        return cfg.role_map[key]
    if cfg.tutor_role in names:
        return TUTOR
    return SYSTEM if "system" in names else STUDENT


def _text(rec: Record, value: Any, where: str) -> str:
    """Message content: a string, or a list of parts whose ``text`` fields are joined (OpenAI style)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    raise record_error(rec, f"{where} must be a string or a list of text parts, got {type(value).__name__}")


def message_list(rec: Record) -> tuple[str, list[tuple[str, str]]]:
    """(field name, [(raw role, content)]) of a ``messages`` (role/content) or ShareGPT ``conversations``
    (from/value) record."""
    name = "messages" if "messages" in rec.data else "conversations"
    msgs = rec.data.get(name)
    if not isinstance(msgs, list):
        got = "missing" if msgs is None else type(msgs).__name__
        raise record_error(rec, f"field 'messages' must be a list of {{role, content}} objects, got {got}")
    out = []
    for j, msg in enumerate(msgs):
        role = msg.get("role", msg.get("from")) if isinstance(msg, dict) else None
        if not isinstance(role, str):
            raise record_error(rec, f"{name}[{j}] must be an object with a string 'role'")
        content = msg.get("content", msg.get("value"))
        out.append((role, _text(rec, content, f"{name}[{j}].content")))
    return name, out


def parse_messages(rec: Record, cfg: EduFeedbackConfig) -> Conversation:
    """A ``{"messages": [{"role", "content"}]}`` record -> Conversation, roles mapped by the config.

    ShareGPT records (``conversations`` with ``from``/``value``; ``human``/``gpt``) are read the same way; their
    role names are kept (``--tutor-role gpt`` and ``--tutor-role assistant`` both select ``gpt`` turns).
    """
    turns: list[Turn] = []
    for role, content in message_list(rec)[1]:
        speaker = _role_of(rec, role, cfg)
        if speaker != "skip":
            turns.append(Turn(speaker, content.strip()))
    merged, folded = merge_turns(turns, cfg.turn_separator)
    conv_id, group_id = _ids(rec, cfg, "conv", None)
    return Conversation(conv_id, group_id, merged, {}, folded)


PARSERS = {"mathdial": parse_mathdial, "messages": parse_messages}
