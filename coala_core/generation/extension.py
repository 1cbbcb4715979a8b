"""Head scores of one-token extensions of the decoding rows, from a KV cache instead of re-encoding text.

The head scores the features of the text the trainer would build for (prompt, reply so far + candidate): the
*scoring prefix* (the formatted prompt up to the assistant turn, a pinned BOS, cut from the left to fit
``max_tokens``), the reply tokens, then the template's closing *suffix* (e.g. ``<|im_end|>\\n``), pooled as in
training (:mod:`coala_core.features.forward`). Here that text is never re-tokenised: it is the context already
in a cache (prefix + reply so far) plus a short *block* per candidate, ``[candidate] + suffix``. A candidate
that is a special token (EOS, ...) is dropped by decoding as the text is, so its block is the suffix alone: the
reply ending now.

All k blocks of a row run in one forward on top of the row's cache, side by side in one sequence with a 4D
attention mask (each block sees the context and its own earlier tokens, not the other blocks; position ids
continue from the context), and the k blocks are cropped from the cache afterwards. Pooled features per
candidate, from running statistics of the context (per layer) and the block's hidden states:

- ``mean``: (sum of context states + sum of block states) / (context length + block length)
- ``last``: the block's last state (the suffix's last token); ``response_last``: the candidate's state
- ``response_mean``: (sum of the reply's states + the candidate's state) / (reply length + 1)
- ``attention``: the softmax-weighted sum, merged from the context's (max, normaliser, weighted sum) and the
  block's by log-sum-exp.

Several layers are RMS-normalised block by block as in the store. The features equal those of a fresh encode of
the same token ids up to floating-point rounding (tested to 1e-4 against :meth:`HeadScorer.score` on the
decoded texts, which re-tokenises them: equal when the reply's ids round-trip through decode and tokenise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from coala_core.features.forward import rms_normalize
from coala_core.generation.decode import run_decoder


@dataclass
class ContextStats:
    """Running statistics of B scoring contexts for each layer (float32): all real positions (``sum_all``,
    ``n_all``, ``last_all``), the reply's positions (``sum_resp``, ``n_resp``, ``last_resp``), and for
    attention pooling the running (max score, normaliser, weighted sum)."""

    layers: list[int]
    sum_all: dict[int, torch.Tensor] = field(default_factory=dict)
    sum_resp: dict[int, torch.Tensor] = field(default_factory=dict)
    last_all: dict[int, torch.Tensor] = field(default_factory=dict)
    last_resp: dict[int, torch.Tensor] = field(default_factory=dict)
    att: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    n_all: torch.Tensor | None = None
    n_resp: torch.Tensor | None = None
    a: torch.Tensor | None = None

    def add(self, H: dict[int, torch.Tensor], M: torch.Tensor, resp: torch.Tensor) -> None:
        """Fold in hidden states H[k] (B, t, d) of positions with mask M (B, t); ``resp`` (B, t) bool marks the
        reply's positions among them."""
        m = M.float()
        r = (resp & M.bool()).float()
        if self.n_all is None:
            self.n_all, self.n_resp = torch.zeros(M.shape[0], device=M.device), torch.zeros(M.shape[0], device=M.device)
        assert self.n_resp is not None
        self.n_all, self.n_resp = self.n_all + m.sum(1), self.n_resp + r.sum(1)
        for k in self.layers:
            h = H[k].float()
            B, t, d = h.shape
            zero = torch.zeros(B, d, device=h.device)
            self.sum_all[k] = self.sum_all.get(k, zero) + (h * m.unsqueeze(-1)).sum(1)
            self.sum_resp[k] = self.sum_resp.get(k, zero) + (h * r.unsqueeze(-1)).sum(1)
            self.last_all[k] = _last_where(h, M.bool(), self.last_all.get(k, zero))
            self.last_resp[k] = _last_where(h, r.bool(), self.last_resp.get(k, zero))
            if self.a is not None:
                s = (h @ self.a.to(h)) / float(d) ** 0.5
                s = s.masked_fill(~M.bool(), float("-inf"))
                old = self.att.get(k, (torch.full((B,), float("-inf"), device=h.device), torch.zeros(B, device=h.device), zero))
                self.att[k] = _merge_att(old, s, h)


