"""Reading user input files into line-numbered records, and the record of a skipped malformed line.

Accepted inputs: JSON Lines (``.jsonl``/``.json`` with one object per line, optionally ``.gz``), a JSON array
file, Parquet, CSV, or an in-memory sequence of dicts. Each record carries its 1-based line (row) number so
an error can say ``file:line``. A malformed line raises :class:`DataError` naming file and line, unless the
caller asked to skip: then it is returned as an :class:`InvalidRecord` and listed in the dataset card.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coala_core.errors import DataError, MissingInputError


@dataclass(frozen=True)
class Record:
    """One input object and where it came from (``line`` is 1-based)."""

    data: dict[str, Any]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class InvalidRecord:
    """A malformed input line that was skipped (``--skip-invalid``)."""

    file: str
    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


class RecordError(DataError):
    """A record broke a format rule; carries ``file`` and ``line`` for skip lists."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file, self.line, self.reason = file, line, reason

    def as_invalid(self) -> InvalidRecord:
        return InvalidRecord(self.file, self.line, self.reason)


def record_error(rec: Record, reason: str) -> RecordError:
    return RecordError(rec.file, rec.line, reason)


def _open_text(path: Path) -> Iterator[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8-sig") as fh:
            yield from fh
    else:
        with open(path, encoding="utf-8-sig") as fh:
            yield from fh


def _jsonl(path: Path, invalid: list[InvalidRecord], skip_invalid: bool) -> Iterator[Record]:
    name = str(path)
    try:
        for i, raw in enumerate(_open_text(path), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                exc = RecordError(name, i, f"not valid JSON ({err.msg} at column {err.colno})")
            else:
                if isinstance(obj, dict):
                    yield Record(obj, name, i)
                    continue
                exc = RecordError(name, i, f"expected a JSON object, got {type(obj).__name__}")
            if not skip_invalid:
                raise exc
            invalid.append(exc.as_invalid())
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise DataError(f"{name}: cannot be read as UTF-8 JSON Lines ({err})") from None


def _table_rows(path: Path) -> Iterator[Record]:
    import polars as pl

    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]} ({err})") from None
    for i, row in enumerate(df.iter_rows(named=True), start=1):
        yield Record(row, str(path), i)


def _json_array(path: Path, invalid: list[InvalidRecord], skip_invalid: bool) -> Iterator[Record]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        yield from _jsonl(path, invalid, skip_invalid)  # a .json file with one object per line
        return
    items = obj if isinstance(obj, list) else [obj]
    for i, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield Record(item, str(path), i)
        else:
            exc = RecordError(str(path), i, f"array item is {type(item).__name__}, expected an object")
            if not skip_invalid:
                raise exc
            invalid.append(exc.as_invalid())


def read_records(
    source: str | Path | Iterable[Mapping[str, Any]], *, skip_invalid: bool = False
) -> tuple[list[Record], list[InvalidRecord]]:
    """Read every record of ``source`` (path or in-memory dicts).

    Returns (records, skipped lines). Raises DataError ``file:line: reason`` on the first malformed line
    unless ``skip_invalid``; MissingInputError when the path does not exist.
    """
    invalid: list[InvalidRecord] = []
    if not isinstance(source, (str, Path)):
        records = []
        for i, item in enumerate(source, start=1):
            if not isinstance(item, Mapping):
                exc = RecordError("<records>", i, f"expected a mapping, got {type(item).__name__}")
                if not skip_invalid:
                    raise exc
                invalid.append(exc.as_invalid())
                continue
            records.append(Record(dict(item), "<records>", i))
        return records, invalid
    path = Path(source)
    if not path.is_file():
        raise MissingInputError(f"input file not found: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".csv"):
        return list(_table_rows(path)), invalid
    if suffixes and suffixes[-1] == ".json":
        return list(_json_array(path, invalid, skip_invalid)), invalid
    return list(_jsonl(path, invalid, skip_invalid)), invalid


def require_str(rec: Record, field: str, *, allow_empty: bool = False) -> str:
    """The string value of ``field`` or a RecordError naming the field, expected and actual type."""
    if field not in rec.data or rec.data[field] is None:
        raise record_error(rec, f"missing field {field!r} (fields present: {sorted(rec.data)[:12]})")
    value = rec.data[field]
    if not isinstance(value, str):
        raise record_error(rec, f"field {field!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise record_error(rec, f"field {field!r} is empty")
    return value


def collect(
    records: Sequence[Record], parse: Any, *, skip_invalid: bool, invalid: list[InvalidRecord]
) -> list[Any]:
    """Apply ``parse`` to each record; a RecordError stops the run or, with ``skip_invalid``, is listed."""
    out = []
    for rec in records:
        try:
            out.append(parse(rec))
        except RecordError as exc:
            if not skip_invalid:
                raise
            invalid.append(exc.as_invalid())
    return out
