"""Counting compute honestly: analytic FLOPs per stage, measured wall time and peak resident memory.

FLOP model (method.md section 8): a forward pass costs 2 * N * T FLOPs for N parameters that take part in a
matrix product and T tokens; a backward pass twice that. Attention-score FLOPs (about 4 * layers * T * ctx *
d_model, ~1-2% at 128 tokens) are left out for every method alike. N depends on what runs:

- feature extraction runs the decoder only (no LM head): N = parameters minus the input embedding table
  (a lookup, not a product);
- log-probabilities run the LM head too: N = all parameters, counting tied embedding/LM-head weights once
  (the product with the head is real work, the embedding lookup is not).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def forward_flops(n_params: int, tokens: int) -> float:
    """2 * N * T: one forward pass of N matmul parameters over T tokens."""
    return 2.0 * float(n_params) * float(tokens)


def backward_flops(n_params: int, tokens: int) -> float:
    """Twice the forward: 4 * N * T."""
    return 2.0 * forward_flops(n_params, tokens)


def train_step_flops(n_params: int, tokens: int, *, reference: bool) -> float:
    """One optimiser pass over ``tokens``: policy forward + backward (6NT), plus a reference forward (2NT)
    when the method has a frozen reference model (DPO)."""
    total = forward_flops(n_params, tokens) + backward_flops(n_params, tokens)
    if reference:
        total += forward_flops(n_params, tokens)
    return total


def matmul_params(model: Any, *, lm_head: bool) -> int:
    """N for the FLOP model: unique parameters, minus the input embedding when the LM head is not run.

    With tied weights (SmolLM2) the shared matrix is counted once when ``lm_head`` is true (the head
    product) and dropped otherwise (only the lookup runs).
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    if lm_head:
        return int(total if tied else total - emb)
    head = 0 if (tied or out is None) else out.weight.numel()
    return int(total - emb - head)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class StageCompute:
    """Compute of one stage: wall seconds, analytic FLOPs, tokens, peak RSS sampled during the stage."""

    name: str
    seconds: float = 0.0
    flops: float = 0.0
    tokens: int = 0
    peak_rss_bytes: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tflops(self) -> float:
        return self.flops / 1e12

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "tflops": self.tflops, "tokens": self.tokens,
                "peak_rss_gib": self.peak_rss_bytes / 2**30, "load_average": list(self.load_average), **self.extra}


@contextmanager
def measure(name: str, interval: float = 0.1) -> Iterator[StageCompute]:
    """Time a block and sample this process's RSS every ``interval`` s; the caller fills ``flops``/``tokens``."""
    stage = StageCompute(name)
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    load0 = os.getloadavg()[0]
    thread.start()
    t0 = time.perf_counter()
    try:
        yield stage
    finally:
        stage.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        stage.peak_rss_bytes = max(peak[0], _rss_bytes())
        stage.load_average = (load0, os.getloadavg()[0])


def matmul_throughput(n: int = 1024, repeats: int = 3) -> float:
    """Measured float64 FLOP/s of this machine on an n x n matrix product (best of ``repeats``).

    Used to bound the FLOPs of the small convex solvers from their wall time (seconds * throughput), since
    their operation count depends on iteration counts the solvers choose.
    """
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best
