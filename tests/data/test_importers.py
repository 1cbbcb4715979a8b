"""Each importer on a small fixture: exact prompts, responses, meta, groups and drop reasons."""

from __future__ import annotations

import json

import pytest

from coala_core.data import ImportConfig, import_pairs
from coala_core.errors import DataError
from storage.pairs import check_content, conform

ALL_TRAIN = dict(train_fraction=1.0, validation_fraction=0.0, test_fraction=0.0)


def _rows(df):
    return [{**r, "meta": json.loads(r["meta"])} for r in df.iter_rows(named=True)]


def _canonical(df):
    table = conform(df)
    assert check_content(table) == []  # what write_pairs would accept
    return table


def test_trl_explicit_implicit_and_plain(fixtures):
    df, stats = import_pairs(fixtures / "trl.jsonl", ImportConfig.build(format="trl", **ALL_TRAIN))
    _canonical(df)
    rows = _rows(df)
    assert [(r["prompt"], r["chosen"], r["rejected"], r["meta"]["prompt_form"]) for r in rows] == [
        ([{"role": "user", "content": "What is 2+2?"}], "4", "5", "explicit"),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
         "Paris.", "Lyon.", "explicit"),
        ([{"role": "user", "content": "Hi"}], "Hello! How can I help?", "What?", "implicit"),
        ([], "The sky is blue.", "The sky is green.", "none"),
        ([{"role": "user", "content": "What is 2+2?"}], "Four.", "Five.", "explicit"),
    ]
    assert rows[0]["group_id"] == rows[4]["group_id"] != rows[1]["group_id"]  # same prompt, same group
    assert rows[3]["group_id"] == rows[3]["pair_id"] == "trl-L4"  # no prompt: its own group
    assert dict(stats.drops) == {"chosen_equals_rejected": 1}


def test_trl_multi_message_response_is_an_error(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"},
                                                       {"role": "user", "content": "b"}], "rejected": "c"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'chosen' must be one assistant message"):
        import_pairs(p, ImportConfig.build(format="trl"))


def test_hh_split_at_last_shared_turn(fixtures):
    df, stats = import_pairs(fixtures / "hh.jsonl", ImportConfig.build(format="hh", **ALL_TRAIN))
    _canonical(df)
    rows = _rows(df)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ([{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "What kind of bread?"},
          {"role": "user", "content": "Sourdough."}], "Start with a starter.", "I don't know."),
        ([{"role": "user", "content": "Tell me a joke."}], "Why did the chicken cross the road?", "No."),
    ]
    assert dict(stats.drops) == {"no_shared_prompt": 1, "empty_response": 1}


def test_hh_bundled_file(bundled):
    df, stats = import_pairs(bundled / "hh-rlhf-harmless-base" / "test.jsonl.gz", ImportConfig.build(format="hh"))
    assert stats.n_records == 2312
    assert df.height + sum(stats.drops.values()) == 2312
    assert dict(stats.drops) == {"empty_response": 4} and all(r[-1]["role"] == "user" for r in df["prompt"].to_list())
    train = set(df.filter(df["split"] == "train")["group_id"])
    assert not train & set(df.filter(df["split"] != "train")["group_id"])


def test_ultrafeedback_scores_and_ties(fixtures):
    df, stats = import_pairs(fixtures / "ultrafeedback.jsonl", ImportConfig.build(format="ultrafeedback", **ALL_TRAIN))
    rows = _rows(df)
    assert [(r["chosen"], r["rejected"], r["meta"]["score_chosen"], r["meta"]["score_rejected"]) for r in rows] == [
        ("Leaves fall softly down", "Haiku.", 8.0, 3.0), ("Snow on the mountain", "No.", 7.5, 2.0)]
    assert {r["group_id"] for r in rows} == {"ultrafeedback-p1"}
    assert rows[0]["prompt"] == [{"role": "user", "content": "Write a haiku."}]
    assert dict(stats.drops) == {"score_tie": 1}
    kept = import_pairs(fixtures / "ultrafeedback.jsonl", ImportConfig.build(format="ultrafeedback", drop_ties=False))[0]
    assert kept.height == 3


