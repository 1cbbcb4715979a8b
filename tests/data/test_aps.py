"""APS on hand-written conversations: exact triplets for each edge case, plus property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coala_core.data import EduFeedbackConfig, aps_triplets, build_edufeedback, parse_messages
from coala_core.data.aps import APSStats
from coala_core.data.sources import Record

DROP = EduFeedbackConfig.build(format="messages")
WRAP = DROP.replace(aps_mode="wrap")


def conv(spec: str, **cfg_changes):
    """'T0 S0 T1' -> Conversation; T* = assistant (tutor), S* = user (student), Y* = system."""
    role = {"T": "assistant", "S": "user", "Y": "system"}
    msgs = [{"role": role[tok[0]], "content": tok} for tok in spec.split()]
    return parse_messages(Record({"id": "x", "messages": msgs}, "<test>", 1), DROP.replace(**cfg_changes))


def triplets(spec: str, cfg: EduFeedbackConfig = DROP) -> list[tuple[list[str], str, str]]:
    return [([m["content"] for m in r["prompt"]], r["chosen"], r["rejected"]) for r in aps_triplets(conv(spec), cfg)]


def test_tutor_first_ending_on_student():
    spec = "T0 S0 T1 S1 T2 S2 T3 S3"
    assert triplets(spec) == [(["S0"], "T1", "T2"), (["S0", "T1", "S1"], "T2", "T3")]
    assert triplets(spec, WRAP) == [
        (["S0"], "T1", "T2"),
        (["S0", "T1", "S1"], "T2", "T3"),
        (["S0", "T1", "S1", "T2", "S2"], "T3", "T0"),  # the authors' wrap-around to the first tutor turn
    ]


def test_tutor_first_ending_on_tutor():
    assert triplets("T0 S0 T1 S1 T2") == [(["S0"], "T1", "T2")]
    assert triplets("T0 S0 T1 S1 T2", WRAP) == [(["S0"], "T1", "T2"), (["S0", "T1", "S1"], "T2", "T0")]


def test_student_first_shifts_tutor_indices():
    spec = "S0 T1 S1 T2 S2 T3"
    assert triplets(spec) == [(["S0"], "T1", "T2"), (["S0", "T1", "S1"], "T2", "T3")]
    assert triplets(spec, WRAP)[-1] == (["S0", "T1", "S1", "T2", "S2"], "T3", "T1")


def test_single_exchange():
    assert triplets("T0 S0 T1") == []
    assert triplets("T0 S0 T1", WRAP) == [(["S0"], "T1", "T0")]
    stats = APSStats()
    assert aps_triplets(conv("S0 T1"), WRAP, stats) == []  # the wrap would compare T1 with itself
    assert stats.wrap_to_self == 1
    assert triplets("T0 S0") == [] and triplets("S0") == [] and triplets("T0") == []


def test_repeated_speaker_is_merged():
    got = triplets("T0 S0 S0b T1 T1b S1 T2")
    assert got == [(["S0\nS0b"], "T1\nT1b", "T2")]
    c = conv("T0 S0 S0b T1 T1b S1 T2")
    assert c.n_merged == 2 and [t.speaker for t in c.turns] == ["tutor", "student", "tutor", "student", "tutor"]


def test_reversed_direction_swaps():
    assert triplets("T0 S0 T1 S1 T2 S2", DROP.replace(direction="reversed")) == [(["S0"], "T2", "T1")]


def test_opening_tutor_turns_and_system_messages():
    assert triplets("T0 S0 T1 S1 T2", DROP.replace(include_opening_tutor_turns=True)) == [(["T0", "S0"], "T1", "T2")]
    rows = aps_triplets(conv("Y0 T0 S0 T1 S1 T2"), DROP)
    assert [(m["role"], m["content"]) for m in rows[0]["prompt"]] == [("system", "Y0"), ("user", "S0")]


def test_meta_and_roles():
    (row,) = aps_triplets(conv("T0 S0 T1 S1 T2"), DROP)
    assert row["pair_id"] == "conv-x-s0" and row["group_id"] == "conv-x"
    assert row["meta"]["chosen_turn"] == 2 and row["meta"]["rejected_turn"] == 4 and row["meta"]["wrapped"] is False
    assert [m["role"] for m in row["prompt"]] == ["user"]


def test_role_map_and_unknown_role(tmp_path):
    cfg = DROP.replace(role_map={"teacher": "tutor", "kid": "student", "note": "skip"})
    msgs = [{"role": r, "content": c} for r, c in
            [("teacher", "T0"), ("kid", "S0"), ("note", "N"), ("teacher", "T1"), ("kid", "S1"), ("teacher", "T2")]]
    rows = aps_triplets(parse_messages(Record({"messages": msgs}, "f", 3), cfg), cfg)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("T1", "T2")]
    with pytest.raises(ValueError, match=r"f:3: role 'parent' is not in role_map"):
        parse_messages(Record({"messages": [{"role": "parent", "content": "x"}]}, "f", 3), cfg)


def test_messages_fixture_end_to_end(fixtures):
    df, stats = build_edufeedback(fixtures / "conversations.jsonl", DROP.replace(train_fraction=1.0,
                                                                                    validation_fraction=0.0,
                                                                                    test_fraction=0.0))
    got = {(r["pair_id"], r["chosen"], r["rejected"]) for r in df.iter_rows(named=True)}
    assert got == {("conv-c1-s0", "T1", "T2"), ("conv-c2-s0", "T1", "T2"), ("conv-c3-s0", "T1\nT1b", "T2")}
    assert stats.builder["opening_speaker"] == {"student": 1, "tutor": 2}
    assert set(df["split"]) == {"train"}


SPEAKERS = st.lists(st.tuples(st.sampled_from(["assistant", "user", "system"]), st.text(max_size=4)), max_size=14)


@settings(max_examples=200, deadline=None)
@given(turns=SPEAKERS, wrap=st.booleans(), reverse=st.booleans(), opening=st.booleans())
def test_aps_only_emits_tutor_turns_of_the_same_conversation(turns, wrap, reverse, opening):
    cfg = DROP.replace(aps_mode="wrap" if wrap else "drop", direction="reversed" if reverse else "later-is-worse",
                       include_opening_tutor_turns=opening)
    c = parse_messages(Record({"messages": [{"role": r, "content": t} for r, t in turns]}, "h", 1), cfg)
    tutor = [c.turns[i] for i in c.of("tutor")]
    rows = aps_triplets(c, cfg)
    students = c.of("student")
    answered = [s for s in students if any(t > s for t in c.of("tutor"))]
    n_drop = sum(1 for s in answered if sum(t > s for t in c.of("tutor")) >= 2)
    assert len(rows) == ((0 if len(tutor) == 1 else len(answered)) if wrap else n_drop)
    for row in rows:
        m = row["meta"]
        assert c.turns[m["chosen_turn"]].speaker == "tutor" and c.turns[m["rejected_turn"]].speaker == "tutor"
        assert m["chosen_turn"] != m["rejected_turn"]
        assert row["chosen"] == c.turns[m["chosen_turn"]].content
        assert row["rejected"] == c.turns[m["rejected_turn"]].content
        assert row["chosen"] in [t.content for t in tutor] and row["rejected"] in [t.content for t in tutor]
        assert row["prompt"] and row["prompt"][-1]["role"] == "user"
        s = students[m["student_turn"]]
        assert min(m["chosen_turn"], m["rejected_turn"]) > s or m["wrapped"]


def test_sharegpt_records_and_content_parts():
    rec = Record({"conversations": [{"from": "gpt", "value": "T0"}, {"from": "human", "value": "S0"},
                                    {"from": "gpt", "value": [{"type": "text", "text": "T"}, {"type": "text", "text": "1"}]},
                                    {"from": "human", "value": "S1"}, {"from": "gpt", "value": "T2"}]}, "g", 1)
    rows = aps_triplets(parse_messages(rec, DROP), DROP)
    assert [(r["prompt"][0]["content"], r["chosen"], r["rejected"]) for r in rows] == [("S0", "T1", "T2")]


def test_no_tutor_role_in_input_is_explained():
    recs = [{"messages": [{"role": "teacher", "content": "a"}, {"role": "student", "content": "b"}]}]
    with pytest.raises(ValueError, match=r"roles in the input: \['student', 'teacher'\]"):
        build_edufeedback(recs, DROP)
    turns = [("teacher", "a"), ("student", "b"), ("teacher", "c"), ("student", "d"), ("teacher", "e")]
    recs = [{"messages": [{"role": r, "content": c} for r, c in turns]}]
    df, _ = build_edufeedback(recs, DROP.replace(tutor_role="teacher", train_fraction=1.0, validation_fraction=0.0,
                                                 test_fraction=0.0))
    assert df.select("chosen", "rejected").rows() == [("c", "e")]
    assert df["prompt"].to_list() == [[{"role": "user", "content": "b"}]]
