"""The README's command table, every row run exactly as written there: placeholders (F, P, STORE, ...) filled in,
each `a|b` alternative run on its own, `[--opt F]` given. A row run by another test is listed in ELSEWHERE with
that test, which must exist; a new row without a test fails here.

Before: `coala score --model-uri URI --input F` and `coala baseline` exited 2 as written (a required option missing).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest
from harness import REPO, coala

FIXTURES = REPO / "tests" / "data" / "fixtures"

#: rows another test runs as written (prefix -> "file::test")
ELSEWHERE = {
    "coala train ": "tests/engine/test_readme_train.py::test_readme_train_command_runs_as_written",
    "coala features verify ": "tests/reliability/test_readme_commands.py::test_readme_verify_repair_command",
    "coala runs repair ": "tests/reliability/test_readme_commands.py::test_readme_runs_repair_command",
    "coala serve ": "tests/observability/test_ui_screenshots.py::test_serve_timezone_concurrency_and_typed_form",
    "coala pipeline run ": "tests/reliability/test_readme_table.py::test_pipeline_rows_run_as_written",
    "coala runs compare ": "tests/reliability/test_readme_table.py::test_pipeline_rows_run_as_written",
}


def table_rows() -> list[str]:
    """The first cell of every row of the README's "Command line" table (the command, unescaped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(coala [^`]+)` \|", section, re.M)
    assert len(rows) >= 10, "README: the command table was not found"
    return [r.replace("\\|", "|") for r in rows]


def variants(command: str) -> list[list[str]]:
    """Every way to run ``command``: one argv per choice among its `a|b|c` tokens; `[--opt F]` is given."""
    tokens = shlex.split(command.replace("[", "").replace("]", ""))
    choices = [tok.split("|") if "|" in tok and not tok.startswith(("-", "'", '"')) else [tok] for tok in tokens]
    return [list(combo) for combo in itertools.product(*choices)]


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    """Placeholders replaced: ``values["--opt F"]`` for the F after --opt, else ``values["F"]``."""
    return [values.get(f"{prev} {tok}", values.get(tok, tok)) for prev, tok in zip(["", *argv], argv, strict=False)]


def run_row(prefix: str, values: dict[str, str], per_choice: dict[str, dict[str, str]] | None = None,
            env: dict[str, str] | None = None) -> list[str]:
    """Run every variant of the table row starting with ``prefix``; returns their stdouts."""
    (row,) = [r for r in table_rows() if r.startswith(prefix)]
    outs = []
    for argv in variants(row):
        extra = next((v for k, v in (per_choice or {}).items() if k in argv), {})
        filled = fill(argv, {**values, **extra})
        res = coala(*filled[1:], timeout=1200, extra_env=env)
        assert res.returncode == 0, f"{' '.join(filled)}\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
        outs.append(res.stdout)
    return outs


#: rows run by test_command_table_rows_run_as_written below
HERE = ["coala data build-edufeedback ", "coala data import ", "coala data validate ", "coala features extract ",
        "coala evaluate ", "coala baseline --pairs ", "coala baseline --method ", "coala score ", "coala generate "]


def test_every_row_has_a_test():
    here = Path(__file__).read_text(encoding="utf-8")
    assert all(f'run_row("{prefix}"' in here for prefix in HERE)
    for row in table_rows():
        where = next((t for p, t in ELSEWHERE.items() if row.startswith(p)), None)
        if where is None:
            assert any(row.startswith(p) for p in HERE), f"README row `{row}` is run by no test"
            continue
        file, name = where.split("::")
        assert f"def {name}(" in (REPO / file).read_text(encoding="utf-8"), f"{where} (for `{row}`) does not exist"


