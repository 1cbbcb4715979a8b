"""What must match between a head and the features it scores (and nothing else).

A store's provenance records how its numbers were made plus facts about the data and the storage. Only the
fields that define the features enter the identity: the model (id, revision), the hidden size, the layers,
their normalisation, the pooling, ``max_tokens``, the compute dtype, the chat template switch, the truncation
rule, the likelihood columns, the attention vector of attention pooling and the extraction code version.
The dataset (digest, split, row count) and the storage layout (``chunk_rows``, ``store_dtype``, URIs) do not:
a head trained on a store with 64-row chunks scores a store with 4,096-row chunks.

Pure (no torch, no I/O), so ``storage`` and the CLI can use it without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: provenance keys that define the features; the identity check compares exactly these
IDENTITY_KEYS: tuple[str, ...] = (
    "code_version",
    "model_id",
    "model_revision",
    "hidden_size",
    "layers",
    "layer_norm",
    "pooling",
    "max_tokens",
    "compute_dtype",
    "use_chat_template",
    "truncation",
    "logprob_features",
    "attention_seed",
    "attention_vector_sha256",
)

# Defaults of keys that older provenance (coala-features/1) did not record.
_DEFAULTS: dict[str, Any] = {"layer_norm": "none", "logprob_features": False}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def feature_identity(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields of a provenance dict (``layer: k`` of older stores read as ``layers: [k]``)."""
    prov = dict(provenance)
    if "layers" not in prov and "layer" in prov:
        prov["layers"] = [prov["layer"]]
    if isinstance(prov.get("layers"), int):
        prov["layers"] = [prov["layers"]]
    out: dict[str, Any] = {}
    for key in IDENTITY_KEYS:
        if key in prov:
            out[key] = _plain(prov[key])
        elif key in _DEFAULTS:
            out[key] = _DEFAULTS[key]
    return out


def identity_mismatches(head_provenance: Mapping[str, Any], features_provenance: Mapping[str, Any]) -> list[str]:
    """One line per identity field that differs: ``"pooling: head trained on 'mean', features have 'last'"``.

    A field the head's provenance does not record is not compared (heads from tests or other tools may record
    only some fields); a field the head records and the features lack is a mismatch."""
    head, feats = feature_identity(head_provenance), feature_identity(features_provenance)
    return [
        f"{k}: head trained on {head[k]!r}, features have {feats.get(k)!r}"
        for k in IDENTITY_KEYS
        if k in head and feats.get(k) != head[k]
    ]
