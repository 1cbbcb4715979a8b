"""The kill -9 campaign (campaign.py): a short part in the default suite, the full one with ``-m slow``.

Each stage is killed at random points and rerun; the figures must show no row lost and no silent change
(no partial or different output ever visible, the final output bit-identical to an uninterrupted run).
"""

from __future__ import annotations

import os

import pytest
from campaign import campaign


def check(figs) -> None:
    assert figs.problems == [], figs.problems
    assert (figs.rows_lost, figs.silent_changes, figs.leftovers) == (0, 0, 0)


def test_extraction_killed_at_random_points_resumes_bit_identically(tmp_path, tiny_lm):
    figs = campaign(tmp_path, tiny_lm, kills=2, seed=int(os.environ.get("COALA_CAMPAIGN_SEED", "0")),
                    stages=("features",))
    check(figs)
    assert figs.faults_injected + figs.finished_before_kill == 2


@pytest.mark.slow
def test_every_cli_stage_killed_at_random_points(tmp_path, tiny_lm):
    kills = int(os.environ.get("COALA_CAMPAIGN_KILLS", "4"))
    figs = campaign(tmp_path, tiny_lm, kills=kills, seed=int(os.environ.get("COALA_CAMPAIGN_SEED", "1")))
    check(figs)
    assert figs.faults_injected >= kills  # most runs are long enough to be killed
