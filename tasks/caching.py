"""Cache keys from content digests (a Prefect 3 cache policy).

A task's key is the sha256 of its name, the digest of the code it runs and its inputs, where each input is
replaced by a token of its content: a reference (:mod:`tasks.refs`) by its digest, a ``Path`` to a file by
the sha256 of the file's bytes, a pydantic config by its JSON dump. The code digest
(:func:`code_digest`) covers every Python source file of ``coala_core`` and ``storage`` (the packages of
:data:`SOURCE_ROOTS`) and the task's own module, so a fix anywhere in the core makes the next run recompute
instead of returning the cached old result. Locations do not enter the key, so the key says "these bytes
with this config through this code"; excluded parameters (work folders, tracking handles) never do.
Changing one Phase II field changes only the keys of Phase II and of what reads its head.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from tasks.refs import ArtifactRef, FeaturesRef

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}

#: the packages whose source enters every stage's cache key (the core numerics and every byte on disk)
SOURCE_ROOTS: list[Path] = [Path(__file__).resolve().parent.parent / name for name in ("coala_core", "storage")]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime) so repeated keys do not reread it."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_DIGESTS[memo] = h.hexdigest()
    return _FILE_DIGESTS[memo]


def source_digest(paths: list[Path]) -> str:
    """sha256 over (relative name, sha256 of bytes) of every ``*.py`` file under ``paths`` (directories are
    walked; files are taken as they are), in sorted order. File digests are memoised on size and mtime."""
    entries: list[tuple[str, str]] = []
    for root in paths:
        root = Path(root)
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                rel = f.relative_to(root.parent) if root.is_dir() else Path(f.name)
                entries.append((rel.as_posix(), file_digest(f)))
    text = json.dumps(sorted(entries), separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_digest(fn: Any = None) -> str:
    """Digest of the code a task runs: :data:`SOURCE_ROOTS` plus the module file defining ``fn``."""
    paths = list(SOURCE_ROOTS)
    if fn is not None:
        src = inspect.getsourcefile(inspect.unwrap(fn))
        if src is not None:
            paths.append(Path(src))
    return source_digest(paths)


def content_token(value: Any) -> Any:
    """A JSON-able stand-in for ``value`` that depends on content, not on location."""
    if isinstance(value, ArtifactRef | FeaturesRef):
        return value.cache_token()
    if isinstance(value, BaseModel):
        return {"__model__": type(value).__name__, **value.model_dump(mode="json")}
    if isinstance(value, Path):
        return {"file_sha256": file_digest(value)} if value.is_file() else {"path": value.name}
    if isinstance(value, Mapping):
        return {str(k): content_token(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [content_token(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot build a cache token for a {type(value).__name__}; pass a reference or a config")


def stable_digest(obj: Any, length: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``content_token(obj)``."""
    text = json.dumps(content_token(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass
class DigestInputs(CachePolicy):
    """Cache key = sha256(task name, digest of the code it runs, content tokens of the inputs not in ``exclude``)."""

    exclude: list[str] = field(default_factory=list)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        kept = {k: v for k, v in inputs.items() if k not in self.exclude}
        code = code_digest(task_ctx.task.fn)
        return stable_digest({"task": task_ctx.task.name, "code": code, "inputs": kept}, length=64)


def digest_policy(*exclude: str) -> CachePolicy:
    """The policy every cached stage task uses: content digests of its inputs and of the code it runs."""
    return DigestInputs(exclude=list(exclude))
