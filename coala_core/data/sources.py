"""Reading user input files into line-numbered records, and the record of a skipped malformed line.

Accepted inputs: JSON Lines (``.jsonl``, optionally ``.gz``), a JSON array file (``.json``, or one object per
line), CSV and TSV with standard quoting, Parquet, or an in-memory sequence of dicts; the format comes from the
extension or is named (``input_format``). Each record carries its 1-based line (row) number so
an error can say ``file:line``. A malformed line raises :class:`DataError` naming file and line, unless the
caller asked to skip: then it is returned as an :class:`InvalidRecord` and listed in the dataset card.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
import zlib
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


def _lines(path: Path) -> Iterator[bytes]:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            yield from fh
    else:
        with open(path, "rb") as fh:
            yield from fh


def _decode(raw: bytes, name: str, line: int) -> str:
    """One line as text; a byte sequence that is not UTF-8 is a RecordError naming the line and byte offset."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(name, line, f"not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    return text[1:] if line == 1 and text.startswith("\ufeff") else text


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _jsonl(path: Path, invalid: list[InvalidRecord], skip_invalid: bool) -> Iterator[Record]:
    name = str(path)
    try:
        for i, raw in enumerate(_lines(path), start=1):
            try:
                text = _decode(raw, name, i)
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as err:
                    raise RecordError(name, i, f"not valid JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(obj, dict):
                    raise RecordError(name, i, f"expected a JSON object, got {type(obj).__name__}")
                if _has_lone_surrogate(obj):
                    raise RecordError(name, i, "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                                      "which is not valid Unicode text")
            except RecordError as exc:
                if not skip_invalid:
                    raise
                invalid.append(exc.as_invalid())
                continue
            yield Record(obj, name, i)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{name}: cannot be read as gzip-compressed JSON Lines ({err})") from None


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as Parquet ({err})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield Record(row, str(path), i)


def _delimited(path: Path, delimiter: str, invalid: list[InvalidRecord], skip_invalid: bool) -> Iterator[Record]:
    """CSV/TSV with standard quoting (a quoted field may hold the delimiter, newlines and doubled quotes).

    The first row is the header (an empty header cell is named ``column_<k>``). ``Record.line`` is the file
    line on which the row starts; a row with a different number of fields is a RecordError for that line.
    """
    name = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
            try:
                header = next(reader)
            except StopIteration:
                return
            header = [h.strip() or f"column_{k}" for k, h in enumerate(header)]
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    exc = RecordError(name, line, f"{len(row)} fields, the header has {len(header)} "
                                      f"(delimiter {delimiter!r}; a field holding the delimiter must be quoted)")
                    if not skip_invalid:
                        raise exc
                    invalid.append(exc.as_invalid())
                    continue
                yield Record(dict(zip(header, row, strict=True)), name, line)
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at byte {err.start}); "
                        "convert it to UTF-8 first") from None
    except csv.Error as err:
        raise DataError(f"{name}: cannot be read as delimited text ({err})") from None


def _json_array(path: Path, invalid: list[InvalidRecord], skip_invalid: bool) -> Iterator[Record]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        yield from _jsonl(path, invalid, skip_invalid)  # names the line of the bad byte
        return
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


#: file extension -> input format (``auto``)
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
              ".parquet": "parquet", ".pq": "parquet"}


def input_format_of(path: Path, input_format: str = "auto") -> str:
    """The reader for ``path``: ``input_format`` unless ``auto``, else by extension (``.gz`` looked through)."""
    if input_format != "auto":
        return input_format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    raise DataError(f"{path}: cannot tell the file format from its extension {''.join(path.suffixes) or '(none)'!r}; "
                    f"pass --input-format jsonl|json|csv|tsv|parquet")


def _clean(value: Any, strip_quotes: bool, unescape_html: bool) -> Any:
    if isinstance(value, str):
        if strip_quotes and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return html.unescape(value) if unescape_html else value
    if isinstance(value, list):
        return [_clean(v, strip_quotes, unescape_html) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v, strip_quotes, unescape_html) for k, v in value.items()}
    return value


def read_records(
    source: str | Path | Iterable[Mapping[str, Any]], *, skip_invalid: bool = False, input_format: str = "auto",
    delimiter: str | None = None, strip_quotes: bool = False, unescape_html: bool = False,
) -> tuple[list[Record], list[InvalidRecord]]:
    """Read every record of ``source`` (path or in-memory dicts).

    Returns (records, skipped lines). Raises DataError ``file:line: reason`` on the first malformed line
    unless ``skip_invalid``; MissingInputError when the path does not exist. ``input_format`` (``auto``: by
    extension), ``delimiter`` (CSV/TSV), ``strip_quotes`` and ``unescape_html`` as in
    :class:`coala_core.data.config.DatasetConfig`.
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
    else:
        path = Path(source)
        if not path.is_file():
            raise MissingInputError(f"input file not found: {path}")
        fmt = input_format_of(path, input_format)
        if fmt in ("csv", "tsv"):
            sep = delimiter or ("\t" if fmt == "tsv" else ",")
            records = list(_delimited(path, sep, invalid, skip_invalid))
        elif fmt == "parquet":
            records = list(_parquet(path))
        elif fmt == "json":
            records = list(_json_array(path, invalid, skip_invalid))
        else:
            records = list(_jsonl(path, invalid, skip_invalid))
    if strip_quotes or unescape_html:
        records = [Record(_clean(r.data, strip_quotes, unescape_html), r.file, r.line) for r in records]
    return records, invalid


def read_config_records(source: str | Path | Iterable[Mapping[str, Any]], cfg: Any) -> tuple[list[Record], list[InvalidRecord]]:
    """:func:`read_records` with the reading options of a ``DatasetConfig``."""
    return read_records(source, skip_invalid=cfg.skip_invalid, input_format=cfg.input_format, delimiter=cfg.delimiter,
                        strip_quotes=cfg.strip_quotes, unescape_html=cfg.unescape_html)


def source_split(rec: Record, cfg: Any) -> str | None:
    """The canonical split of a record under ``cfg.split_field`` (``None`` when the option is off)."""
    if cfg.split_field is None:
        return None
    value = rec.data.get(cfg.split_field)
    if value is None or not str(value).strip():
        raise record_error(rec, f"missing split field {cfg.split_field!r} (fields present: {sorted(rec.data)[:12]})")
    split = cfg.split_of_source(value)
    if split is None:
        raise record_error(rec, f"split value {value!r} in {cfg.split_field!r} maps to no split; map it with "
                           "--split-names VALUE=train|validation|test,...")
    return split


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
