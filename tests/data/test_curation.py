"""Splits by group, the seeded subset, filters with drop counts, configs, and the dataset card."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coala_core.data import EduFeedbackConfig, ImportConfig, build_edufeedback, dataset_card, finalize
from coala_core.data.card import card_paths
from coala_core.data.curation import DatasetStats, allocate, assign_splits
from coala_core.errors import ConfigError


def _row(i: int, group: str, chosen: str = "c", rejected: str = "r", prompt: str = "p") -> dict:
    return {"pair_id": f"id{i}", "prompt": [{"role": "user", "content": prompt}], "chosen": chosen,
            "rejected": rejected, "group_id": group, "meta": {}}


@settings(max_examples=100, deadline=None)
@given(groups=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1))
def test_no_group_in_two_splits(groups, seed):
    rows = [_row(i, g, chosen=f"c{i}") for i, g in enumerate(groups)]
    df = finalize(rows, ImportConfig.build(format="trl", seed=seed), DatasetStats("s", "trl"))
    per_group = df.group_by("group_id").agg(pl.col("split").n_unique().alias("n"))
    assert per_group["n"].max() == 1
    n = len(set(groups))
    counts = {s: df.filter(df["split"] == s)["group_id"].n_unique() for s in ("train", "validation", "test")}
    assert counts == dict(zip(("train", "validation", "test"), allocate(n, (0.8, 0.1, 0.1)), strict=True))


def test_allocate_and_seeded_assignment():
    assert allocate(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert allocate(7, (0.8, 0.1, 0.1)) == [5, 1, 1]  # exact 5.6/0.7/0.7: remainders .7 win
    assert allocate(2, (0.8, 0.1, 0.1)) == [2, 0, 0]
    assert sum(allocate(1234, (0.7, 0.2, 0.1))) == 1234
    groups = [f"g{i}" for i in range(50)]
    assert assign_splits(groups, (0.8, 0.1, 0.1), 3) == assign_splits(list(reversed(groups)), (0.8, 0.1, 0.1), 3)
    assert assign_splits(groups, (0.8, 0.1, 0.1), 3) != assign_splits(groups, (0.8, 0.1, 0.1), 4)


def test_bundled_mathdial_splits_are_leak_free(bundled):
    df, _ = build_edufeedback(bundled / "mathdial" / "test.jsonl", EduFeedbackConfig.build())
    splits = {s: set(df.filter(df["split"] == s)["group_id"]) for s in ("train", "validation", "test")}
    assert not (splits["train"] & splits["validation"] or splits["train"] & splits["test"]
                or splits["validation"] & splits["test"])
    conv_split = {}
    for r in df.iter_rows(named=True):  # also no conversation in two splits (groups are qids)
        conv = json.loads(r["meta"])["conversation_id"]
        assert conv_split.setdefault(conv, r["split"]) == r["split"]


def test_filters_count_each_reason():
    cfg = ImportConfig.build(format="trl", max_prompt_chars=5, max_response_chars=6)
    rows = [_row(0, "a"), _row(1, "b", chosen=" "), _row(2, "c", chosen="x ", rejected="x"),
            _row(3, "d", prompt="long prompt"), _row(4, "e", chosen="toolong!"), _row(5, "f"), _row(6, "g", "c2")]
    stats = DatasetStats("s", "trl")
    df = finalize(rows, cfg, stats)
    assert df["pair_id"].to_list() == ["id0", "id6"]
    assert dict(stats.drops) == {"empty_response": 1, "chosen_equals_rejected": 1, "prompt_too_long": 1,
                                 "response_too_long": 1, "duplicate": 1}
    stats = DatasetStats("s", "trl")
    assert finalize(rows, cfg.replace(dedup=False), stats).height == 3 and "duplicate" not in stats.drops


def test_limit_takes_whole_groups():
    rows = [_row(i, f"g{i // 3}", chosen=f"c{i}") for i in range(30)]  # 10 groups of 3
    stats = DatasetStats("s", "trl")
    df = finalize(rows, ImportConfig.build(format="trl", limit=10, seed=1), stats)
    assert df.height == 9 and stats.drops["over_limit"] == 21
    assert set(df.group_by("group_id").len()["len"]) == {3}
    other = finalize(rows, ImportConfig.build(format="trl", limit=10, seed=2), DatasetStats("s", "trl"))
    assert set(df["group_id"]) != set(other["group_id"])


def test_config_rules():
    with pytest.raises(ConfigError, match="must sum to 1"):
        EduFeedbackConfig.build(train_fraction=0.5)
    with pytest.raises(ConfigError, match="aps_mode"):
        EduFeedbackConfig.build(aps_mode="loop")
    with pytest.raises(ConfigError, match="overlap"):
        ImportConfig.build(format="sentiment", positive_labels=("1",), negative_labels=("1",))
    with pytest.raises(ConfigError, match="format"):
        ImportConfig.build()


def test_card_content_and_markdown(fixtures):
    cfg = EduFeedbackConfig.build(skip_invalid=True)
    df, stats = build_edufeedback(fixtures / "mathdial_small.jsonl", cfg)
    card = dataset_card(df, stats, cfg, "d" * 64)
    c = card.content
    assert c["n_rows"] == 3 and c["digest"] == "d" * 64 and c["config"]["aps_mode"] == "drop"
    assert sum(v["rows"] for v in c["counts"]["edufeedback-mathdial"].values()) == 3
    assert c["lengths"]["chosen_chars"]["p100"] == max(len(x) for x in df["chosen"])
    assert c["stats"]["labels"]["move_transitions"]["focus -> probing"] == 1
    assert "## APS label statistics" in card.markdown and "focus -> probing" in card.markdown
    assert json.loads(card.json_text()) == c
    md, js = card_paths("out/pairs.parquet")
    assert (str(md), str(js)) == ("out/pairs.card.md", "out/pairs.card.json")
