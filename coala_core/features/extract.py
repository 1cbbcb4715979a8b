"""Extraction: pending row chunks of a feature store -> texts -> frozen LM -> pooled vectors -> store.

For every pair i the store receives f(prompt_i + chosen_i) in ``chosen[i]`` and f(prompt_i + rejected_i) in
``rejected[i]``, each a row of ``dim`` columns (``hidden_size`` per layer, plus the likelihood columns; see
:mod:`coala_core.features.config`). Work is done one row chunk at a time: the chunk's pairs are encoded (one
prompt cut per pair), bucketed by length, run through the model (each prompt once when ``share_prefix``),
pooled, and written as one whole chunk that is committed last. Killing the process loses at most the chunk in flight; a rerun extracts only
uncommitted chunks. Shards ``(i, n)`` take disjoint contiguous chunk ranges of the same store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from coala_core.engine.compute import forward_flops, matmul_params
from coala_core.errors import ConfigError, DataError, DimensionMismatchError, ProvenanceMismatchError
from coala_core.features.batching import GroupRunner, batch_order
from coala_core.features.config import ExtractionConfig, extraction_provenance, feature_dim
from coala_core.features.forward import GroupForward, GroupOutput, assemble
from coala_core.features.model import LoadedModel, load_model
from coala_core.features.pooling import attention_vector, vector_sha256
from coala_core.features.text import EncodedGroup, TextEncoder

log = logging.getLogger("coala.features")


@dataclass
class ExtractionStats:
    """What one extraction run did. Tokens count real (non-pad) tokens; computed tokens include padding; head
    tokens are the positions the LM's output layer ran on (likelihood columns only)."""

    rows: int = 0
    texts: int = 0
    tokens: int = 0
    computed_tokens: int = 0
    head_tokens: int = 0
    n_params: int = 0  # matmul parameters of the decoder (the one FLOP convention) ...
    head_params: int = 0  # ... and of the output layer, run for the likelihood columns
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

    @property
    def flops(self) -> float:
        """Analytic forward FLOPs: 2 N T over the decoder's positions, plus the output layer's positions."""
        return forward_flops(self.n_params, self.computed_tokens) + forward_flops(self.head_params, self.head_tokens)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(tokens_per_second=self.tokens_per_second, padding_efficiency=self.padding_efficiency, flops=self.flops)
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
    """Sent after each model batch (``committed=False``: rows of the chunk in flight counted as far as its
    batches went) and after each committed chunk: rows done of rows to do in this run, and the running stats.
    So progress moves every batch whatever ``chunk_rows`` is."""

    chunk_index: int
    rows_done: int
    rows_total: int
    stats: ExtractionStats = field(repr=False)
    committed: bool = True


ProgressCallback = Callable[[ProgressEvent], None]


