"""Canonical preference pairs as Parquet with a declared schema, a content digest and atomic writes.

Encoding (see docs/ARCHITECTURE.md): ``prompt`` is always a list of ``{role, content}`` messages (a plain-text
prompt is one ``user`` message; the list may be empty), ``chosen`` and ``rejected`` are plain strings (one
assistant reply each), ``meta`` is JSON object text. The sha256 digest of a canonical JSON-lines encoding of
the rows, in file order, is stored in the Parquet metadata under ``coala.digest`` and is the dataset's
identity downstream.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from coala_core.errors import DataError, DuplicateError, MissingInputError, SchemaError
from storage.atomic import atomic_path

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PAIRS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("prompt", pa.list_(MESSAGE_TYPE)),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("source", pa.string()),
        ("group_id", pa.string()),
        ("split", pa.string()),
        ("meta", pa.string()),
    ]
)
COLUMNS = tuple(PAIRS_SCHEMA.names)
SPLITS = ("train", "validation", "test")
ROLES = ("system", "user", "assistant")
DIGEST_KEY = b"coala.digest"
SCHEMA_VERSION_KEY = b"coala.schema_version"
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class PairsInfo:
    path: Path
    n_rows: int
    digest: str


@dataclass(frozen=True)
class Problem:
    row: int | None  # 0-based row index, None for file-level problems
    column: str | None
    rule: str
    message: str

    def render(self, path: str | Path) -> str:
        where = f"{path}" + (f", row {self.row}" if self.row is not None else "")
        where += f", column {self.column!r}" if self.column else ""
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    path: Path
    n_rows: int = 0
    schema_ok: bool = True
    digest: str | None = None
    stored_digest: str | None = None
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> split -> n

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "n_rows": self.n_rows,
            "schema_ok": self.schema_ok,
            "digest": self.digest,
            "stored_digest": self.stored_digest,
            "counts": self.counts,
            "problems": [p.render(self.path) for p in self.problems],
        }


def from_records(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a canonical table from dicts; ``meta`` may be a dict (encoded to JSON) or JSON text."""
    rows = []
    for rec in records:
        row = {c: rec.get(c) for c in COLUMNS}
        meta = row["meta"]
        row["meta"] = json.dumps(meta if meta is not None else {}, sort_keys=True, ensure_ascii=False) if not isinstance(meta, str) else meta
        if isinstance(row["prompt"], str):
            row["prompt"] = [{"role": "user", "content": row["prompt"]}] if row["prompt"] else []
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)


def _as_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if hasattr(table, "to_arrow"):  # polars DataFrame
        return table.to_arrow()
    raise SchemaError(f"expected a pyarrow Table or polars DataFrame, got {type(table).__name__}")


def conform(table: Any, where: str = "<table>") -> pa.Table:
    """Select and cast the canonical columns; raise SchemaError naming missing or uncastable columns."""
    t = _as_arrow(table)
    missing = [c for c in COLUMNS if c not in t.column_names]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}; expected {list(COLUMNS)}, got {t.column_names}")
    cols = []
    for f in PAIRS_SCHEMA:
        col = t.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaError(f"{where}: column {f.name!r} has type {col.type}, expected {f.type} ({err})") from None
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=PAIRS_SCHEMA)


