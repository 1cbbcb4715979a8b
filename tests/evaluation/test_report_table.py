"""``md_table``: a cell holding ``|`` (the sweep's method names are ``features|head``) stays one cell."""

from __future__ import annotations

import re

from coala_core.report import md_table

UNESCAPED = re.compile(r"(?<!\\)\|")


def test_a_pipe_inside_a_cell_is_escaped_and_every_row_has_the_header_cells() -> None:
    text = md_table([{"method": "last_L15|coala[lin]", "accuracy": 0.6772, "note": "a\nb"},
                     {"method": "dpo", "accuracy": 0.657, "note": None}], ["method", "accuracy", "note"])
    lines = text.splitlines()
    assert len(lines) == 4
    assert {len(UNESCAPED.findall(line)) for line in lines} == {4}  # 3 cells: 4 separators on every line
    assert lines[2] == "| last_L15\\|coala[lin] | 0.6772 | a b |"
    assert lines[3] == "| dpo | 0.657 | None |"
