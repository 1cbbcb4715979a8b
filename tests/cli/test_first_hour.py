"""A new user's first hour with `coala data`, from the user's side: the real `coala` command in a subprocess,
its exit code and the first line it prints (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "fixtures"
COALA = str(Path(sys.executable).with_name("coala"))


def coala(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    return subprocess.run([COALA, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def first_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if ln.strip()), "")


def test_tsv_with_tripled_quotes_html_entities_neutral_labels_and_source_split(tmp_path):
    """The drug-review TSV: fields wrapped in tripled quotes, HTML entities, a 1-10 rating with a middle band
    that is neither positive nor negative, and the source's own train/test split."""
    out = tmp_path / "reviews.parquet"
    res = coala("data", "import", "--input", str(FIXTURES / "reviews.tsv"), "--output", str(out), "--format", "sentiment",
                "--text-field", "review", "--label-field", "rating", "--positive-labels", "8,9,10",
                "--negative-labels", "1,2,3", "--ignore-labels", "4,5,6,7", "--strip-quotes", "--unescape-html",
                "--split-column", "split")
    assert res.returncode == 0, res.stderr
    assert first_line(res.stdout) == f"wrote 4 pairs to {out} (digest " + first_line(res.stdout).split("(digest ")[1]
    df = pl.read_parquet(out)
    texts = df["chosen"].to_list() + df["rejected"].to_list()
    assert "He didn't want to do anything." in "\n".join(texts)  # entity decoded, newline inside quotes kept
    assert "Suboxone has completely turned my life around & I feel healthier." in texts
    assert not any(t.startswith('"') or "&#039;" in t or "&amp;" in t for t in texts)
    # pairs are formed within the source split: the test reviews (ids 35696, 155963, 165907, 102654) stay in test
    test_texts = set(df.filter(pl.col("split") == "test")["chosen"].to_list() + df.filter(pl.col("split") == "test")["rejected"].to_list())
    assert test_texts == {"Suboxone has completely turned my life around & I feel healthier.",
                          "2nd day on 5mg started to work with rock hard erections however experianced headache, lower bowel preassure.",
                          "He pulled out, but he cummed a bit in me. I took the Plan B 26 hours later.",
                          "Abilify changed my life. There is hope."}
    card = json.loads((tmp_path / "reviews.card.json").read_text())
    assert card["stats"]["drops"]["ignored_label"] == 1  # the rating 5 review


def test_tsv_is_not_read_as_jsonl_and_unknown_label_names_the_option(tmp_path):
    res = coala("data", "import", "-i", str(FIXTURES / "reviews.tsv"), "-o", str(tmp_path / "r.parquet"), "-f", "sentiment",
                "--text-field", "review", "--label-field", "rating", "--positive-labels", "8,9,10", "--negative-labels", "1,2,3")
    assert res.returncode == 1
    line = first_line(res.stderr)
    assert "reviews.tsv:" in line and "label '5'" in line and "--ignore-labels" in line, line
    assert "JSON" not in res.stderr
    assert not (tmp_path / "r.parquet").exists()


