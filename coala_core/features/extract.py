"""Extraction: pending row chunks of a feature store -> texts -> frozen LM -> pooled vectors -> store.

For every pair i the store receives f(prompt_i + chosen_i) in ``chosen[i]`` and f(prompt_i + rejected_i) in
``rejected[i]``, each a d-vector (d = hidden_size). Work is done one row chunk at a time: the chunk's 2 *
rows texts are encoded, bucketed by length, run through the model, pooled, and written as one whole chunk
that is committed last. Killing the process loses at most the chunk in flight; a rerun extracts only
uncommitted chunks. Shards ``(i, n)`` take disjoint contiguous chunk ranges of the same store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from coala_core.errors import ConfigError, DimensionMismatchError, ProvenanceMismatchError
from coala_core.features.batching import BackoffRunner, batch_order
from coala_core.features.config import ExtractionConfig, extraction_provenance
from coala_core.features.model import LoadedModel, load_model
from coala_core.features.pooling import attention_vector, pool, vector_sha256
from coala_core.features.text import TextEncoder

log = logging.getLogger("coala.features")


@dataclass
class ExtractionStats:
    """What one extraction run did. Tokens count real (non-pad) tokens; computed tokens include padding."""

    rows: int = 0
    texts: int = 0
    tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    truncations: int = 0
    response_truncations: int = 0
    chunks: int = 0
    skipped_chunks: int = 0
    oom_backoffs: int = 0
    batch_size: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_efficiency(self) -> float:
        return self.tokens / self.computed_tokens if self.computed_tokens else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(tokens_per_second=self.tokens_per_second, padding_efficiency=self.padding_efficiency)
        return d

    def summary(self) -> str:
        return (
            f"rows={self.rows} texts={self.texts} tokens={self.tokens} tokens/s={self.tokens_per_second:.1f} "
            f"padding_efficiency={self.padding_efficiency:.3f} truncations={self.truncations} "
            f"(response cut: {self.response_truncations}) chunks={self.chunks} (skipped {self.skipped_chunks}) "
            f"seconds={self.seconds:.2f} oom_backoffs={self.oom_backoffs}"
        )


@dataclass(frozen=True)
class ProgressEvent:
    """Sent after each committed chunk: rows done of rows to do in this run, and the running stats."""

    chunk_index: int
    rows_done: int
    rows_total: int
    stats: ExtractionStats = field(repr=False)


ProgressCallback = Callable[[ProgressEvent], None]


class FeatureExtractor:
    """A loaded model plus encoder and pooling: maps (prompts, responses) to pooled (n, d) float32 arrays."""

    def __init__(self, loaded: LoadedModel, config: ExtractionConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.encoder = TextEncoder(loaded.tokenizer, config.max_tokens, config.use_chat_template)
        tok = loaded.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))
        self.a_np = attention_vector(loaded.hidden_size, config.attention_seed) if config.pooling == "attention" else None
        self.a = torch.from_numpy(self.a_np).to(loaded.device) if self.a_np is not None else None
        self.last_layer = config.layer in (-1, loaded.num_layers)

    def provenance(self, dataset_digest: str) -> dict[str, Any]:
        return extraction_provenance(
            self.config,
            dataset_digest=dataset_digest,
            model_id=self.loaded.model_id,
            revision=self.loaded.revision,
            compute_dtype=self.loaded.dtype_name,
            hidden_size=self.loaded.hidden_size,
            attention_vector_sha256=vector_sha256(self.a_np) if self.a_np is not None else None,
        )

    def forward(self, seqs: list[list[int]]) -> torch.Tensor:
        """Pooled features (len(seqs), d) float32 of right-padded token sequences."""
        B, T = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        M = torch.zeros((B, T), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            M[b, : len(s)] = 1
        ids, M = ids.to(self.loaded.device), M.to(self.loaded.device)
        with torch.inference_mode():
            if self.last_layer:
                H = self.loaded.backbone(input_ids=ids, attention_mask=M, use_cache=False).last_hidden_state
            else:
                out = self.loaded.backbone(input_ids=ids, attention_mask=M, use_cache=False, output_hidden_states=True)
                H = out.hidden_states[self.config.layer]
            return pool(H, M, self.config.pooling, self.a).cpu()

    def run(self, seqs: list[list[int]], runner: BackoffRunner) -> np.ndarray:
        """Features of ``seqs`` in input order, batched by length (longest first) when bucketing is on."""
        order = batch_order([len(s) for s in seqs], self.config.bucketing)
        pooled = runner.run([seqs[j] for j in order]).numpy()
        out = np.empty_like(pooled)
        out[order] = pooled
        return out


def _messages(prompt_cell: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in (prompt_cell or [])]


def extract_features(
    pairs: pa.Table,
    store: Any,
    config: ExtractionConfig,
    *,
    extractor: FeatureExtractor | None = None,
    shard: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
    show_progress: bool = True,
) -> ExtractionStats:
    """Extract every pending chunk of ``store`` (of ``shard`` when given) from ``pairs``; return the stats.

    ``pairs`` is a canonical pairs table (pair_id, prompt, chosen, rejected, ...) whose row i fills store
    row i; ``store`` a :class:`storage.FeatureStore` opened with ``extractor.provenance(digest)`` (so a store
    made with another config was already refused). Already committed chunks are skipped, so a rerun resumes.
    """
    extractor = extractor or FeatureExtractor(load_model(config), config)
    if pairs.num_rows != store.n_rows:
        raise DimensionMismatchError(f"pairs table has {pairs.num_rows} rows, feature store {store.uri} has {store.n_rows}")
    if store.dim != extractor.loaded.hidden_size:
        raise DimensionMismatchError(f"store {store.uri} has dim {store.dim}, model hidden size is {extractor.loaded.hidden_size}")
    if store.provenance.get("model_id") not in (None, extractor.loaded.model_id):
        raise ProvenanceMismatchError(
            f"store {store.uri} holds features of {store.provenance.get('model_id')!r}, not {extractor.loaded.model_id!r}"
        )
    if extractor.a_np is not None:
        store.write_extra("attention_vector", extractor.a_np)
    pending = store.pending_chunks(shard=shard)
    lo_hi = (
        range(store.n_chunks)
        if shard is None
        else range(store.n_chunks * shard[0] // shard[1], store.n_chunks * (shard[0] + 1) // shard[1])
    )
    stats = ExtractionStats(skipped_chunks=len(lo_hi) - len(pending), batch_size=config.batch_size)
    runner = BackoffRunner(extractor.forward, config.batch_size)
    rows_total = sum(store.chunk_bounds(c)[1] - store.chunk_bounds(c)[0] for c in pending)
    cols = {name: pairs.column(name) for name in ("pair_id", "prompt", "chosen", "rejected")}
    t0 = time.perf_counter()
    bar = tqdm(total=rows_total, unit="pair", desc="features", disable=not show_progress)
    try:
        for c in pending:
            start, stop = store.chunk_bounds(c)
            prompts = [_messages(p) for p in cols["prompt"][start:stop].to_pylist()]
            chosen = cols["chosen"][start:stop].to_pylist()
            rejected = cols["rejected"][start:stop].to_pylist()
            encoded = extractor.encoder.encode(prompts + prompts, chosen + rejected)
            feats = extractor.run([e.ids for e in encoded], runner)
            n = stop - start
            store.write_chunk(c, feats[:n], feats[n:], cols["pair_id"][start:stop].to_pylist())
            stats.rows += n
            stats.texts += 2 * n
            stats.truncations += sum(e.prompt_truncated or e.response_truncated for e in encoded)
            stats.response_truncations += sum(e.response_truncated for e in encoded)
            stats.chunks += 1
            stats.tokens, stats.computed_tokens = runner.useful_tokens, runner.computed_tokens
            stats.oom_backoffs, stats.batch_size = runner.oom_backoffs, runner.batch_size
            stats.seconds = time.perf_counter() - t0
            bar.update(n)
            if progress is not None:
                progress(ProgressEvent(c, stats.rows, rows_total, stats))
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - t0
    log.info("feature extraction done: %s", stats.summary())
    return stats


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"shard: expected 'I/N' with integers, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"shard: expected 0 <= I < N, got {text!r}")
    return i, n
