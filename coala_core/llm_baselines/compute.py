"""Compute accounting of the DPO/ORPO baselines: the project's one FLOP convention and process meter,
:mod:`coala_core.engine.compute` (re-exported here so the baselines count exactly as COALA's stages do)."""

from coala_core.engine.compute import (
    StageCompute,
    backward_flops,
    forward_flops,
    matmul_params,
    matmul_throughput,
    measure,
    train_step_flops,
)

__all__ = ["StageCompute", "backward_flops", "forward_flops", "matmul_params", "matmul_throughput", "measure",
           "train_step_flops"]