def test_ragged_csv_row_is_named_by_line_and_skippable(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\n"fine, quoted",1\nstray,0,extra\n"also fine",0\n', encoding="utf-8")
    res = coala("data", "import", "-i", str(bad), "-o", str(tmp_path / "b.parquet"), "-f", "sentiment")
    assert res.returncode == 1
    assert first_line(res.stderr) == f"error: {bad}:3: 3 fields, the header has 2 (delimiter ','; a field holding the delimiter must be quoted)"
    res = coala("data", "import", "-i", str(bad), "-o", str(tmp_path / "b.parquet"), "-f", "sentiment", "--skip-invalid")
    assert res.returncode == 0, res.stderr
    assert first_line(res.stdout).startswith("wrote 1 pairs")


def test_delimiter_and_input_format_options(tmp_path):
    semi = tmp_path / "rated.txt"
    semi.write_text("prompt;response;score\nq1;good;5\nq1;bad;1\nq2;\"a;b\";3\nq2;c;2\n", encoding="utf-8")
    res = coala("data", "import", "-i", str(semi), "-o", str(tmp_path / "x.parquet"), "-f", "rated")
    assert res.returncode == 1 and "--input-format" in first_line(res.stderr)
    res = coala("data", "import", "-i", str(semi), "-o", str(tmp_path / "x.parquet"), "-f", "rated", "--input-format", "csv",
                "--delimiter", ";", "--splits", "1,0,0")
    assert res.returncode == 0, res.stderr
    df = pl.read_parquet(tmp_path / "x.parquet")
    assert sorted(df["chosen"].to_list()) == ["a;b", "good"]


def test_missing_format_suggests_the_format_the_fields_match(tmp_path):
    res = coala("data", "import", "-i", str(FIXTURES / "trl.jsonl"), "-o", str(tmp_path / "x.parquet"))
    assert res.returncode == 1
    assert "--format is required" in first_line(res.stderr) and "`coala data import --format trl`" in first_line(res.stderr)
    res = coala("data", "build-edufeedback", "-i", str(FIXTURES / "conversations.jsonl"), "-o", str(tmp_path / "y.parquet"))
    assert res.returncode == 1
    assert "missing field 'conversation'" in first_line(res.stderr)
    assert "`coala data build-edufeedback --format messages`" in first_line(res.stderr)


def test_sharegpt_roles_keep_their_names(tmp_path):
    share = tmp_path / "chat.jsonl"
    rows = [{"id": f"c{i}", "conversations": [{"from": "gpt", "value": f"T0 {i}"}, {"from": "human", "value": f"S0 {i}"},
                                               {"from": "gpt", "value": f"T1 {i}"}, {"from": "human", "value": f"S1 {i}"},
                                               {"from": "gpt", "value": f"T2 {i}"}]} for i in range(3)]
    share.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    for role in ("gpt", "assistant"):
        res = coala("data", "build-edufeedback", "-i", str(share), "-o", str(tmp_path / f"{role}.parquet"), "-f", "messages",
                    "--tutor-role", role, "--splits", "1,0,0")
        assert res.returncode == 0, res.stderr
        assert first_line(res.stdout).startswith("wrote 3 pairs")
    res = coala("data", "build-edufeedback", "-i", str(share), "-o", str(tmp_path / "z.parquet"), "-f", "messages",
                "--tutor-role", "tutor")
    assert res.returncode == 1
    assert "roles in the input: ['gpt', 'human']" in first_line(res.stderr)
    res = coala("data", "build-edufeedback", "-i", str(share), "-o", str(tmp_path / "m.parquet"), "-f", "messages",
                "--role-map", "gpt=tutor", "--splits", "1,0,0")
    assert res.returncode == 1 and "role 'human' is not in role_map" in first_line(res.stderr)


def test_non_utf8_jsonl_line_is_named_and_skippable(tmp_path):
    bad = tmp_path / "trl.jsonl"
    bad.write_bytes(b'{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "b\xff", "chosen": "x", "rejected": "y"}\n'
                    b'{"prompt": "c", "chosen": "\\ud800", "rejected": "y"}\n{"prompt": "d", "chosen": "x", "rejected": "z"}\n')
    res = coala("data", "import", "-i", str(bad), "-o", str(tmp_path / "t.parquet"), "-f", "trl")
    assert res.returncode == 1 and first_line(res.stderr) == f"error: {bad}:2: not UTF-8 (byte 0xff at offset 13)"
    res = coala("data", "import", "-i", str(bad), "-o", str(tmp_path / "t.parquet"), "-f", "trl", "--skip-invalid", "--splits", "1,0,0")
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "t.card.json").read_text())
    assert [r["line"] for r in card["stats"]["invalid_records"]] == [2, 3]
    assert "surrogate" in card["stats"]["invalid_records"][1]["reason"]


@pytest.mark.parametrize("command", [("data", "import"), ("data", "build-edufeedback"), ("data", "validate"),
                                     ("features", "extract"), ("features", "verify"), ("train",), ("evaluate",),
                                     ("baseline",), ("score",), ("generate",), ("pipeline", "run"), ("serve",),
                                     ("runs", "compare"), ("runs", "repair")])
