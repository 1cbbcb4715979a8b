"""`coala data` through typer's CliRunner: builds write pairs + card; bad input exits 1 and writes nothing."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from coala_cli.data import app
from storage.pairs import read_digest, read_pairs

runner = CliRunner()


def test_build_edufeedback_writes_pairs_and_card(fixtures, tmp_path):
    out = tmp_path / "edu.parquet"
    res = runner.invoke(app, ["build-edufeedback", "--input", str(fixtures / "mathdial_small.jsonl"),
                              "--format", "mathdial", "--output", str(out), "--splits", "1,0,0"])
    assert res.exit_code == 0, res.output
    table = read_pairs(out)
    assert table.num_rows == 3 and set(table.column("split").to_pylist()) == {"train"}
    card = json.loads((tmp_path / "edu.card.json").read_text())
    assert card["digest"] == read_digest(out) and card["n_rows"] == 3
    assert "# Dataset card: edufeedback-mathdial" in (tmp_path / "edu.card.md").read_text()
    assert "wrote 3 pairs" in res.output


def test_build_messages_with_options_and_config(fixtures, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("edufeedback:\n  format: messages\n  aps_mode: wrap\n  source: tutor-chat\n")
    out = tmp_path / "m.parquet"
    res = runner.invoke(app, ["build-edufeedback", "-i", str(fixtures / "conversations.jsonl"), "-o", str(out),
                              "--config", str(cfg), "--direction", "reversed", "--splits", "1,0,0"])
    assert res.exit_code == 0, res.output
    t = read_pairs(out).to_pylist()
    assert {r["source"] for r in t} == {"tutor-chat"}
    first = next(r for r in t if r["pair_id"] == "conv-c1-s0")
    assert (first["chosen"], first["rejected"]) == ("T2", "T1")  # reversed direction from the flag
    assert sum(json.loads(r["meta"])["wrapped"] for r in t) == 3  # wrap from the YAML section


def test_malformed_line_exits_1_with_file_and_line_and_writes_nothing(fixtures, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = (fixtures / "mathdial_small.jsonl").read_text().splitlines()
    bad.write_text("\n".join([good[0], good[1], '{"conversation": "Teacher: hi', good[2]]) + "\n")
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["build-edufeedback", "-i", str(bad), "-o", str(out)])
    assert res.exit_code == 1
    assert f"{bad}:3:" in res.output and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == [bad]  # no pairs, no card, no temp file

    res = runner.invoke(app, ["build-edufeedback", "-i", str(bad), "-o", str(out), "--skip-invalid"])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "o.card.json").read_text())
    assert card["stats"]["invalid_records"] == [
        {"file": str(bad), "line": 3, "reason": card["stats"]["invalid_records"][0]["reason"]}]
    assert "not valid JSON" in card["stats"]["invalid_records"][0]["reason"]
    assert "## Skipped invalid lines" in (tmp_path / "o.card.md").read_text()


def test_wrong_field_type_names_the_line(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": 3, "rejected": "b"}\n')
    res = runner.invoke(app, ["import", "-i", str(bad), "-f", "trl", "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 1 and f"{bad}:2:" in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_import_each_format(fixtures, tmp_path):
    cases = [("trl", "trl.jsonl", []), ("hh", "hh.jsonl", []), ("ultrafeedback", "ultrafeedback.jsonl", []),
             ("sentiment", "sentiment.csv", []), ("rated", "rated.jsonl", ["--score-field", "helpfulness"])]
    for fmt, name, extra in cases:
        out = tmp_path / f"{fmt}.parquet"
        res = runner.invoke(app, ["import", "-i", str(fixtures / name), "-f", fmt, "-o", str(out), *extra])
        assert res.exit_code == 0, (fmt, res.output)
        assert read_pairs(out).num_rows >= 1
        assert (tmp_path / f"{fmt}.card.md").exists()


def test_validate_ok_and_problems(fixtures, tmp_path):
    out = tmp_path / "p.parquet"
    assert runner.invoke(app, ["import", "-i", str(fixtures / "trl.jsonl"), "-f", "trl", "-o", str(out)]).exit_code == 0
    res = runner.invoke(app, ["validate", str(out)])
    assert res.exit_code == 0 and "problems: none" in res.output and "rows: 5" in res.output
    assert "trl: train" in res.output
    t = pq.read_table(out)
    bad = t.set_column(t.schema.get_field_index("rejected"), "rejected", t.column("chosen"))
    pq.write_table(bad, tmp_path / "bad.parquet")
    res = runner.invoke(app, ["validate", str(tmp_path / "bad.parquet")])
    assert res.exit_code == 1 and "chosen equals rejected" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "missing.parquet")])
    assert res.exit_code == 1 and "not found" in res.output


def test_usage_errors(fixtures, tmp_path):
    res = runner.invoke(app, ["build-edufeedback", "-i", str(fixtures / "trl.jsonl"), "-o", str(tmp_path / "x"),
                              "--aps-mode", "loop"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["import", "-i", str(fixtures / "trl.jsonl"), "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 1 and "format" in res.output
    res = runner.invoke(app, ["import", "-i", str(tmp_path / "nope.jsonl"), "-f", "trl", "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not found" in res.output
