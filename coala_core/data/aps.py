"""The Alternating Population Strategy (APS): preference triplets from tutoring conversations.

method.md section 2. With tutor turns T0, T1, ... and student turns S0, S1, ... (merged so they alternate),
for every student turn Si that the tutor answers:

- prompt_i = the history up to and including Si, starting at S0 (the paper's prompt_0 = S0: tutor turns before
  the first student turn are left out unless ``include_opening_tutor_turns``; system turns are always kept),
- chosen_i = the tutor's immediate reply to Si, rejected_i = the tutor turn one exchange later
  (``direction="reversed"`` swaps them).

Conversations that open with the tutor give one triplet per student turn i with a T_{i+2}; opening with the
student shifts the tutor indices by one (chosen is still the next tutor turn). Edge cases:

- ending on a student turn: that turn has no reply, so no triplet;
- single exchange (one tutor reply after a student turn): ``drop`` emits nothing; ``wrap`` takes the rejected
  from the first tutor turn, unless that is the chosen turn itself (then nothing: a reply is never compared
  with itself);
- repeated speaker: merged into one turn before APS (``Conversation.n_merged`` counts them).

``aps_mode="wrap"`` reproduces the authors' code: the rejected index is taken modulo the number of tutor turns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from coala_core.data.config import EduFeedbackConfig
from coala_core.data.conversations import STUDENT, SYSTEM, TUTOR, Conversation

ROLE_OF = {STUDENT: "user", TUTOR: "assistant", SYSTEM: "system"}


@dataclass
class APSStats:
    """APS counts over a set of conversations (the card's "APS label statistics")."""

    n_conversations: int = 0
    n_student_turns: int = 0
    n_triplets: int = 0
    n_wrapped: int = 0
    no_reply: int = 0  # student turns with no later tutor turn (conversation ends on the student)
    no_later_turn: int = 0  # drop mode: student turns answered but with no T_{i+2}
    wrap_to_self: int = 0  # wrap mode: the wrapped rejected would be the chosen turn itself
    merged_turns: int = 0
    opening: Counter[str] = field(default_factory=Counter)  # first speaker -> conversations
    ending: Counter[str] = field(default_factory=Counter)  # last speaker -> conversations
    triplets_per_conversation: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_conversations": self.n_conversations,
            "n_student_turns": self.n_student_turns,
            "n_triplets": self.n_triplets,
            "n_wrapped": self.n_wrapped,
            "student_turns_without_reply": self.no_reply,
            "student_turns_without_later_tutor_turn": self.no_later_turn,
            "wrap_to_self_skipped": self.wrap_to_self,
            "merged_turns": self.merged_turns,
            "opening_speaker": dict(sorted(self.opening.items())),
            "ending_speaker": dict(sorted(self.ending.items())),
            "triplets_per_conversation": {str(k): v for k, v in sorted(self.triplets_per_conversation.items())},
        }


def _message(conv: Conversation, i: int) -> dict[str, str]:
    t = conv.turns[i]
    return {"role": ROLE_OF[t.speaker], "content": t.content}


def aps_triplets(conv: Conversation, cfg: EduFeedbackConfig, stats: APSStats | None = None) -> list[dict[str, Any]]:
    """APS rows of one conversation: dicts with pair_id, prompt (messages), chosen, rejected, group_id, meta.

    ``meta`` holds the turn indices used, whether the rejected wrapped, and the tutor move tags of the chosen
    and rejected turns (MathDial). Rows come in student-turn order.
    """
    stats = stats if stats is not None else APSStats()
    tutor = conv.of(TUTOR)
    students = conv.of(STUDENT)
    stats.n_conversations += 1
    stats.n_student_turns += len(students)
    stats.merged_turns += conv.n_merged
    non_system = [t.speaker for t in conv.turns if t.speaker != SYSTEM]
    if non_system:
        stats.opening[non_system[0]] += 1
        stats.ending[non_system[-1]] += 1
    rows: list[dict[str, Any]] = []
    first = students[0] if students else 0
    head = [i for i in range(first) if conv.turns[i].speaker == SYSTEM or cfg.include_opening_tutor_turns]
    for j, s in enumerate(students):
        k = next((n for n, t in enumerate(tutor) if t > s), None)  # position of the reply in `tutor`
        if k is None:
            stats.no_reply += 1
            continue
        wrapped = k + 1 >= len(tutor)
        if wrapped and cfg.aps_mode == "drop":
            stats.no_later_turn += 1
            continue
        r = (k + 1) % len(tutor)
        if r == k:
            stats.wrap_to_self += 1
            continue
        c_idx, r_idx = tutor[k], tutor[r]
        if cfg.direction == "reversed":
            c_idx, r_idx = r_idx, c_idx
        prompt = [_message(conv, i) for i in head] + [_message(conv, i) for i in range(first, s + 1)]
        meta: dict[str, Any] = {
            "conversation_id": conv.conversation_id,
            "student_turn": j,
            "chosen_turn": c_idx,
            "rejected_turn": r_idx,
            "wrapped": wrapped,
            "direction": cfg.direction,
            **conv.meta,
        }
        if conv.turns[c_idx].tags or conv.turns[r_idx].tags:
            meta["chosen_moves"] = list(conv.turns[c_idx].tags)
            meta["rejected_moves"] = list(conv.turns[r_idx].tags)
        rows.append(
            {
                "pair_id": f"{conv.conversation_id}-s{j}",
                "prompt": prompt,
                "chosen": conv.turns[c_idx].content,
                "rejected": conv.turns[r_idx].content,
                "group_id": conv.group_id,
                "meta": meta,
            }
        )
        stats.n_wrapped += int(wrapped)
    stats.n_triplets += len(rows)
    stats.triplets_per_conversation[len(rows)] += 1
    return rows


def label_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the APS labels say, on the final rows: move-tag transitions and chosen-vs-rejected lengths.

    ``move_transitions`` counts ``chosen_moves -> rejected_moves`` (tags joined by ``+``); the length figures
    compare characters of chosen and rejected (APS is a directness heuristic: is the chosen shorter?).
    """
    transitions: Counter[str] = Counter()
    chosen_moves: Counter[str] = Counter()
    rejected_moves: Counter[str] = Counter()
    longer = shorter = equal = 0
    len_c = len_r = 0
    for row in rows:
        meta = row["meta"]
        if "chosen_moves" in meta:
            c = "+".join(meta["chosen_moves"]) or "(none)"
            r = "+".join(meta["rejected_moves"]) or "(none)"
            transitions[f"{c} -> {r}"] += 1
            chosen_moves[c] += 1
            rejected_moves[r] += 1
        lc, lr = len(row["chosen"]), len(row["rejected"])
        len_c += lc
        len_r += lr
        longer += lc > lr
        shorter += lc < lr
        equal += lc == lr
    n = max(len(rows), 1)
    return {
        "n_rows": len(rows),
        "chosen_longer_share": longer / n,
        "chosen_shorter_share": shorter / n,
        "equal_length_share": equal / n,
        "mean_chosen_chars": len_c / n,
        "mean_rejected_chars": len_r / n,
        "chosen_moves": dict(chosen_moves.most_common()),
        "rejected_moves": dict(rejected_moves.most_common()),
        "move_transitions": dict(transitions.most_common()),
    }