def test_sentiment_pairs_are_seeded_one_to_one(fixtures):
    cfg = ImportConfig.build(format="sentiment", **ALL_TRAIN)
    df, stats = import_pairs(fixtures / "sentiment.csv", cfg)
    positives = {"A wonderful film, I loved it.", "Great cast and a moving story.", "An instant classic."}
    negatives = {"Terrible plot and worse acting.", "Boring from start to finish."}
    assert df.height == 2 and set(df["chosen"]) <= positives and set(df["rejected"]) == negatives
    assert df["prompt"].to_list() == [[], []] and dict(stats.drops) == {"unpaired": 1}
    again = import_pairs(fixtures / "sentiment.csv", cfg)[0]
    assert again["chosen"].to_list() == df["chosen"].to_list()
    others = {tuple(import_pairs(fixtures / "sentiment.csv", cfg.replace(seed=s))[0]["chosen"]) for s in range(8)}
    assert len(others) > 1  # the pairing really depends on the seed


def test_sentiment_unknown_label_names_the_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"text": "good", "label": 1}\n{"text": "meh", "label": "neutral"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2: label 'neutral'"):
        import_pairs(p, ImportConfig.build(format="sentiment"))
    df, stats = import_pairs(p, ImportConfig.build(format="sentiment", skip_invalid=True))
    assert df.height == 0 and [r.line for r in stats.invalid] == [2] and stats.drops["unpaired"] == 1


def test_rated_best_vs_worst_ties_skipped(fixtures):
    cfg = ImportConfig.build(format="rated", score_field="helpfulness", **ALL_TRAIN)
    df, stats = import_pairs(fixtures / "rated.jsonl", cfg)
    rows = _rows(df)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ([{"role": "user", "content": "Explain gravity."}], "Mass attracts mass.", "Dunno.")]
    assert rows[0]["meta"]["score_chosen"] == 4 and rows[0]["meta"]["n_responses"] == 4
    assert dict(stats.drops) == {"rating_tie": 1, "single_response": 1}
    with pytest.raises(DataError, match=r"rated.jsonl:1: missing field 'score'"):
        import_pairs(fixtures / "rated.jsonl", ImportConfig.build(format="rated"))


def test_in_memory_records_and_json_array(tmp_path):
    recs = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    df, _ = import_pairs(recs, ImportConfig.build(format="trl"))
    assert df["chosen"].to_list() == ["a"]
    p = tmp_path / "arr.json"
    p.write_text(json.dumps(recs * 2))
    df, stats = import_pairs(p, ImportConfig.build(format="trl"))
    assert df.height == 1 and stats.drops["duplicate"] == 1


def test_hh_consecutive_assistant_turns_merge():
    from coala_core.data.messages import parse_hh
    from coala_core.data.sources import Record

    rec = Record({}, "f", 1)
    msgs = parse_hh(rec, "\n\nHuman: Q?\n\nAssistant: A1\n\nAssistant: A2", "chosen")
    assert msgs == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A1\n\nA2"}]
    with pytest.raises(DataError, match="f:1: field 'chosen' has no 'Human:'/'Assistant:' turns"):
        parse_hh(rec, "plain text", "chosen")


def test_parquet_input_with_nested_messages(fixtures, tmp_path):
    import polars as pl

    recs = [json.loads(line) for line in (fixtures / "ultrafeedback.jsonl").read_text().splitlines()]
    pl.DataFrame(recs).write_parquet(tmp_path / "uf.parquet")
    df, stats = import_pairs(tmp_path / "uf.parquet", ImportConfig.build(format="ultrafeedback"))
    assert sorted(df["chosen"]) == ["Leaves fall softly down", "Snow on the mountain"]
    assert stats.n_records == 3 and dict(stats.drops) == {"score_tie": 1}
