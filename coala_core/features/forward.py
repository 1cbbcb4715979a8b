"""Forward passes over groups of texts that share a prompt: pooled hidden states and response log-likelihoods.

A group is one prefix and one or more response parts (:class:`~coala_core.features.text.EncodedGroup`). With
``reuse_prefix`` the prefixes of a batch of groups run once (right-padded, with a KV cache), the cache is
repeated for every response of its group, and the response parts run on top of it with their own positions
(``position_ids`` continue after the real prefix length; the padded cache slots are masked). A pair then costs
prefix + 2 responses token positions instead of 2 (prefix + response). The response parts of a batch run in up
to two length-sorted sub-batches (:func:`~coala_core.features.batching.length_splits`), so a long response does
not pad every short one. Without ``reuse_prefix`` every text runs as one sequence. Both give the same numbers
up to floating-point rounding (tested to 1e-5 in float32).

Pooled statistics are kept per segment (prefix, response part) and combined, so every pooling is available
from the shared pass: ``mean`` and ``attention`` merge prefix and response sums (the attention softmax by a
log-sum-exp merge), ``last`` is the last token of the response part, ``response_mean`` / ``response_last`` use
only the response's own tokens (``proper``).

Log-likelihood of a response part: sum over its tokens of log softmax(lm_head(h_{t-1}))[token_t], in float32;
the first token is predicted from the last prefix position. ``loglik_mean`` is that sum over the number of
tokens; ``pmi_mean`` subtracts the same quantity computed after :meth:`TextEncoder.null_prefix` (an empty
conversation), which runs once and is shared by every response of the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coala_core.features.batching import length_splits
from coala_core.features.text import EncodedGroup

_LOGIT_ROWS = 1024  # rows of hidden states pushed through the LM head at once (bounds the (rows, vocab) block)


@dataclass
class GroupOutput:
    """Per-text results of a batch of groups, texts in group order (group 0's texts, then group 1's, ...).

    ``pooled[(pooling, layer)]`` is (n_texts, d) float32; ``loglik`` / ``pmi`` are (n_texts,) float32 or None.
    ``computed_tokens`` counts the token positions run (padding included), ``tokens`` the real ones;
    ``head_tokens`` the positions the output layer ran on (response tokens, twice: with and without the
    prompt), for the likelihood columns only.
    """

    pooled: dict[tuple[str, int], torch.Tensor]
    loglik: torch.Tensor | None = None
    pmi: torch.Tensor | None = None
    tokens: int = 0
    computed_tokens: int = 0
    head_tokens: int = 0


@dataclass
class _Stats:
    """Per-sequence segment statistics of one layer (float32 tensors; each set by the pass that needs it)."""

    sum_all: Any = None
    n_all: Any = None
    sum_proper: Any = None
    n_proper: Any = None
    last_all: Any = None
    last_proper: Any = None
    att_max: Any = None
    att_z: Any = None
    att_s: Any = None


@dataclass
class GroupForward:
    """Runs batches of groups through a frozen model for the given layers (hidden-state indices), poolings
    and, optionally, response log-likelihoods. ``null_prefix`` is needed for the PMI."""

    loaded: Any
    layers: Sequence[int]
    poolings: Sequence[str]
    logprob: bool = False
    attention: torch.Tensor | None = None
    pad_id: int = 0
    null_prefix: list[int] | None = None
    _norm_layers: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        L = int(self.loaded.num_layers)
        self._norm_layers = [k % (L + 1) for k in self.layers]
        if "attention" in self.poolings and self.attention is None:
            raise ValueError("attention pooling needs the attention vector")
        if self.logprob and not self.null_prefix:
            raise ValueError("log-likelihood features need the null prefix (TextEncoder.null_prefix)")

    # ---- model calls -------------------------------------------------------------------------------
    def _pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        M = torch.zeros((B, T), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            M[b, : len(s)] = 1
        return ids.to(self.loaded.device), M.to(self.loaded.device)

    def _call(self, ids: torch.Tensor, mask: torch.Tensor, *, hidden: bool, position_ids: torch.Tensor | None = None,
              cache: Any = None, want_cache: bool = False) -> tuple[dict[int, torch.Tensor], torch.Tensor, Any]:
        """(hidden states of the requested layers, final post-norm hidden state, cache)."""
        L = int(self.loaded.num_layers)
        need_hs = hidden and any(k != L for k in self._norm_layers)
        out = self.loaded.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                                   use_cache=want_cache or cache is not None, output_hidden_states=need_hs)
        final = out.last_hidden_state
        H: dict[int, torch.Tensor] = {}
        if hidden:
            for k in self._norm_layers:
                H[k] = final if k == L else out.hidden_states[k]
        return H, final, getattr(out, "cache", None)

    # ---- statistics --------------------------------------------------------------------------------
    def _stats(self, H: torch.Tensor, M: torch.Tensor, start: torch.Tensor, stop: torch.Tensor) -> _Stats:
        """Segment statistics of hidden states H (N, T, d) under mask M (N, T); the response's own tokens are
        positions [start, stop) of each row."""
        H = H.float()
        N, T, _ = H.shape
        rows = torch.arange(N, device=H.device)
        pos = torch.arange(T, device=H.device).expand(N, T)
        m = M.to(H.dtype)
        st = _Stats()
        want = set(self.poolings)
        if want & {"mean"}:
            st.sum_all = (H * m.unsqueeze(-1)).sum(1)
            st.n_all = m.sum(1)
        if want & {"last"}:
            st.last_all = H[rows, (M.sum(1) - 1).clamp_min(0)]
        if want & {"response_mean"}:
            p = ((pos >= start[:, None]) & (pos < stop[:, None])).to(H.dtype) * m
            st.sum_proper = (H * p.unsqueeze(-1)).sum(1)
            st.n_proper = p.sum(1)
        if want & {"response_last"}:
            st.last_proper = H[rows, (stop - 1).clamp_min(0)]
        if want & {"attention"}:
            assert self.attention is not None
            s = (H @ self.attention.to(H)) / float(H.shape[-1]) ** 0.5
            s = s.masked_fill(~M.bool(), float("-inf"))
            mx = s.max(1).values
            w = torch.exp(s - mx[:, None]).nan_to_num(0.0)
            st.att_max, st.att_z, st.att_s = mx, w.sum(1), (w.unsqueeze(-1) * H).sum(1)
        return st

    def _combine(self, pooling: str, r: _Stats, p: _Stats | None, owner: torch.Tensor) -> torch.Tensor:
        """Pooled vectors of the texts from their response-segment stats ``r`` and their prefix stats ``p``."""
        if pooling == "last":
            return r.last_all
        if pooling == "response_last":
            return r.last_proper
        if pooling == "response_mean":
            return r.sum_proper / r.n_proper.clamp_min(1.0).unsqueeze(-1)
        if pooling == "mean":
            s, n = r.sum_all, r.n_all
            if p is not None:
                s, n = s + p.sum_all[owner], n + p.n_all[owner]
            return s / n.clamp_min(1.0).unsqueeze(-1)
        if pooling == "attention":
            mx, z, s = r.att_max, r.att_z, r.att_s
            if p is not None:
                pm, pz, ps = p.att_max[owner], p.att_z[owner], p.att_s[owner]
                top = torch.maximum(mx, pm)
                a, b = torch.exp(mx - top).nan_to_num(0.0), torch.exp(pm - top).nan_to_num(0.0)
                z, s = a * z + b * pz, a.unsqueeze(-1) * s + b.unsqueeze(-1) * ps
            return s / z.clamp_min(1e-30).unsqueeze(-1)
        raise ValueError(f"unknown pooling {pooling!r}")

    def _logprob_sums(self, final: torch.Tensor, ids: torch.Tensor, first_ctx: torch.Tensor | None,
                      start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Sum of log p(token) over positions [start, start + length) of each row of ``ids``: the token at t is
        predicted from ``final[:, t-1]``, or from ``first_ctx`` (one row per sequence) when t = 0."""
        N = ids.shape[0]
        ctx_rows: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        owners: list[torch.Tensor] = []
        d = final.shape[-1]
        for n in range(N):
            s, ln = int(start[n]), int(length[n])
            t = torch.arange(s, s + ln, device=ids.device)
            ctx = final[n, (t - 1).clamp_min(0)]
            if s == 0:
                if first_ctx is None:
                    raise ValueError("the first response token has no context")
                ctx = torch.cat([first_ctx[n : n + 1], ctx[1:]]) if ln > 0 else ctx
            ctx_rows.append(ctx.reshape(-1, d))
            targets.append(ids[n, t])
            owners.append(torch.full((ln,), n, device=ids.device, dtype=torch.long))
        C, Y, own = torch.cat(ctx_rows), torch.cat(targets), torch.cat(owners)
        head = self.loaded.model.get_output_embeddings()
        out = torch.zeros(N, dtype=torch.float32, device=ids.device)
        for i in range(0, C.shape[0], _LOGIT_ROWS):
            logits = head(C[i : i + _LOGIT_ROWS]).float()
            lp = torch.log_softmax(logits, dim=-1).gather(1, Y[i : i + _LOGIT_ROWS, None]).squeeze(1)
            out.index_add_(0, own[i : i + _LOGIT_ROWS], lp)
        return out

    # ---- the passes --------------------------------------------------------------------------------
    def run(self, groups: Sequence[EncodedGroup], reuse_prefix: bool = True) -> GroupOutput:
        """Pooled features (and log-likelihoods) of every text of ``groups``, in group order."""
        with torch.inference_mode():
            if reuse_prefix and all(g.prefix for g in groups):
                out = self._run_shared(groups)
            else:
                out = self._run_full(groups)
            if self.logprob:
                assert out.loglik is not None
                uncond, computed = self._null_loglik(groups)
                n_tok = torch.tensor([len(p) for g in groups for p in g.parts], dtype=torch.float32, device=uncond.device)
                empty = torch.tensor([not g.prefix for g in groups for _ in g.parts], device=uncond.device)
                loglik = torch.where(empty, uncond, out.loglik)  # no prompt at all: conditioned on the empty conversation
                out.loglik = (loglik / n_tok).cpu()
                out.pmi = ((loglik - uncond) / n_tok).cpu()
                out.computed_tokens += computed
                out.head_tokens += 2 * int(n_tok.sum())  # each response token: once with, once without the prompt
        out.pooled = {k: v.cpu() for k, v in out.pooled.items()}
        return out

    def _texts(self, groups: Sequence[EncodedGroup]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        parts = [p for g in groups for p in g.parts]
        owner = torch.tensor([i for i, g in enumerate(groups) for _ in g.parts], dtype=torch.long)
        proper = torch.tensor([k for g in groups for k in g.proper], dtype=torch.long)
        return parts, owner.to(self.loaded.device), proper.to(self.loaded.device)

    def _on_prefix_cache(self, cache: Any, Mp: torch.Tensor, owner: torch.Tensor, parts: Sequence[Sequence[int]],
                         *, hidden: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                            dict[int, torch.Tensor], torch.Tensor]]:
        """Run response ``parts`` on the KV ``cache`` of right-padded prefixes (mask ``Mp``), part t after prefix
        ``owner[t]``, in length-sorted sub-batches (:func:`length_splits`); the last sub-batch reorders the cache
        in place, earlier ones a copy of it. Yields (indices into parts, their owners, ids, mask, hidden states,
        final hidden state) per sub-batch."""
        dev = self.loaded.device
        Lp = Mp.sum(1)
        subs = length_splits([len(p) for p in parts])
        for n_sub, sub in enumerate(subs):
            idx = torch.as_tensor(sub, dtype=torch.long, device=dev)
            own = owner[idx]
            c = cache if n_sub == len(subs) - 1 else copy.deepcopy(cache)
            c.reorder_cache(own)
            ids_r, Mr = self._pad([parts[int(t)] for t in sub])
            mask = torch.cat([Mp[own], Mr], dim=1)
            pos = Lp[own, None] + torch.arange(ids_r.shape[1], device=dev)[None, :]
            Hr, final_r, _ = self._call(ids_r, mask, hidden=hidden, position_ids=pos, cache=c)
            yield idx, own, ids_r, Mr, Hr, final_r

    def _run_shared(self, groups: Sequence[EncodedGroup]) -> GroupOutput:
        parts, owner, proper = self._texts(groups)
        dev = self.loaded.device
        ids_p, Mp = self._pad([g.prefix for g in groups])
        need_prefix_h = bool({"mean", "attention"} & set(self.poolings))
        Hp, final_p, cache = self._call(ids_p, Mp, hidden=need_prefix_h, want_cache=True)
        zeros = torch.zeros(len(groups), dtype=torch.long, device=dev)
        p_stats = {k: self._stats(h, Mp, zeros, zeros) for k, h in Hp.items()}
        first = final_p[torch.arange(len(groups), device=dev), Mp.sum(1) - 1]
        pooled: dict[tuple[str, int], torch.Tensor] = {}
        loglik = torch.zeros(len(parts), dtype=torch.float32, device=dev) if self.logprob else None
        out = GroupOutput(pooled, tokens=int(Mp.sum()), computed_tokens=int(Mp.numel()))
        for idx, own, ids_r, Mr, Hr, final_r in self._on_prefix_cache(cache, Mp, owner, parts, hidden=True):
            start = torch.zeros(len(idx), dtype=torch.long, device=dev)
            for k_in, k in zip(self.layers, self._norm_layers, strict=True):
                r = self._stats(Hr[k], Mr, start, proper[idx])
                for pooling in self.poolings:
                    v = self._combine(pooling, r, p_stats.get(k), own)
                    if (pooling, k_in) not in pooled:
                        pooled[(pooling, k_in)] = torch.zeros((len(parts), v.shape[-1]), dtype=v.dtype, device=dev)
                    pooled[(pooling, k_in)][idx] = v
            out.tokens += int(Mr.sum())
            out.computed_tokens += int(Mr.numel())
            if loglik is not None:
                loglik[idx] = self._logprob_sums(final_r, ids_r, first[own], start, Mr.sum(1))
        out.loglik = loglik
        return out

    def _run_full(self, groups: Sequence[EncodedGroup]) -> GroupOutput:
        parts, owner, proper = self._texts(groups)
        dev = self.loaded.device
        seqs = [groups[int(o)].prefix + p for o, p in zip(owner.tolist(), parts, strict=True)]
        ids, M = self._pad(seqs)
        H, final, _ = self._call(ids, M, hidden=True)
        lp = torch.tensor([len(groups[int(o)].prefix) for o in owner.tolist()], dtype=torch.long, device=dev)
        pooled = {}
        for k_in, k in zip(self.layers, self._norm_layers, strict=True):
            r = self._stats(H[k], M, lp, lp + proper)
            for pooling in self.poolings:
                pooled[(pooling, k_in)] = self._combine(pooling, r, None, owner)
        out = GroupOutput(pooled, tokens=int(M.sum()), computed_tokens=int(M.numel()))
        if self.logprob:
            n_part = torch.tensor([len(p) for p in parts], dtype=torch.long, device=dev)
            # texts without any prefix get their likelihood from the null pass (see run); skip their first token here
            start = torch.where(lp > 0, lp, torch.ones_like(lp))
            length = torch.where(lp > 0, n_part, n_part - 1)
            out.loglik = self._logprob_sums(final, ids, None, start, length)
        return out

    def _null_loglik(self, groups: Sequence[EncodedGroup]) -> tuple[torch.Tensor, int]:
        """Summed log-likelihood of every response part after the empty conversation (one shared prefix)."""
        parts = [p for g in groups for p in g.parts]
        dev = self.loaded.device
        assert self.null_prefix is not None
        ids_p, Mp = self._pad([self.null_prefix])
        _, final_p, cache = self._call(ids_p, Mp, hidden=False, want_cache=True)
        owner = torch.zeros(len(parts), dtype=torch.long, device=dev)
        sums = torch.zeros(len(parts), dtype=torch.float32, device=dev)
        computed = int(Mp.numel())
        for idx, _own, ids_r, Mr, _, final_r in self._on_prefix_cache(cache, Mp, owner, parts, hidden=False):
            ctx = final_p[0, len(self.null_prefix) - 1].expand(len(idx), -1)
            sums[idx] = self._logprob_sums(final_r, ids_r, ctx, torch.zeros_like(idx), Mr.sum(1))
            computed += int(Mr.numel())
        return sums, computed


def rms_normalize(x: np.ndarray) -> np.ndarray:
    """Each row divided by its root mean square (rows of zeros stay zero)."""
    r = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True))
    return (x / np.where(r > 0, r, 1.0)).astype(np.float32)


def assemble(out: GroupOutput, pooling: str, layers: Sequence[int], logprob: bool) -> np.ndarray:
    """A store row per text: the pooled blocks of ``layers`` in order (RMS-normalised each when several),
    then ``loglik_mean``, ``pmi_mean`` when ``logprob`` (see :mod:`coala_core.features.config`)."""
    blocks = [out.pooled[(pooling, k)].numpy().astype(np.float32) for k in layers]
    if len(blocks) > 1:
        blocks = [rms_normalize(b) for b in blocks]
    if logprob:
        if out.loglik is None or out.pmi is None:
            raise ValueError("log-likelihood features were not computed")
        blocks.append(np.stack([out.loglik.numpy(), out.pmi.numpy()], axis=1).astype(np.float32))
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
