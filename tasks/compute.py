"""Compute accounting for the stage tasks: the project's one FLOP convention and process meter live in
:mod:`coala_core.engine.compute` (documented there); this module re-exports them for the tasks.

``with measure() as meter: ...; meter.flops = ...; meter.metrics()`` gives ``wall_s``, ``peak_rss_mb``,
``flops`` and ``tflops``.
"""

from coala_core.engine.compute import (
    StageCompute,
    admm_flops,
    forward_flops,
    matmul_params,
    measure,
    phase2_flops,
    scoring_flops,
)

StageMeter = StageCompute  # the name the tasks used before the meters were merged

__all__ = ["StageCompute", "StageMeter", "admm_flops", "forward_flops", "matmul_params", "measure", "phase2_flops",
           "scoring_flops"]
