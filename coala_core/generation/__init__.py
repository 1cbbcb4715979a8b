"""Using the head (method.md section 7): score texts, rerank sampled candidates, guide decoding.

Public vocabulary: :class:`GenerateConfig`, :class:`HeadScorer` (rewards of (prompt, response) texts through
the training feature path), :func:`extraction_config_for` (the extraction config a head's provenance names),
:class:`TextGenerator` (plain, rerank, guided) -> :class:`Generation` and :class:`GenerationStats`.
"""

from coala_core.generation.config import GenerateConfig
from coala_core.generation.generate import Candidate, Generation, TextGenerator
from coala_core.generation.guidance import GenerationStats, HeadGuidance
from coala_core.generation.scorer import HeadScorer, backbone_spec, extraction_config_for, to_messages

__all__ = [
    "Candidate",
    "GenerateConfig",
    "Generation",
    "GenerationStats",
    "HeadGuidance",
    "HeadScorer",
    "TextGenerator",
    "backbone_spec",
    "extraction_config_for",
    "to_messages",
]
