"""Pooling a batch of hidden states to one vector per text, with padding always masked.

H has shape (B, T, d) and mask M has shape (B, T) with 1 on real tokens and 0 on padding. In float32:

- ``mean``: f = sum_t M_t H_t / sum_t M_t
- ``last``: f = H_{t*} with t* the last position where M_t = 1
- ``attention``: s_t = H_t . a / sqrt(d), s_t = -inf where M_t = 0, f = sum_t softmax(s)_t H_t, with a fixed
  random vector a ~ N(0, I_d / d) drawn from ``attention_seed`` (the paper's never-trained attention vector,
  but over real tokens only). The vector is saved with the store so the same a scores new text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

PoolFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def attention_vector(dim: int, seed: int) -> np.ndarray:
    """The seeded attention vector a ~ N(0, I_d / d), float32, shape (d,)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)


def vector_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def _mean(H: torch.Tensor, M: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    m = M.to(H.dtype).unsqueeze(-1)
    return (H * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _last(H: torch.Tensor, M: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    positions = torch.arange(M.shape[1], device=M.device).expand_as(M)
    t_star = torch.where(M.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values.clamp_min(0)
    return H[torch.arange(H.shape[0], device=H.device), t_star]


def _attention(H: torch.Tensor, M: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    if a is None:
        raise ValueError("attention pooling needs the attention vector a")
    s = (H @ a.to(H)) / float(H.shape[-1]) ** 0.5
    s = s.masked_fill(~M.bool(), float("-inf"))
    w = torch.softmax(s, dim=1).nan_to_num(0.0)  # all-padding rows (never produced) would give NaN
    return (w.unsqueeze(-1) * H).sum(dim=1)


POOLERS: dict[str, PoolFn] = {"mean": _mean, "last": _last, "attention": _attention}


def pool(H: torch.Tensor, M: torch.Tensor, method: str, a: torch.Tensor | None = None) -> torch.Tensor:
    """Pool hidden states H (B, T, d) under mask M (B, T) to (B, d) float32; see the module docstring."""
    return POOLERS[method](H.float(), M, a)