@pytest.mark.slow  # 19 `coala` processes on a tiny LM: about 10 minutes on the shared 2-core machine
def test_command_table_rows_run_as_written(tmp_path: Path, tiny_lm: Path):
    from storage.pairs import read_pairs

    t = tmp_path
    built = t / "mathdial.parquet"
    run_row("coala data build-edufeedback ", {},
            {"mathdial": {"F": str(FIXTURES / "mathdial_small.jsonl"), "P": str(built)},
             "messages": {"F": str(FIXTURES / "conversations.jsonl"), "P": str(t / "chats.parquet")}})
    assert read_pairs(built).num_rows > 0 and read_pairs(t / "chats.parquet").num_rows > 0

    imported = {f: t / f"{f}.parquet" for f in ("trl", "hh", "ultrafeedback", "sentiment", "rated")}
    run_row("coala data import ", {}, {
        "trl": {"F": str(FIXTURES / "trl.jsonl"), "P": str(imported["trl"])},
        "hh": {"F": str(FIXTURES / "hh.jsonl"), "P": str(imported["hh"])},
        "ultrafeedback": {"F": str(FIXTURES / "ultrafeedback.jsonl"), "P": str(imported["ultrafeedback"])},
        "sentiment": {"F": str(FIXTURES / "sentiment.csv"), "P": str(imported["sentiment"])},
        "rated": {"F": str(REPO / "examples" / "rated_responses.csv"), "P": str(imported["rated"])},
    })
    assert all(read_pairs(p).num_rows > 0 for p in imported.values())

    pairs = imported["rated"]  # has train, validation and test splits
    run_row("coala data validate ", {"P": str(pairs)})

    store, head, report = t / "rated.zarr", t / "head", t / "report"
    run_row("coala features extract ", {"P": str(pairs), "ID_OR_PATH": str(tiny_lm), "STORE": str(store)})
    from campaign import TRAIN_YAML

    (t / "train.yaml").write_text(TRAIN_YAML)  # a quick head to use (the train row itself runs in tests/engine)
    res = coala("train", "--features", store, "--pairs", pairs, "--output", head, "--config", t / "train.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    run_row("coala evaluate ", {"HEAD": str(head), "STORE": str(store), "DIR": str(report)})
    assert "pairwise accuracy" in (report / "report.md").read_text(encoding="utf-8")
    run_row("coala baseline --pairs ", {"P": str(pairs), "STORE": str(store)})
    tuned = {m: t / m for m in ("dpo", "orpo")}
    run_row("coala baseline --method ", {"P": str(pairs), "--model M": str(tiny_lm), "--max-train-seconds S": "900"},
            {m: {"DIR": str(d)} for m, d in tuned.items()})
    for d in tuned.values():
        assert json.loads((d / "metrics.json").read_text())["steps"] > 0 and not (d / "checkpoints").exists()

    scored = t / "scored.jsonl"
    local = {"COALA_BACKBONE": str(tiny_lm)}  # the README's way to name a local backbone (no --backbone option)
    run_row("coala score ", {"URI": str(head), "F": str(REPO / "examples" / "new_responses.jsonl"), "O": str(scored)},
            env=local)
    rows = [json.loads(ln) for ln in scored.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert rows and all(isinstance(r["reward"], float) for r in rows)
    outs = run_row("coala generate ", {"URI": str(head), "TEXT": "I think 7 x 8 is 54."}, env=local)
    assert len(outs) == 3 and all(o.strip() for o in outs)


@pytest.mark.slow  # a whole (tiny) pipeline run
def test_pipeline_rows_run_as_written(tmp_path: Path, tiny_lm: Path):
    cfg = tmp_path / "pipeline.yaml"
    text = (REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8")
    text = text.replace("workdir: .coala/tiny", f"workdir: {tmp_path / 'wd'}").replace(
        "model: tests/flows/.tiny-model", f"model: {tiny_lm}").replace(
        "input: data/mathdial/test.jsonl", f"input: {REPO / 'data' / 'mathdial' / 'test.jsonl'}")
    cfg.write_text(text + "\n", encoding="utf-8")
    run_row("coala pipeline run ", {"YAML": str(cfg)})
    html, png = tmp_path / "compare.html", tmp_path / "compare.png"
    run_row("coala runs compare ", {"YAML": str(cfg), "--html F": str(html), "--png F": str(png)})
    assert html.stat().st_size > 0 and png.stat().st_size > 0
