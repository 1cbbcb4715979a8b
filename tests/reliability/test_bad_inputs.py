"""Bad inputs give one line on stderr (exit 1) naming the file and the line, row or chunk; nothing is written.

Counted in RELIABILITY.md as "bad inputs tried". Before: raw tracebacks for a lone surrogate, corrupt chunks
and a full disk; a non-UTF-8 byte rejected the whole file with no line number, even with --skip-invalid; a
pairs file from polars was refused; train accepted pairs of another dataset; a misspelled config section was
ignored; a bad registered-model name was refused only after every stage had run.
"""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from storage.pairs import read_pairs

GOOD = '{"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Five."}\n'
BAD_LINES = {
    "non-utf8-byte": (b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n', "not UTF-8"),
    "lone-surrogate": (b'{"prompt": "x\\ud800y", "chosen": "a", "rejected": "b"}\n', "surrogate"),
    "broken-json": (b'{"prompt": "x", "chosen": "a", "rejected"\n', "not valid JSON"),
    "not-an-object": (b'["a", "b"]\n', "expected a JSON object"),
}


def one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_jsonl_line_is_named_and_skippable(cli, tmp_path, kind):
    raw, reason = BAD_LINES[kind]
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD.encode() + raw + GOOD.replace("Four", "4").encode())
    out = tmp_path / "out.parquet"
    msg = one_line_error(cli("data", "import", "-i", src, "-o", out, "-f", "trl"))
    assert f"{src}:2" in msg and reason in msg
    assert not out.exists()
    res = cli("data", "import", "-i", src, "-o", out, "-f", "trl", "--skip-invalid")
    assert res.exit_code == 0 and "skipped 1 invalid line(s): line 2" in res.stdout
    assert read_pairs(out).num_rows == 2


def test_corrupt_gzip_is_one_line(cli, tmp_path):
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(gzip.compress(GOOD.encode() * 50)[:40])
    msg = one_line_error(cli("data", "import", "-i", src, "-o", tmp_path / "o.parquet", "-f", "trl"))
    assert str(src) in msg


def test_pairs_with_a_stale_digest_stay_an_error(cli, tmp_path, pairs_file):
    import pyarrow.parquet as pq

    t = pq.read_table(pairs_file)
    stale = tmp_path / "stale.parquet"
    pq.write_table(t.slice(0, 10).replace_schema_metadata(t.schema.metadata), stale)  # rows changed, digest kept
    res = cli("data", "validate", stale)  # a report of every problem, not a single error line
    assert res.exit_code == 1 and "content digest differs from the stored digest" in res.stderr
    msg = one_line_error(cli("features", "extract", "--pairs", stale, "--model", "default", "--output", tmp_path / "s.zarr"))
    assert "digest does not match" in msg


def test_train_refuses_pairs_of_another_dataset(cli, tmp_path, pairs_file, tiny_lm):
    from test_verify_cli import extract

    out = tmp_path / "fs.zarr"
    extract(cli, tmp_path, pairs_file, tiny_lm, out)
    resplit = tmp_path / "resplit.parquet"
    df = pl.read_parquet(pairs_file).with_columns(pl.lit("train").alias("split"))  # test rows moved into training
    df.write_parquet(resplit)
    msg = one_line_error(cli("train", "--features", out, "--pairs", resplit, "--output", tmp_path / "head"))
    assert f"{resplit}: pairs digest" in msg and "differs from the dataset digest" in msg
    assert not (tmp_path / "head").exists()


def test_unknown_config_section_is_an_error(cli, tmp_path, pairs_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("features:\n  max_tokens: 32\nphse1:\n  n_patterns: 4\n")
    msg = one_line_error(cli("features", "extract", "--pairs", pairs_file, "--output", tmp_path / "s.zarr", "--config", cfg))
    assert "unknown config section(s) ['phse1']" in msg
    assert not (tmp_path / "s.zarr").exists()


TYPO_CONFIG = "features:\n  max_tokens: 32\nllm_baseline:\n  epochs: 1\nphse1:\n  n_patterns: 4\n"
CONFIG_COMMANDS = {  # every command with --config; each must refuse the misspelled section before doing anything
    "data build-edufeedback": lambda t, p, m: ["data", "build-edufeedback", "--input", t / "conv.jsonl", "--format",
                                               "messages", "--output", t / "o.parquet"],
    "data import": lambda t, p, m: ["data", "import", "--input", t / "trl.jsonl", "--format", "trl", "--output",
                                    t / "o.parquet"],
    "features extract": lambda t, p, m: ["features", "extract", "--pairs", p, "--model", m, "--output", t / "o.zarr"],
    "train": lambda t, p, m: ["train", "--features", t / "none.zarr", "--pairs", p, "--output", t / "o"],
    "generate": lambda t, p, m: ["generate", "--model-uri", t / "none", "--prompt", "hi"],
    "pipeline run": lambda t, p, m: ["pipeline", "run"],
    "serve": lambda t, p, m: ["serve", "--cron", "0 3 * * *"],
    "runs compare": lambda t, p, m: ["runs", "compare"],
    "baseline --method dpo": lambda t, p, m: ["baseline", "--method", "dpo", "--pairs", p, "--model", m, "--limit", "4",
                                              "--no-track", "--max-train-seconds", "1", "--output", t / "o"],
}


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_unknown_config_section_is_an_error_in_every_command(cli, tmp_path, pairs_file, tiny_lm, command):
    """Before: `coala baseline --method dpo --config` read its llm_baseline section and trained with the
    misspelled one ignored."""
    from harness import REPO

    cfg = tmp_path / "c.yaml"
    # a complete pipeline config plus a typo, so the misspelled section is the only thing wrong
    cfg.write_text(TYPO_CONFIG if command.startswith("baseline")
                   else (REPO / "configs" / "tiny.yaml").read_text() + "\nphse1:\n  n_patterns: 4\n")
    (tmp_path / "conv.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    (tmp_path / "trl.jsonl").write_text(GOOD)
    res = cli(*CONFIG_COMMANDS[command](tmp_path, pairs_file, tiny_lm), "--config", cfg)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "phse1" in res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.zarr").exists()


def test_bad_registered_model_name_is_refused_before_any_stage(cli, tmp_path):
    from harness import REPO

    res = cli("pipeline", "run", "--config", REPO / "configs" / "tiny.yaml", "--set", f"run.workdir={tmp_path / 'wd'}",
              "--set", "run.registered_model=team/head")
    assert res.exit_code == 1 and "registered_model" in res.stderr and "team/head" in res.stderr
    assert not (tmp_path / "wd" / "mlflow.db").exists()


def test_json_report_lists_bad_lines(tmp_path, cli):
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD.encode() + BAD_LINES["non-utf8-byte"][0] + GOOD.encode().replace(b"Four", b"4"))
    out = tmp_path / "o.parquet"
    assert cli("data", "import", "-i", src, "-o", out, "-f", "trl", "--skip-invalid").exit_code == 0
    card = json.loads(out.with_name("o.card.json").read_text())
    assert "2" in json.dumps(card) and "not UTF-8" in json.dumps(card)
