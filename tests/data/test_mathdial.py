"""MathDial parsing and the bundled file: tags moved to meta, name prefixes stripped, the triplet count."""

from __future__ import annotations

import json

import pytest

from coala_core.data import EduFeedbackConfig, build_edufeedback, parse_mathdial
from coala_core.data.sources import Record

CFG = EduFeedbackConfig.build()


def _speaker_runs(conversation: str) -> list[str]:
    """Independent derivation: speakers of the |EOM| turns with consecutive repeats collapsed."""
    runs: list[str] = []
    for turn in conversation.split("|EOM|"):
        who = "T" if turn.lstrip().startswith("Teacher:") else "S"
        if not runs or runs[-1] != who:
            runs.append(who)
    return runs


def test_small_fixture_exact(fixtures):
    df, stats = build_edufeedback(fixtures / "mathdial_small.jsonl", CFG.replace(train_fraction=1.0,
                                                                                 validation_fraction=0.0,
                                                                                 test_fraction=0.0))
    rows = [(r["pair_id"], [m["content"] for m in r["prompt"]], r["chosen"], r["rejected"], json.loads(r["meta"]))
            for r in df.iter_rows(named=True)]
    assert [r[:4] for r in rows] == [
        ("mathdial-L1-s0", ["I added 3 and 4 to get 8."], "What is 3 + 4?", "So what is the answer?"),
        ("mathdial-L1-s1", ["I added 3 and 4 to get 8.", "What is 3 + 4?", "It is 7."], "So what is the answer?",
         "Well done"),
        ("mathdial-L2-s0", ["Okay, I read it."], "What is being asked?\nIt asks for the total.", "Yes."),
    ]
    assert rows[0][4]["chosen_moves"] == ["focus"] and rows[0][4]["rejected_moves"] == ["probing"]
    assert rows[2][4]["chosen_moves"] == ["probing", "telling"]  # merged teacher turns keep both tags
    assert not any("(" in r[2] or "Teacher:" in r[2] or "Cody:" in " ".join(r[1]) for r in rows)
    # both conversations of qid 1 share a group; conversation 3 (one exchange) gives nothing in drop mode
    assert df["group_id"].to_list() == ["mathdial-qid-1"] * 3
    assert stats.builder["triplets_per_conversation"] == {"0": 1, "1": 1, "2": 1}
    assert stats.labels["move_transitions"] == {"focus -> probing": 1, "probing -> generic": 1,
                                                "probing+telling -> generic": 1}


def test_student_name_prefix_and_untagged_teacher():
    rec = Record({"student_profile": "Cody is a student.",
                  "conversation": "Teacher: hello|EOM|Cody: Hi|EOM|Teacher: (probing) Why?|EOM|Ratio: 3:4"},
                 "f.jsonl", 7)
    c = parse_mathdial(rec, CFG)
    assert [(t.speaker, t.content, t.tags) for t in c.turns] == [
        ("tutor", "hello", ()), ("student", "Hi", ()), ("tutor", "Why?", ("probing",)), ("student", "Ratio: 3:4", ())]
    with pytest.raises(ValueError, match=r"f.jsonl:7: missing field 'conversation'"):
        parse_mathdial(Record({"qid": 1}, "f.jsonl", 7), CFG)


def test_bundled_mathdial_count_matches_turn_counts(bundled):
    path = bundled / "mathdial" / "test.jsonl"
    runs = [_speaker_runs(json.loads(line)["conversation"]) for line in path.read_text().splitlines()]
    assert all(r[0] == "T" for r in runs)  # every MathDial test conversation opens with the teacher
    expected = sum(max(0, r.count("T") - 2) for r in runs)
    df, stats = build_edufeedback(path, CFG.replace(dedup=False))
    assert stats.builder["n_triplets"] == expected == 2405
    assert stats.n_candidates == 2405 and stats.n_records == 599
    assert df.height + sum(stats.drops.values()) == 2405
    wrap = build_edufeedback(path, CFG.replace(aps_mode="wrap"))[1]
    # wrap adds the last answered student turn of every conversation with at least two tutor turns
    assert wrap.builder["n_triplets"] == 2405 + sum(1 for r in runs if r.count("T") >= 2)
    for row in df.head(200).iter_rows(named=True):
        assert not row["chosen"].startswith(("(", "Teacher:")) and not row["rejected"].startswith(("(", "Teacher:"))
        assert all(not m["content"].startswith("Student:") for m in row["prompt"])
    meta = json.loads(df["meta"][0])
    assert {"chosen_moves", "rejected_moves", "qid", "conversation_id"} <= set(meta)