def _canonical_row(row: Mapping[str, Any]) -> str:
    return json.dumps([row[c] for c in COLUMNS], ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def pairs_digest(table: Any) -> str:
    """sha256 over the canonical JSON-lines encoding of the rows, in file order."""
    t = conform(table)
    h = hashlib.sha256()
    for batch in t.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            h.update(_canonical_row(row).encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def check_content(table: pa.Table) -> list[Problem]:
    """Content rules: non-empty ids and responses, chosen != rejected, unique pair_id, known split and roles, JSON meta."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.to_pylist()):
        pid = row["pair_id"]
        if pid is None or not str(pid).strip():
            problems.append(Problem(i, "pair_id", "non-empty", "pair_id is empty"))
        elif pid in seen:
            problems.append(Problem(i, "pair_id", "unique", f"duplicate pair_id {pid!r} (first at row {seen[pid]})"))
        else:
            seen[pid] = i
        for col in ("chosen", "rejected"):
            if row[col] is None or not row[col].strip():
                problems.append(Problem(i, col, "non-empty", f"{col} is empty"))
        if row["chosen"] is not None and row["chosen"].strip() and row["chosen"].strip() == (row["rejected"] or "").strip():
            problems.append(Problem(i, "rejected", "differs-from-chosen", "chosen equals rejected"))
        for col in ("source", "group_id"):
            if row[col] is None or not row[col].strip():
                problems.append(Problem(i, col, "non-empty", f"{col} is empty"))
        if row["split"] not in SPLITS:
            problems.append(Problem(i, "split", "one-of", f"split must be one of {list(SPLITS)}, got {row['split']!r}"))
        for j, msg in enumerate(row["prompt"] or []):
            if msg is None or msg.get("role") not in ROLES:
                role = None if msg is None else msg.get("role")
                problems.append(Problem(i, "prompt", "role", f"message {j} role must be one of {list(ROLES)}, got {role!r}"))
            elif msg.get("content") is None:
                problems.append(Problem(i, "prompt", "content", f"message {j} has no content"))
        if row["prompt"] is None:
            problems.append(Problem(i, "prompt", "not-null", "prompt is null (use an empty list for no prompt)"))
        try:
            meta = json.loads(row["meta"]) if row["meta"] is not None else None
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except ValueError:
            problems.append(Problem(i, "meta", "json-object", f"meta must be JSON object text, got {row['meta']!r:.60}"))
    return problems


def _raise_first(problems: list[Problem], where: str | Path) -> None:
    if not problems:
        return
    first = problems[0]
    more = f" (and {len(problems) - 1} more problem(s); run `coala data validate`)" if len(problems) > 1 else ""
    cls = DuplicateError if first.rule == "unique" else DataError
    raise cls(first.render(where) + more)


def write_pairs(table: Any, path: str | Path, *, extra_metadata: Mapping[str, str] | None = None) -> PairsInfo:
    """Validate and atomically write canonical pairs; returns path, row count and digest."""
    path = Path(path)
    t = conform(table, where=str(path))
    _raise_first(check_content(t), path)
    digest = pairs_digest(t)
    meta = {DIGEST_KEY: digest.encode(), SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()}
    for k, v in (extra_metadata or {}).items():
        meta[f"coala.{k}".encode()] = str(v).encode()
    t = t.replace_schema_metadata(meta)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(t, tmp, compression="zstd")
    return PairsInfo(path=path, n_rows=t.num_rows, digest=digest)


def _open(path: str | Path) -> pq.ParquetFile:
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"pairs file not found: {p}")
    try:
        return pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"{p}: not a readable Parquet file ({err})") from None


def read_digest(path: str | Path) -> str | None:
    """The digest stored in the file's metadata (None when absent), without reading rows."""
    md = _open(path).schema_arrow.metadata or {}
    d = md.get(DIGEST_KEY)
    return d.decode() if d else None


def read_pairs(path: str | Path, *, validate: bool = True) -> pa.Table:
    """Read a pairs file; with ``validate`` check schema, content and the stored digest.

    The returned table carries the dataset digest in its metadata (``table_digest``): the one stored at write
    time, or, for a file written by another tool (polars, plain pyarrow) without it, the digest computed from
    its rows. A stored digest that no longer matches the rows is an error (the file changed after writing).
    """
    p = Path(path)
    pf = _open(p)
    try:
        t = pf.read()
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"{p}: not a readable Parquet file ({err})") from None
    stored = (t.schema.metadata or {}).get(DIGEST_KEY)
    t = conform(t, where=str(p))
    digest = None
    if validate:
        _raise_first(check_content(t), p)
        digest = pairs_digest(t)
        if stored is not None and digest != stored.decode():
            raise DataError(f"{p}: content digest does not match the digest stored at write time (file modified?)")
    if stored is None:
        stored = (digest or pairs_digest(t)).encode()
    return t.replace_schema_metadata({DIGEST_KEY: stored})


def table_digest(table: pa.Table) -> str:
    """The dataset digest of a table from :func:`read_pairs` (stored, or computed from the rows)."""
    d = (table.schema.metadata or {}).get(DIGEST_KEY)
    return d.decode() if d else pairs_digest(table)


def dataset_digest(path: str | Path) -> str:
    """The identity of a pairs file: its stored digest, or the digest of its rows when it has none."""
    return read_digest(path) or pairs_digest(conform(_open(path).read(), where=str(path)))


def validate_pairs(path: str | Path) -> ValidationReport:
    """Collect every schema and content problem of a pairs file (never raises for bad content)."""
    p = Path(path)
    report = ValidationReport(path=p)
    try:
        raw = _open(p).read()
    except SchemaError as err:
        report.schema_ok = False
        report.problems.append(Problem(None, None, "parquet", str(err)))
        return report
    report.n_rows = raw.num_rows
    stored = (raw.schema.metadata or {}).get(DIGEST_KEY)
    report.stored_digest = stored.decode() if stored else None
    try:
        t = conform(raw, where=str(p))
    except SchemaError as err:
        report.schema_ok = False
        report.problems.append(Problem(None, None, "schema", str(err).split(": ", 1)[-1]))
        return report
    report.problems.extend(check_content(t))
    report.digest = pairs_digest(t)
    if report.stored_digest and report.stored_digest != report.digest:
        report.problems.append(Problem(None, None, "digest", "content digest differs from the stored digest"))
    counts: Counter[tuple[str, str]] = Counter(zip(t.column("source").to_pylist(), t.column("split").to_pylist(), strict=True))
    for (src, split), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        report.counts.setdefault(str(src), {})[str(split)] = n
    return report


def to_polars(table: pa.Table):  # noqa: ANN201 - polars imported lazily
    import polars as pl

    return pl.from_arrow(table)
