"""LM preference-tuning baselines (DPO, ORPO through TRL) scored by their implicit rewards, with compute
counted the same way as COALA's: analytic FLOPs, wall time, peak memory.

Public API:

- :class:`PreferenceTuneConfig` - method (dpo|orpo), beta, learning rate, batch, epochs, max_tokens.
- :func:`format_pairs` - canonical pair rows -> :class:`PairText` (the feature extractor's formatting).
- :func:`load_lm` / :func:`trainable_copy` - the same starting weights the feature stage loads.
- :func:`tune` -> :class:`TuneResult` - one TRL run; :func:`score_pairs` -> :class:`ScoredPairs`.
- FLOP model: :func:`forward_flops`, :func:`backward_flops`, :func:`train_step_flops`, :func:`matmul_params`,
  and :func:`measure` (wall time + sampled peak RSS of a block).
"""

from coala_core.llm_baselines.compute import (
    StageCompute,
    backward_flops,
    forward_flops,
    matmul_params,
    matmul_throughput,
    measure,
    train_step_flops,
)
from coala_core.llm_baselines.config import PreferenceTuneConfig
from coala_core.llm_baselines.evaluate import ScoredPairs, score_pairs
from coala_core.llm_baselines.formatting import PairText, as_trl_columns, format_pairs
from coala_core.llm_baselines.model import LoadedLM, load_lm, trainable_copy
from coala_core.llm_baselines.scoring import (
    dpo_metrics,
    dpo_rewards,
    log_odds,
    orpo_metrics,
    sequence_logps,
    tokenize_pairs,
)
from coala_core.llm_baselines.train import TokenCounter, TuneResult, tune

__all__ = [
    "LoadedLM", "PairText", "PreferenceTuneConfig", "ScoredPairs", "StageCompute", "TokenCounter", "TuneResult",
    "as_trl_columns", "backward_flops", "dpo_metrics", "dpo_rewards", "format_pairs", "forward_flops", "load_lm",
    "log_odds", "matmul_params", "matmul_throughput", "measure", "orpo_metrics", "score_pairs", "sequence_logps",
    "tokenize_pairs", "train_step_flops", "trainable_copy", "tune",
]
