"""The causal LM the baselines fine-tune: loaded through the feature stage's loader, so COALA and the
baselines start from the very same weights.

:func:`trainable_copy` gives each baseline its own unfrozen copy of the starting weights. When
the feature stage cannot convert the bundled GGUF file to its safetensors cache (``ModelLoadError``), the
GGUF file is de-quantised in memory with transformers ``gguf_file=`` instead; ``source`` says which path ran.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from coala_core.errors import ModelLoadError
from coala_core.features.config import ExtractionConfig
from coala_core.features.model import DEFAULT_MODEL_ID, LoadedModel, default_gguf_path, file_sha256, load_model


@dataclass(frozen=True)
class LoadedLM:
    """A loaded model for both uses: ``frozen`` feeds feature extraction; ``model``/``tokenizer`` train."""

    frozen: LoadedModel
    source: str


def _from_gguf_in_memory(config: ExtractionConfig) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf_path() if config.model == "default" else None
    if gguf is None:
        raise ModelLoadError(f"in-memory GGUF fallback only covers the default model, not {config.model!r}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # weights are de-quantised fp32 tensors; let the model be copied and trained
    model.is_quantized = False
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, backbone=model.get_decoder(), tokenizer=tok, model_id=DEFAULT_MODEL_ID,
                       revision="gguf-q4_1:" + file_sha256(gguf)[:16], device=torch.device("cpu"),
                       dtype=torch.float32, hidden_size=int(model.config.hidden_size),
                       num_layers=int(model.config.num_hidden_layers))


def load_lm(config: ExtractionConfig) -> LoadedLM:
    """Load ``config.model`` with the feature stage's loader (fallback: in-memory GGUF, see module doc)."""
    try:
        return LoadedLM(load_model(config), "coala_core.features.load_model")
    except ModelLoadError as err:
        if config.model != "default" or "convert GGUF" not in str(err):
            raise
        return LoadedLM(_from_gguf_in_memory(config), f"in-memory GGUF (feature loader failed: {str(err)[:120]})")


def trainable_copy(loaded: LoadedLM) -> Any:
    """A deep copy of the starting weights with gradients on, for one fine-tuning run."""
    model = copy.deepcopy(loaded.frozen.model)
    model.requires_grad_(True)
    return model