class FeatureExtractor:
    """A loaded model plus encoder and pooling: maps (prompt, response) texts to store rows (n, dim) float32.

    ``dim`` is ``hidden_size`` per layer of ``config.layers`` plus the likelihood columns (see
    :mod:`coala_core.features.config`). Pairs go through :meth:`pair_features` (one prompt cut and, with
    ``share_prefix``, one prefix pass per pair); single texts (scoring) through :meth:`features`.
    """

    def __init__(self, loaded: LoadedModel, config: ExtractionConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.encoder = TextEncoder(loaded.tokenizer, config.max_tokens, config.use_chat_template)
        tok = loaded.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))
        self.a_np = attention_vector(loaded.hidden_size, config.attention_seed) if config.pooling == "attention" else None
        self.a = torch.from_numpy(self.a_np).to(loaded.device) if self.a_np is not None else None
        self.dim = feature_dim(loaded.hidden_size, len(config.layers), config.logprob_features)
        self.engine = self.make_engine([config.pooling], config.layers, config.logprob_features)

    def make_engine(self, poolings: Sequence[str], layers: Sequence[int], logprob: bool) -> GroupForward:
        """A forward engine on this model and encoder for any poolings / layers (several variants in one pass)."""
        L = self.loaded.num_layers
        bad = [k for k in layers if not -L - 1 <= k <= L]
        if bad:
            raise ConfigError(f"ExtractionConfig.layers: expected indices into {L + 1} hidden states, got {bad}")
        a = self.a
        if "attention" in poolings and a is None:
            a = torch.from_numpy(attention_vector(self.loaded.hidden_size, self.config.attention_seed)).to(self.loaded.device)
        return GroupForward(self.loaded, list(layers), list(poolings), logprob, a, self.pad_id,
                            self.encoder.null_prefix() if logprob else None)

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

    def run_groups(self, groups: list[EncodedGroup], runner: GroupRunner, engine: GroupForward | None = None,
                   reuse_prefix: bool | None = None) -> GroupOutput:
        """One :class:`GroupOutput` for all texts of ``groups`` in group order, batched by length (longest first
        when bucketing). ``reuse_prefix`` defaults to the config's ``share_prefix``."""
        engine = engine or self.engine
        reuse = self.config.share_prefix if reuse_prefix is None else reuse_prefix
        if not groups:
            raise DataError("nothing to extract: no texts")
        order = group_order(groups, self.config.bucketing, reuse)
        per_group = max(len(g.parts) for g in groups)
        runner.forward = lambda batch: engine.run(batch, reuse_prefix=reuse)
        outs = runner.run([groups[j] for j in order], per_group)
        # texts in batch order -> texts in group order
        starts = np.cumsum([0] + [len(g.parts) for g in groups])
        text_order = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in order])
        inverse = np.empty_like(text_order)
        inverse[text_order] = np.arange(len(text_order))
        idx = torch.from_numpy(inverse)
        pooled = {k: torch.cat([o.pooled[k] for o in outs])[idx] for k in outs[0].pooled}
        merged = GroupOutput(pooled, tokens=sum(o.tokens for o in outs), computed_tokens=sum(o.computed_tokens for o in outs),
                             head_tokens=sum(o.head_tokens for o in outs))
        if outs[0].loglik is not None:
            merged.loglik = torch.cat([o.loglik for o in outs])[idx]  # type: ignore[misc]
            merged.pmi = torch.cat([o.pmi for o in outs])[idx]  # type: ignore[misc]
        return merged

    def pair_features(self, prompts: Sequence[Any], chosen: Sequence[str], rejected: Sequence[str],
                      runner: GroupRunner | None = None) -> tuple[np.ndarray, np.ndarray, list[EncodedGroup]]:
        """Store rows of the chosen and of the rejected texts (each (n, dim)) and the encoded groups.

        With ``share_prefix`` a pair is one group (one prompt cut, one prefix pass); without, each text is its
        own group (its own cut, one full pass each)."""
        runner = runner or GroupRunner(self.engine.run, self.config.batch_size)
        msgs = [_messages(p) for p in prompts]
        n = len(msgs)
        if self.config.share_prefix:
            groups = self.encoder.encode_pairs(msgs, chosen, rejected)
            out = self.run_groups(groups, runner)
            rows = assemble(out, self.config.pooling, self.config.layers, self.config.logprob_features)
            return rows[0::2], rows[1::2], groups
        groups = self.encoder.encode_groups(msgs + msgs, [[r] for r in list(chosen) + list(rejected)])
        out = self.run_groups(groups, runner)
        rows = assemble(out, self.config.pooling, self.config.layers, self.config.logprob_features)
        return rows[:n], rows[n:], groups

    def features(self, prompts: Sequence[Any], responses: Sequence[str], runner: GroupRunner | None = None) -> np.ndarray:
        """Store rows (n, dim) of single texts, each cut and run on its own (scoring new text)."""
        runner = runner or GroupRunner(self.engine.run, self.config.batch_size)
        groups = self.encoder.encode_groups([_messages(p) for p in prompts], [[r] for r in responses])
        out = self.run_groups(groups, runner)
        return assemble(out, self.config.pooling, self.config.layers, self.config.logprob_features)


