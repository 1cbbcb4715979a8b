from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coala_core.errors import DataError, DuplicateError, MissingInputError, SchemaError
from storage.pairs import PAIRS_SCHEMA, from_records, pairs_digest, read_digest, read_pairs, validate_pairs, write_pairs


def rows(n=3, **over):
    out = []
    for i in range(n):
        r = {
            "pair_id": f"p{i}",
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": f"good answer {i}",
            "rejected": f"bad answer {i}",
            "source": "unit",
            "group_id": f"g{i // 2}",
            "split": "train",
            "meta": {"i": i},
        }
        r.update(over)
        out.append(r)
    return out


def test_roundtrip_keeps_rows_and_digest(tmp_path):
    t = from_records(rows())
    info = write_pairs(t, tmp_path / "p.parquet")
    assert info.n_rows == 3 and len(info.digest) == 64
    back = read_pairs(tmp_path / "p.parquet")
    assert back.column("chosen").to_pylist() == t.column("chosen").to_pylist()
    assert back.column("prompt").to_pylist()[1] == [{"role": "user", "content": "question 1"}]
    assert json.loads(back.column("meta")[2].as_py()) == {"i": 2}
    assert read_digest(tmp_path / "p.parquet") == info.digest == pairs_digest(back)


def test_polars_input_and_plain_text_prompt(tmp_path):
    import polars as pl

    t = from_records(rows(2, prompt="just text"))
    df = pl.from_arrow(t)
    info = write_pairs(df, tmp_path / "p.parquet")
    assert read_pairs(info.path).column("prompt").to_pylist()[0] == [{"role": "user", "content": "just text"}]


def test_digest_depends_on_content_and_order():
    a = from_records(rows())
    b = from_records(list(reversed(rows())))
    c = from_records(rows(chosen="other"))
    assert len({pairs_digest(a), pairs_digest(b), pairs_digest(c)}) == 3
    assert pairs_digest(a) == pairs_digest(from_records(rows()))


@pytest.mark.parametrize(
    ("bad", "match", "exc"),
    [
        ({"chosen": "   "}, "row 0, column 'chosen': chosen is empty", DataError),
        ({"rejected": "good answer 0"}, "chosen equals rejected", DataError),
        ({"split": "dev"}, "split must be one of", DataError),
        ({"meta": "not json"}, "meta must be JSON", DataError),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "role must be one of", DataError),
    ],
)
def test_content_faults_name_file_and_row(tmp_path, bad, match, exc):
    recs = rows()
    recs[0].update(bad)
    with pytest.raises(exc, match=match):
        write_pairs(from_records(recs), tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists(), "nothing is written on bad input"
    assert list(tmp_path.iterdir()) == [], "no temporary file is left behind"


def test_duplicate_pair_id(tmp_path):
    recs = rows()
    recs[2]["pair_id"] = "p0"
    with pytest.raises(DuplicateError, match="row 2.*duplicate pair_id 'p0' \\(first at row 0\\)"):
        write_pairs(from_records(recs), tmp_path / "p.parquet")


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "p.parquet"
    info = write_pairs(from_records(rows()), path)
    with pytest.raises(DataError):
        write_pairs(from_records(rows(chosen="")), path)
    assert read_digest(path) == info.digest


def test_validate_collects_all_problems_and_counts(tmp_path):
    t = from_records(rows(4))
    path = tmp_path / "raw.parquet"
    recs = t.to_pylist()
    recs[1]["chosen"] = ""
    recs[3]["pair_id"] = "p0"
    recs[2]["split"] = "validation"
    pq.write_table(pa.Table.from_pylist(recs, schema=PAIRS_SCHEMA), path)
    report = validate_pairs(path)
    assert not report.ok and report.n_rows == 4
    rules = sorted(p.rule for p in report.problems)
    assert rules == ["non-empty", "unique"]
    assert report.counts == {"unit": {"train": 3, "validation": 1}}
    assert any("row 1" in line for line in report.to_dict()["problems"])


def test_schema_faults(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"pair_id": ["a"], "chosen": ["x"]}), path)
    report = validate_pairs(path)
    assert not report.schema_ok and "missing column" in report.problems[0].message
    with pytest.raises(SchemaError, match="missing column"):
        read_pairs(path)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        read_pairs(tmp_path / "junk.parquet")
    with pytest.raises(MissingInputError):
        read_pairs(tmp_path / "absent.parquet")


def test_tampered_file_fails_digest_check(tmp_path):
    path = tmp_path / "p.parquet"
    write_pairs(from_records(rows()), path)
    t = pq.read_table(path)
    t = t.set_column(2, "chosen", pa.array(["changed", "good answer 1", "good answer 2"]))
    pq.write_table(t, path)
    with pytest.raises(DataError, match="digest"):
        read_pairs(path)
