"""Honest compute accounting per stage: analytic FLOPs, wall time and peak resident memory.

FLOP counts are analytic (method.md section 8): a transformer forward costs 2 x parameters x tokens;
the Phase I ADMM iteration with an exact, factorised u-step reads X once for ``G u`` and once for
``G'(s - nu)`` (each 2 x n x d x 2P multiply-adds) and back-solves a dP x dP factor; Newton on theta2
builds an m x m Hessian from n pairs. These are estimates of arithmetic, not measurements of hardware.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil


def forward_flops(n_params: int, n_tokens: int) -> float:
    """Forward pass of a decoder LM: 2 x parameters x tokens (embeddings included, attention ignored)."""
    return 2.0 * float(n_params) * float(n_tokens)


def admm_flops(n: int, d: int, n_patterns: int, iterations: int, *, factorised: bool = True) -> float:
    """Phase I ADMM on X (n x d), P patterns, ``iterations`` iterations.

    Set-up: X'X (2 n d^2) and, when ``factorised``, a Cholesky factor of the dP x dP block ((dP)^3 / 3).
    Per iteration: G u and G'(s - nu) over 2P neuron blocks (2 x 2 x n x d x 2P), the block solve
    (2 x (dP)^2 forward and back substitution, twice) and O(n P) elementwise work.
    """
    dp = float(d) * n_patterns
    setup = 2.0 * n * d * d + (dp**3 / 3.0 if factorised else 0.0)
    per_iter = 8.0 * n * d * n_patterns + 4.0 * dp * dp + 10.0 * n * n_patterns
    return setup + per_iter * iterations


def phase2_flops(n_pairs: int, d: int, m: int, iterations: int) -> float:
    """Phase II: hidden features of 2 n pairs (2 x 2n x d x m) then Newton steps on theta2.

    Per Newton iteration: gradient (4 n m), Hessian (2 n m^2) and an m x m solve (m^3 / 3).
    """
    hidden = 2.0 * (2 * n_pairs) * d * m
    per_iter = 4.0 * n_pairs * m + 2.0 * n_pairs * m * m + m**3 / 3.0
    return hidden + per_iter * iterations


def scoring_flops(n_pairs: int, d: int, m: int) -> float:
    """Scoring both responses of n pairs with a head of width m: 2 x 2n x (d m + m)."""
    return 2.0 * (2 * n_pairs) * (d * m + m)


@dataclass
class StageMeter:
    """Wall time and peak RSS of the current process while a stage runs (sampled every ``interval`` s)."""

    interval: float = 0.05
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    flops: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def metrics(self) -> dict[str, float]:
        out = {"wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb}
        if self.flops:
            out["flops"] = self.flops
            out["tflops"] = self.flops / 1e12
        return out


@contextmanager
def measure(interval: float = 0.05) -> Iterator[StageMeter]:
    """Measure a block: ``with measure() as m: ...; m.metrics()`` (set ``m.flops`` inside the block)."""
    meter = StageMeter(interval=interval)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]

    def sample() -> None:
        while not meter._stop.wait(meter.interval):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=sample, name="coala-meter", daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        yield meter
    finally:
        meter._stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        meter.wall_s = time.perf_counter() - start
        meter.peak_rss_mb = peak[0] / 2**20