def group_order(groups: Sequence[EncodedGroup], bucketing: bool, reuse_prefix: bool) -> np.ndarray:
    """The order in which groups are batched. Whole texts: longest first. Shared prompt pass: by prefix length,
    then by longest response part (prefixes and response parts are padded separately, so both should be alike
    within a batch)."""
    if not bucketing:
        return np.arange(len(groups))
    longest = np.array([max(len(p) for p in g.parts) for g in groups])
    prefix = np.array([len(g.prefix) for g in groups])
    if not reuse_prefix:
        return batch_order((prefix + longest).tolist(), True)
    return np.lexsort((-longest, -prefix))


def _messages(prompt_cell: Any) -> list[dict[str, str]]:
    """A prompt cell (message list, plain text or None) as a message list; plain text is one user turn."""
    if isinstance(prompt_cell, str):
        return [{"role": "user", "content": prompt_cell}] if prompt_cell else []
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
    if store.dim != extractor.dim:
        raise DimensionMismatchError(
            f"store {store.uri} has dim {store.dim}, this extraction writes {extractor.dim} columns "
            f"({len(config.layers)} layer(s) of {extractor.loaded.hidden_size}"
            f"{' + 2 likelihood columns' if config.logprob_features else ''})"
        )
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
    n_params = matmul_params(extractor.loaded.backbone, lm_head=False)
    head_params = matmul_params(extractor.loaded.model, lm_head=True) - n_params if config.logprob_features else 0
    stats = ExtractionStats(skipped_chunks=len(lo_hi) - len(pending), batch_size=config.batch_size,
                            n_params=n_params, head_params=head_params)
    runner = GroupRunner(extractor.engine.run, config.batch_size)
    rows_total = sum(store.chunk_bounds(c)[1] - store.chunk_bounds(c)[0] for c in pending)
    cols = {name: pairs.column(name) for name in ("pair_id", "prompt", "chosen", "rejected")}
    t0 = time.perf_counter()
    bar = tqdm(total=rows_total, unit="pair", desc="features", disable=not show_progress)
    groups_per_row = 1 if config.share_prefix else 2
    in_flight = {"chunk": -1, "rows": 0, "groups": 0}

    def batch_done(n_groups: int) -> None:  # a partial event per model batch of the chunk in flight
        in_flight["groups"] += n_groups
        rows = min(in_flight["groups"] // groups_per_row, in_flight["rows"])
        stats.tokens, stats.computed_tokens, stats.head_tokens = runner.useful_tokens, runner.computed_tokens, runner.head_tokens
        stats.seconds = time.perf_counter() - t0
        if progress is not None and rows < in_flight["rows"]:
            progress(ProgressEvent(in_flight["chunk"], stats.rows + rows, rows_total, stats, committed=False))

    runner.on_batch = batch_done
    try:
        for c in pending:
            start, stop = store.chunk_bounds(c)
            in_flight.update(chunk=c, rows=stop - start, groups=0)
            prompts = cols["prompt"][start:stop].to_pylist()
            chosen = cols["chosen"][start:stop].to_pylist()
            rejected = cols["rejected"][start:stop].to_pylist()
            f_c, f_r, groups = extractor.pair_features(prompts, chosen, rejected, runner)
            n = stop - start
            store.write_chunk(c, f_c, f_r, cols["pair_id"][start:stop].to_pylist())
            stats.rows += n
            stats.texts += 2 * n
            stats.truncations += sum(g.prompt_truncated or t for g in groups for t in g.response_truncated)
            stats.response_truncations += sum(t for g in groups for t in g.response_truncated)
            stats.chunks += 1
            stats.tokens, stats.computed_tokens, stats.head_tokens = runner.useful_tokens, runner.computed_tokens, runner.head_tokens
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
