"""Trained reward heads on disk: a directory with ``head.safetensors`` and ``head.json``. Never pickle.

``head.safetensors`` holds float64 tensors ``theta1`` (d', m), ``theta2`` (m,) or (m + d,) with the linear term
(``linear`` in head.json), ``gates`` (d', P), ``mean``
(d,), ``scale`` (d,), optionally ``pattern`` (m,) int64 and the convex-form Phase I weights ``v``, ``w``.
``head.json`` holds the format version, code version, dimensions, ``beta``, program and bias, the
configuration that produced the head, the provenance of the features it was trained on, metrics and any
extra sections (selection tables, histories). The directory is written atomically.

:func:`load_head` validates the tensors against the dimensions recorded in ``head.json`` and, when asked,
against the width and provenance of the features it is about to score: a head is never applied to features
from another model, layer, pooling or truncation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from coala_core.errors import DimensionMismatchError, MissingInputError, ProvenanceMismatchError, StoreError
from coala_core.phase2.head import RewardHead
from storage.atomic import atomic_dir, current_umask

HEAD_FORMAT = 1
CODE_VERSION = "coala-head/1"
WEIGHTS = "head.safetensors"
META = "head.json"
#: provenance keys that name the dataset, not the feature extractor: they may differ between train and eval
DATASET_KEYS = frozenset({"dataset_digest", "stage", "n_rows", "created_at", "split"})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_head(
    path: str | Path,
    head: RewardHead,
    *,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``head`` to the directory ``path`` (replaced as a whole if it exists)."""
    tensors = {
        "theta1": head.theta1, "theta2": head.theta2, "gates": head.gates, "mean": head.mean, "scale": head.scale,
    }
    if head.pattern is not None:
        tensors["pattern"] = np.asarray(head.pattern, dtype=np.int64)
    for name in ("v", "w"):
        if getattr(head, name) is not None:
            tensors[name] = getattr(head, name)
    tensors = {k: np.ascontiguousarray(v, dtype=np.int64 if k == "pattern" else np.float64) for k, v in tensors.items()}
    meta = {
        "format": HEAD_FORMAT,
        "code_version": CODE_VERSION,
        "dim": head.dim,
        "width": head.width,
        "n_gates": int(head.gates.shape[1]),
        "beta": head.beta,
        "program": head.program,
        "bias": head.bias,
        "linear": head.linear,
        "config": dict(config or {}),
        "feature_provenance": dict(provenance or {}),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }
    with atomic_dir(path) as tmp:
        # no safetensors metadata: its keys were serialised in a per-process order, so identical heads gave
        # different bytes (the format and code version are in head.json)
        save_file(tensors, str(tmp / WEIGHTS))
        os.chmod(tmp / WEIGHTS, 0o666 & ~current_umask())  # safetensors writes 0600; follow the umask like head.json
        (tmp / META).write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=True), encoding="utf-8")
    return Path(path)


#: the head.json fields that, with the tensors, make a head's identity (metrics and histories do not)
IDENTITY_KEYS = ("format", "dim", "width", "n_gates", "beta", "program", "bias", "linear", "config")


def canonical_digest(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """sha256 over a canonical encoding of a head: for each tensor in name order its name, dtype, shape and
    little-endian C-order bytes, then the canonical JSON (sorted keys, no spaces) of ``meta``'s
    :data:`IDENTITY_KEYS`. Independent of file layout, dict order and process."""
    h = hashlib.sha256(b"coala-head-digest/1\n")
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(json.dumps([name, arr.dtype.str, list(arr.shape)], separators=(",", ":")).encode())
        h.update(arr.tobytes(order="C"))
    ident = {k: meta.get(k) for k in IDENTITY_KEYS}
    h.update(json.dumps(_jsonable(ident), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
    return h.hexdigest()


def head_digest(path: str | Path) -> str:
    """The content digest of the head directory ``path`` (:func:`canonical_digest` of its tensors and
    head.json); equal for equal heads whichever process wrote them."""
    meta = read_head_meta(path)
    weights = Path(path) / WEIGHTS
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise StoreError(f"{weights}: cannot read safetensors: {err}") from None
    return canonical_digest(tensors, meta)


def read_head_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise MissingInputError(f"head not found: {meta_path} does not exist")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StoreError(f"{meta_path}: not valid JSON: {err}") from None
    if meta.get("format") != HEAD_FORMAT:
        raise StoreError(f"{meta_path}: head format {meta.get('format')!r}, expected {HEAD_FORMAT}")
    return meta


def check_provenance(head_provenance: Mapping[str, Any], features_provenance: Mapping[str, Any], where: str) -> None:
    """Raise ProvenanceMismatchError when the features were made differently from the head's training features:
    only what defines the features is compared (model, revision, layers, pooling, max tokens, dtype, template,
    likelihood columns; :mod:`coala_core.feature_identity`), never the dataset or the storage layout."""
    from coala_core.feature_identity import identity_mismatches

    diffs = identity_mismatches(head_provenance, features_provenance)
    if diffs:
        raise ProvenanceMismatchError(f"{where}: features do not match the head: " + "; ".join(diffs))


def load_head(
    path: str | Path,
    *,
    expected_dim: int | None = None,
    expected_provenance: Mapping[str, Any] | None = None,
) -> RewardHead:
    """Read and validate a head directory; ``meta`` of the returned head is the parsed ``head.json``."""
    meta = read_head_meta(path)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise MissingInputError(f"head weights not found: {weights}")
    try:
        t = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise StoreError(f"{weights}: cannot read safetensors: {err}") from None
    missing = sorted({"theta1", "theta2", "gates", "mean", "scale"} - set(t))
    if missing:
        raise StoreError(f"{weights}: missing tensors {missing}")
    head = RewardHead(
        theta1=t["theta1"], theta2=t["theta2"], mean=t["mean"], scale=t["scale"], gates=t["gates"],
        beta=float(meta.get("beta", 1.0)), program=str(meta.get("program", "relu")),
        bias=bool(meta.get("bias", False)), pattern=t.get("pattern"), v=t.get("v"), w=t.get("w"), meta=meta,
        linear=bool(meta.get("linear", False)),
    )
    recorded = {"dim": head.dim, "width": head.width, "n_gates": int(head.gates.shape[1])}
    for key, actual in recorded.items():
        if meta.get(key) != actual:
            raise DimensionMismatchError(f"{path}: head.json says {key} = {meta.get(key)}, tensors give {actual}")
    if expected_dim is not None and expected_dim != head.dim:
        raise DimensionMismatchError(
            f"{path}: head reads features of width {head.dim}, the features given have width {expected_dim}"
        )
    if expected_provenance is not None:
        check_provenance(meta.get("feature_provenance", {}), expected_provenance, str(path))
    return head


def write_scores(path: str | Path, columns: Mapping[str, Any]) -> Path:
    """Write per-pair rewards (``pair_id``, ``reward_chosen``, ``reward_rejected``, ``margin``, ...) to Parquet,
    atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.atomic import atomic_path

    table = pa.table({k: pa.array(np.asarray(v).tolist()) for k, v in columns.items()})
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return Path(path)
