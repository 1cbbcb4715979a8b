"""The generation stage config: decoding mode, sampling settings and the head's guidance (method.md section 7).

Defaults are the paper's guided-decoding values (App. H.3 and the authors' code): every ``guidance_every`` = 5
tokens the ``guidance_top_k`` = 15 most likely next tokens are scored by the head, and ``guidance_scale`` = 2.0
times the min-max normalised score is added to their logits; temperature 0.7, top-p 0.9, repetition penalty
1.1, 256 new tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coala_core.config import StageConfig

Mode = Literal["plain", "rerank", "guided"]


class GenerateConfig(StageConfig):
    """How ``coala generate`` decodes: ``plain`` sampling, best-of-``n`` ``rerank`` by the head, or ``guided``."""

    mode: Mode = Field("guided", description="plain sampling, best-of-n reranking by the head, or head-guided decoding")
    n: int = Field(4, ge=1, description="rerank: candidates sampled per prompt")
    guidance_scale: float = Field(2.0, ge=0, description="guided: weight of the normalised head score added to the logits")
    guidance_every: int = Field(5, ge=1, description="guided: score candidates every N generated tokens")
    guidance_top_k: int = Field(15, ge=1, description="guided: next-token candidates scored at each guided step")
    temperature: float = Field(0.7, ge=0, description="softmax temperature; 0 means greedy decoding")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling mass")
    repetition_penalty: float = Field(1.1, gt=0, description="CTRL-style penalty on tokens already in the text (1 = off)")
    max_new_tokens: int = Field(256, ge=1)
    max_prompt_tokens: int = Field(1024, ge=8, description="longer prompts are cut from the left")
    batch_size: int = Field(8, ge=1, description="sequences decoded together (prompts x candidates)")
    seed: int = 0
