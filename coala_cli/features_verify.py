"""`coala features verify STORE [--repair --pairs P]`: check every committed chunk; re-extract the bad ones."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from coala_cli._common import handle_errors
from coala_core.errors import ConfigError, StoreError


@handle_errors
def verify(
    store: Annotated[str, typer.Argument(help="feature store URI (path, file://, memory://...)")],
    repair: Annotated[bool, typer.Option("--repair", help="re-extract the bad chunks (needs --pairs)", show_default="false: report only")] = False,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="the pairs file the store was extracted from", show_default="none")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model to re-extract with", show_default="the store's model_id")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda", show_default="auto")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar", show_default="false")] = False,
) -> None:
    """Read every committed chunk and check it against its commit checksum (exit 1 on any bad chunk).

    With --repair, the bad chunks are uncommitted and extracted again from --pairs with the store's own
    settings (pooling, layer, max tokens, dtype from its provenance); the store is then checked again.
    """
    from storage.feature_store import FeatureStore

    fs = FeatureStore.open(store)
    bad = fs.check_chunks()
    pending = fs.pending_chunks()
    report = {"store": store, "n_chunks": fs.n_chunks, "checksummed": fs.checksummed, "bad_chunks": sorted(bad),
              "uncommitted_chunks": pending}
    if not bad and not pending:
        typer.echo(json.dumps({**report, "ok": True}))
        return
    for c, why in sorted(bad.items()):
        a, b = fs.chunk_bounds(c)
        typer.echo(f"{store}: chunk {c} (rows {a}-{b - 1}): {why}", err=True)
    if not repair:
        typer.echo(json.dumps({**report, "ok": False}))
        what = f"{len(bad)} bad chunk(s) {sorted(bad)[:10]}" if bad else f"{len(pending)} uncommitted chunk(s)"
        raise StoreError(f"{store}: {what}; rerun with --repair --pairs P to re-extract them")
    if pairs is None:
        raise ConfigError("--repair needs --pairs: the pairs file the store was extracted from")
    fs.uncommit(sorted(bad))
    _reextract(fs, store, pairs, model, device, quiet)
    fs = FeatureStore.open(store)
    fs.verify()
    typer.echo(json.dumps({**report, "repaired_chunks": sorted(set(bad) | set(pending)), "ok": True}))


def _reextract(fs, store: str, pairs: Path, model: str | None, device: str | None, quiet: bool) -> None:  # noqa: ANN001
    import pyarrow.compute as pc

    from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
    from storage.feature_store import FeatureStore
    from storage.pairs import read_pairs, table_digest

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prov = fs.provenance
    fields = ("pooling", "layer", "max_tokens", "use_chat_template", "store_dtype", "chunk_rows", "attention_seed")
    settings = {k: prov[k] for k in fields if k in prov}
    cfg = ExtractionConfig.build(settings, model=model or prov.get("model_id") or "default",
                                 dtype=prov.get("compute_dtype", "auto"), device=device)
    table = read_pairs(pairs)
    digest = table_digest(table)
    fs.require_dataset(digest, where=str(pairs))
    if "split" in prov:  # a pipeline store holds one split of the dataset
        table = table.filter(pc.equal(table.column("split"), prov["split"]))
    extractor = FeatureExtractor(load_model(cfg), cfg)
    expected = extractor.provenance(digest) | ({"split": prov["split"]} if "split" in prov else {})
    reopened = FeatureStore.open_or_create(store, n_rows=fs.n_rows, dim=fs.dim, dtype=fs.dtype, chunk_rows=fs.chunk_rows,
                                           provenance=expected)
    stats = extract_features(table, reopened, cfg, extractor=extractor, show_progress=not quiet)
    typer.echo(stats.summary(), err=True)