def _last_where(h: torch.Tensor, keep: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Per row, the state at the last position where ``keep`` (B, t) holds, else ``prev``."""
    pos = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    t = torch.where(keep, pos, torch.full_like(pos, -1)).max(1).values
    got = h[torch.arange(h.shape[0], device=h.device), t.clamp_min(0)]
    return torch.where((t >= 0).unsqueeze(-1), got, prev)


def _merge_att(old: tuple[torch.Tensor, torch.Tensor, torch.Tensor], s: torch.Tensor, h: torch.Tensor):
    """Merge (max, z, weighted sum) of rows with new scores s (..., t) (-inf: absent) over states h (..., t, d)."""
    mx, z, ws = old
    top = torch.maximum(mx, s.max(-1).values)
    a = torch.exp(mx - top).nan_to_num(0.0)
    w = torch.exp(s - top.unsqueeze(-1)).nan_to_num(0.0)
    return top, a * z + w.sum(-1), a.unsqueeze(-1) * ws + (w.unsqueeze(-1) * h).sum(-2)


@dataclass(frozen=True)
class Blocks:
    """k token blocks per context row: ``ids`` (R, k, Lb) padded, ``lens`` (R, k) real lengths (0: unused),
    ``real`` (R, k): the block starts with a real candidate token (not only the suffix)."""

    ids: torch.Tensor
    lens: torch.Tensor
    real: torch.Tensor

    @classmethod
    def build(cls, rows: Sequence[Sequence[tuple[list[int], bool] | None]], pad_id: int, device) -> Blocks:
        R, k = len(rows), max(len(r) for r in rows)
        Lb = max([len(b[0]) for r in rows for b in r if b is not None] + [1])
        ids = torch.full((R, k, Lb), pad_id, dtype=torch.long)
        lens = torch.zeros((R, k), dtype=torch.long)
        real = torch.zeros((R, k), dtype=torch.bool)
        for i, r in enumerate(rows):
            for j, b in enumerate(r):
                if b is not None:
                    toks, is_real = b
                    ids[i, j, : len(toks)] = torch.tensor(toks, dtype=torch.long)
                    lens[i, j], real[i, j] = len(toks), is_real
        return cls(ids.to(device), lens.to(device), real.to(device))


def run_blocks(decoder, num_layers: int, cache, mask: torch.Tensor, next_pos: torch.Tensor, blocks: Blocks,
               layers: Sequence[int], dtype: torch.dtype) -> dict[int, torch.Tensor]:
    """Hidden states (R, k, Lb, d) per layer of every block run on ``cache`` (context mask ``mask`` (R, T),
    next position ``next_pos`` (R,)) in one forward; the cache is cropped back to its T positions."""
    R, k, Lb = blocks.ids.shape
    Q, dev = k * Lb, mask.device
    blk = torch.arange(Q, device=dev) // Lb
    off = torch.arange(Q, device=dev) % Lb
    valid = (off[None, :] < blocks.lens.repeat_interleave(Lb, dim=1))  # (R, Q)
    own = (blk[:, None] == blk[None, :]) & (off[None, :] <= off[:, None])  # (Q, Q): same block, not later
    new = own[None] & valid[:, None, :]
    new = new | torch.eye(Q, dtype=torch.bool, device=dev)[None]  # padding queries see themselves (no empty rows)
    ctx = mask.bool()[:, None, :].expand(R, Q, mask.shape[1])
    allowed = torch.cat([ctx, new], dim=-1)[:, None]
    mask4 = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    pos = next_pos[:, None] + off[None, :]
    try:
        H, _, cache = run_decoder(decoder, num_layers, blocks.ids.reshape(R, Q), mask4, pos, cache, layers)
    finally:
        cache.crop(-Q)
    return {kk: h.float().reshape(R, k, Lb, -1) for kk, h in H.items()}


def pool_blocks(ctx: ContextStats, rows: torch.Tensor, Hb: dict[int, torch.Tensor], blocks: Blocks, pooling: str,
                layers: Sequence[int]) -> np.ndarray:
    """Store rows (R * k, dim) of the extensions: context ``ctx`` rows ``rows`` (R,) + each block, pooled by
    ``pooling``; ``layers`` (normalised, in the store's order) RMS-normalised each when several."""
    lens, real = blocks.lens, blocks.real
    out = []
    for k in layers:
        h = Hb[k]  # (R, kk, Lb, d)
        R, kk, Lb, d = h.shape
        valid = (torch.arange(Lb, device=h.device)[None, None, :] < lens[..., None]).float()
        if pooling == "mean":
            s = ctx.sum_all[k][rows][:, None] + (h * valid[..., None]).sum(2)
            assert ctx.n_all is not None
            f = s / (ctx.n_all[rows][:, None] + lens).clamp_min(1.0)[..., None]
        elif pooling == "last":
            lastb = h.gather(2, (lens - 1).clamp_min(0)[..., None, None].expand(R, kk, 1, d)).squeeze(2)
            f = torch.where((lens > 0)[..., None], lastb, ctx.last_all[k][rows][:, None])
        elif pooling == "response_mean":
            rf = real.float()
            assert ctx.n_resp is not None
            s = ctx.sum_resp[k][rows][:, None] + h[:, :, 0] * rf[..., None]
            f = s / (ctx.n_resp[rows][:, None] + rf).clamp_min(1.0)[..., None]
        elif pooling == "response_last":
            f = torch.where(real[..., None], h[:, :, 0], ctx.last_resp[k][rows][:, None])
        elif pooling == "attention":
            assert ctx.a is not None
            mx, z, ws = (x[rows] for x in ctx.att[k])
            sc = (h @ ctx.a.to(h)) / float(d) ** 0.5
            sc = sc.masked_fill(valid == 0, float("-inf"))
            top, zz, wsum = _merge_att((mx[:, None].expand(R, kk), z[:, None].expand(R, kk), ws[:, None].expand(R, kk, d)), sc, h)
            f = wsum / zz.clamp_min(1e-30)[..., None]
        else:
            raise ValueError(f"unknown pooling {pooling!r}")
        out.append(f.reshape(R * kk, d).cpu().numpy().astype(np.float32))
    if len(out) > 1:
        out = [rms_normalize(b) for b in out]
    return np.concatenate(out, axis=1) if len(out) > 1 else out[0]


def context_pass(decoder, num_layers: int, seqs: Sequence[Sequence[int]], n_resp: Sequence[int], pad_id: int,
                 layers: Sequence[int], a: torch.Tensor | None, device) -> tuple[object, torch.Tensor, torch.Tensor, ContextStats]:
    """Run fresh scoring contexts (left-padded; the last ``n_resp[i]`` tokens of ``seqs[i]`` are the reply):
    (cache, mask, next positions, statistics)."""
    R, T = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    M = torch.zeros((R, T), dtype=torch.long)
    resp = torch.zeros((R, T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(list(s), dtype=torch.long)
        M[i, T - len(s):] = 1
        if n_resp[i]:
            resp[i, T - n_resp[i]:] = True
    ids, M, resp = ids.to(device), M.to(device), resp.to(device)
    pos = (M.cumsum(-1) - 1).clamp_min(0)
    H, _, cache = run_decoder(decoder, num_layers, ids, M, pos, None, layers)
    stats = ContextStats(list(layers), a=a)
    stats.add(H, M, resp)
    return cache, M, M.sum(1), stats
