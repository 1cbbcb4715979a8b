"""MLflow pyfunc model (logged as code, never pickled): scores (prompt, response) pairs with a COALA head.

The model is a backbone reference (the extraction config: model id or path, pooling, layer, max tokens)
plus the head directory (safetensors + JSON) as an artifact. ``predict`` takes a DataFrame with columns
``prompt`` (text, or a list of ``{"role", "content"}`` messages) and ``response`` and returns one reward
per row, computed exactly as in training: pooled frozen-LM features of prompt+response through the head.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np


class CoalaScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from coala_core.features import ExtractionConfig, FeatureExtractor, load_model
        from storage.heads import load_head

        cfg = ExtractionConfig.build(context.model_config["extraction"])
        self.extractor = FeatureExtractor(load_model(cfg), cfg)
        self.head = load_head(context.artifacts["head"], expected_dim=self.extractor.loaded.hidden_size)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        from coala_core.errors import SchemaError
        from coala_core.features.batching import BackoffRunner

        missing = {"prompt", "response"} - set(model_input.columns)
        if missing:
            raise SchemaError(f"scorer input: missing columns {sorted(missing)} (expected prompt, response)")
        prompts = [p if isinstance(p, list) else ([{"role": "user", "content": str(p)}] if p else [])
                   for p in model_input["prompt"].tolist()]
        responses = [str(r) for r in model_input["response"].tolist()]
        encoded = self.extractor.encoder.encode(prompts, responses)
        runner = BackoffRunner(self.extractor.forward, self.extractor.config.batch_size)
        features = self.extractor.run([e.ids for e in encoded], runner)
        return np.asarray(self.head.score(features), dtype=np.float64)


mlflow.models.set_model(CoalaScorer())
