"""Length bucketing and batch-size back-off on out-of-memory.

Padding to the longest text of a batch costs B * max_len token computations for sum(len) useful ones; the
*padding efficiency* is their ratio. Sorting a window of texts by length before cutting it into batches
(bucketing) puts texts of similar length together. Longest batches go first, so an out-of-memory error, if
any, happens at the start of a chunk and the smaller batch size then holds for the rest of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def batch_order(lengths: Sequence[int], bucketing: bool) -> np.ndarray:
    """The order in which texts are batched: longest first when bucketing, else the input order."""
    n = len(lengths)
    if not bucketing:
        return np.arange(n)
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def computed_tokens(lengths: Sequence[int], batch_size: int, bucketing: bool) -> int:
    """Token positions a forward pass computes (B * max_len summed over batches) for this batching."""
    L = np.asarray(lengths, dtype=np.int64)[batch_order(lengths, bucketing)]
    return int(sum(len(b) * int(b.max()) for b in np.array_split(L, range(batch_size, len(L), batch_size)) if len(b)))


def length_splits(lengths: Sequence[int], max_splits: int = 2) -> list[np.ndarray]:
    """Indices of ``lengths`` sorted by length and cut into at most ``max_splits`` contiguous sub-batches, each
    padded to its own longest item: the fewest sub-batches whose padded total is within 10% (of the one-batch
    total) of the least possible, since each sub-batch is one more forward call. The response parts of a
    shared-prompt batch run this way: both responses of every pair sit in one batch, so one long response
    would otherwise pad all the short ones."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    L = np.asarray(lengths, dtype=np.int64)[order]
    k_max = max(1, min(int(max_splits), n))
    # cost[k][j]: least padded total of the first j sorted items in k sub-batches (the last ends at j - 1)
    inf = np.iinfo(np.int64).max // 4
    cost = np.full((k_max + 1, n + 1), inf, dtype=np.int64)
    cut = np.zeros((k_max + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0
    for k in range(1, k_max + 1):
        for j in range(1, n + 1):
            starts = np.arange(j)  # the sub-batch is items start..j-1, padded to L[j - 1]
            c = cost[k - 1, starts] + (j - starts) * L[j - 1]
            best = int(np.argmin(c))
            cost[k, j], cut[k, j] = c[best], best
    # fewest sub-batches within 10% of a single batch's cost from the least (a further forward call must pay)
    slack = cost[1:, n] - cost[1:, n].min()
    k = int(np.flatnonzero(slack <= 0.10 * cost[1, n])[0]) + 1
    bounds, j = [], n
    while k > 0:
        i = int(cut[k, j])
        bounds.append((i, j))
        j, k = i, k - 1
    return [order[i:j] for i, j in reversed(bounds)]


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def _back_off(runner: Any, err: BaseException, *, can_shrink: bool) -> None:
    """On an out-of-memory error halve ``runner.batch_size`` and count it; re-raise anything else, or when the
    batch cannot shrink further."""
    if not is_oom(err) or not can_shrink:
        raise err
    runner.batch_size = max(1, runner.batch_size // 2)
    runner.oom_backoffs += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BackoffRunner:
    """Runs ``forward`` over sequences ``batch_size`` at a time, halving the batch size on out-of-memory.

    ``forward`` maps a list of token-id lists to a (len(list), d) tensor. The reduced batch size persists
    across calls. A batch of one that still runs out of memory re-raises the error.
    """

    forward: Callable[[list[list[int]]], torch.Tensor]
    batch_size: int
    oom_backoffs: int = 0
    useful_tokens: int = 0
    computed_tokens: int = 0

    def run(self, seqs: list[list[int]]) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        i = 0
        while i < len(seqs):
            batch = seqs[i : i + self.batch_size]
            try:
                out = self.forward(batch)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                _back_off(self, err, can_shrink=self.batch_size > 1)
                continue
            outputs.append(out)
            self.useful_tokens += sum(len(s) for s in batch)
            self.computed_tokens += len(batch) * max(len(s) for s in batch)
            i += len(batch)
        return torch.cat(outputs) if outputs else torch.empty(0)


@dataclass
class GroupRunner:
    """Runs ``forward`` over groups of texts, about ``batch_size`` texts at a time, halving on out-of-memory.

    ``forward`` maps a list of groups to a result with ``tokens`` and ``computed_tokens`` attributes; the
    results of the batches are returned in order. The reduced batch size persists across calls.
    """

    forward: Callable[[list], object]
    batch_size: int
    oom_backoffs: int = 0
    useful_tokens: int = 0
    computed_tokens: int = 0
    head_tokens: int = 0  # positions the output layer ran on (likelihood features)
    on_batch: Callable[[int], None] | None = None  # called with the number of groups of each finished batch

    def run(self, groups: list, texts_per_group: int) -> list:
        outputs: list = []
        i = 0
        while i < len(groups):
            step = max(1, self.batch_size // max(1, texts_per_group))
            batch = groups[i : i + step]
            try:
                out = self.forward(batch)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                _back_off(self, err, can_shrink=step > 1)
                continue
            outputs.append(out)
            self.useful_tokens += int(out.tokens)  # type: ignore[attr-defined]
            self.computed_tokens += int(out.computed_tokens)  # type: ignore[attr-defined]
            self.head_tokens += int(getattr(out, "head_tokens", 0))
            i += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
        return outputs