def test_help_shows_type_and_default_of_every_option(command):
    res = coala(*command, "--help")
    assert res.returncode == 0
    assert "<bool>" not in res.stdout and "<str>" not in res.stdout
    options: list[str] = []  # one entry per option: its line and the help text wrapped below it
    for ln in res.stdout.splitlines():
        body = ln.strip("│ ")
        if ln.lstrip("│ *").startswith("--"):
            options.append(body)
        elif options and body and not ln.startswith("╰"):
            options[-1] += " " + body
    missing = [o for o in options if "[default:" not in o and "[required]" not in o
               and not o.lstrip("* ").startswith(("--help", "--config"))]
    assert options and not missing, missing
    assert "--install-completion" not in res.stdout


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """A rated CSV imported, a tiny random LM, and a feature store with chunk_rows 8 plus a head trained on it."""
    from coala_core.testing import save_tiny_lm

    root = tmp_path_factory.mktemp("first_hour")
    model = save_tiny_lm(root / "tiny-lm")
    run = lambda *a: coala(*a, cwd=root)  # noqa: E731
    res = run("data", "import", "--input", str(REPO / "examples" / "rated_responses.csv"), "--format", "rated",
              "--splits", "0.6,0.2,0.2", "--output", "pairs.parquet")
    assert res.returncode == 0, res.stderr
    res = run("features", "extract", "--pairs", "pairs.parquet", "--model", str(model), "--chunk-rows", "8",
              "--output", "s8.zarr", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run("train", "--features", "s8.zarr", "--pairs", "pairs.parquet", "--output", "head", "--quiet")
    assert res.returncode == 0, res.stderr
    return root, model, run


def test_head_identity_ignores_storage_layout_but_not_pooling(tiny_project):
    root, model, run = tiny_project
    res = run("features", "extract", "--pairs", "pairs.parquet", "--model", str(model), "--chunk-rows", "64",
              "--output", "s64.zarr", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run("evaluate", "--head", "head", "--features", "s64.zarr", "--pairs", "pairs.parquet", "--output", "report")
    assert res.returncode == 0, res.stderr
    assert first_line(res.stdout).startswith("test: ")
    res = run("features", "extract", "--pairs", "pairs.parquet", "--model", str(model), "--pooling", "last",
              "--output", "last.zarr", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run("evaluate", "--head", "head", "--features", "last.zarr", "--pairs", "pairs.parquet", "--output", "report2")
    assert res.returncode == 1
    assert first_line(res.stderr).startswith("error:") and "pooling" in first_line(res.stderr), res.stderr


def test_existing_non_store_directory_as_output_is_one_line_before_the_model_loads(tiny_project):
    root, model, run = tiny_project
    (root / "notastore").mkdir()
    (root / "notastore" / "notes.txt").write_text("mine")
    res = run("features", "extract", "--pairs", "pairs.parquet", "--model", str(root / "no-such-model"),
              "--output", "notastore")
    assert res.returncode == 1  # the model path is wrong too: the output check came first
    assert res.stderr.strip().splitlines() == [
        "error: --output notastore: an existing directory that is not a feature store (no zarr.json); "
        "give a new path or an existing store to resume"]
    assert (root / "notastore" / "notes.txt").read_text() == "mine"


def test_score_output_carries_the_texts(tiny_project):
    root, model, run = tiny_project
    res = run("score", "--model-uri", "head", "--features", "s8.zarr", "--pairs", "pairs.parquet", "--output", "scores.parquet")
    assert res.returncode == 0, res.stderr
    df = pl.read_parquet(root / "scores.parquet")
    assert {"pair_id", "prompt", "chosen", "rejected", "reward_chosen", "reward_rejected"} <= set(df.columns)
    pairs = pl.read_parquet(root / "pairs.parquet").select("pair_id", "chosen")
    joined = df.select("pair_id", "chosen").join(pairs, on="pair_id", suffix="_src")
    assert joined.height == df.height and (joined["chosen"] == joined["chosen_src"]).all()


def test_baseline_without_a_head_says_what_it_compares(tiny_project):
    root, model, run = tiny_project
    res = run("baseline", "--features", "s8.zarr", "--pairs", "pairs.parquet", "--n-boot", "50")
    assert res.returncode == 0, res.stderr
    heads = [ln.split("|")[1].strip() for ln in res.stdout.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert "random_relu_phase2" in heads and "coala" not in heads, res.stdout


def test_files_follow_the_users_umask(tiny_project):
    root, model, run = tiny_project
    old = os.umask(0o022)
    try:
        res = run("data", "import", "--input", str(REPO / "examples" / "rated_responses.csv"), "--format", "rated",
                  "--output", "shared/pairs.parquet")
        assert res.returncode == 0, res.stderr
        res = run("train", "--features", "s8.zarr", "--pairs", "pairs.parquet", "--output", "shared/head", "--quiet")
        assert res.returncode == 0, res.stderr
    finally:
        os.umask(old)
    assert (root / "shared" / "pairs.parquet").stat().st_mode & 0o777 == 0o644
    assert (root / "shared" / "head").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (root / "shared" / "head").iterdir() if p.is_file())
