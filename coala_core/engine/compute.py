"""Counting compute honestly, one convention for every stage and method: analytic FLOPs, measured wall time
and peak resident memory (method.md section 8).

FLOP convention (the only one in the project):

- a forward pass costs ``2 * N * T`` FLOPs for the N parameters that take part in a matrix product and T
  tokens; a backward pass twice that. Attention-score FLOPs (about 4 x layers x T x context x d_model, 1-2%
  at 128 tokens) are left out for every method alike;
- an embedding lookup is not a product: feature extraction (decoder only, no LM head) counts
  N = parameters minus the input embedding table; a method that runs the LM head (log-probabilities for DPO,
  ORPO, generation) counts the head's matrix once, also when it is tied to the input embedding
  (:func:`matmul_params`);
- the convex solvers are counted from their operation counts (:func:`admm_flops`, :func:`phase2_flops`,
  :func:`scoring_flops`): estimates of arithmetic, not measurements of hardware.

Process meter: :func:`measure` times a block and samples this process's resident set size (RSS) every
``interval`` seconds; the caller adds FLOPs and tokens to the returned :class:`StageCompute`.
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

# --------------------------------------------------------------------------------------------- language models


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
    """N for the FLOP model: unique parameters, minus the input embedding (a lookup) and, when the LM head is
    not run, minus an untied output matrix. With tied weights the shared matrix counts once when ``lm_head``."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb_module = model.get_input_embeddings()
    emb = emb_module.weight.numel() if emb_module is not None else 0
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = out is not None and emb_module is not None and out.weight is emb_module.weight
    if lm_head:
        return int(total if tied else total - emb)
    head = 0 if (tied or out is None) else out.weight.numel()
    return int(total - emb - head)


# --------------------------------------------------------------------------------------------- convex solvers


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


def matmul_throughput(n: int = 1024, repeats: int = 3) -> float:
    """Measured float64 FLOP/s of this machine on an n x n matrix product (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


# --------------------------------------------------------------------------------------------- the process meter


def rss_bytes() -> int:
    """Resident set size of this process now (``/proc/self/status``; peak RSS from getrusage elsewhere)."""
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

    name: str = "stage"
    seconds: float = 0.0
    flops: float = 0.0
    tokens: int = 0
    peak_rss_bytes: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tflops(self) -> float:
        return self.flops / 1e12

    @property
    def wall_s(self) -> float:
        return self.seconds

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20

    def metrics(self) -> dict[str, float]:
        """Tracking metrics: ``wall_s``, ``peak_rss_mb`` and, when counted, ``flops`` and ``tflops``."""
        out = {"wall_s": self.seconds, "peak_rss_mb": self.peak_rss_mb}
        if self.flops:
            out["flops"] = self.flops
            out["tflops"] = self.tflops
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "tflops": self.tflops, "tokens": self.tokens,
                "peak_rss_gib": self.peak_rss_bytes / 2**30, "load_average": list(self.load_average), **self.extra}


@contextmanager
def measure(name: str = "stage", interval: float = 0.05) -> Iterator[StageCompute]:
    """Time a block and sample this process's RSS every ``interval`` s; the caller fills ``flops``/``tokens``."""
    stage = StageCompute(name)
    peak = [rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], rss_bytes())

    thread = threading.Thread(target=sample, name="coala-meter", daemon=True)
    load0 = os.getloadavg()[0]
    thread.start()
    t0 = time.perf_counter()
    try:
        yield stage
    finally:
        stage.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        stage.peak_rss_bytes = max(peak[0], rss_bytes())
        stage.load_average = (load0, os.getloadavg()[0])
