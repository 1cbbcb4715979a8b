"""`coala features extract`: pooled hidden-state features of a pairs file into a chunked Zarr store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from coala_cli._common import config_option, fail, handle_errors
from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, feature_store_key, load_model, parse_shard

app = typer.Typer(no_args_is_help=True)
X = ExtractionConfig


@app.callback()
def _features() -> None:
    """Extract pooled hidden-state features from a frozen LM."""


@app.command("extract")
@handle_errors
def extract(
    pairs: Annotated[Path, typer.Option("--pairs", help="canonical pairs Parquet file")],
    model: str | None = config_option(X, "model", help="hub id, local dir, .gguf file or 'default' (bundled SmolLM2)"),
    output: Annotated[str | None, typer.Option("--output", help="feature store URI (path, file://, memory://, s3://...)",
                                               show_default="required unless --store-root")] = None,
    store_root: Annotated[
        str | None, typer.Option("--store-root", help="instead of --output: store at ROOT/<key>.zarr, key from data+model+config",
                                 show_default="none")
    ] = None,
    pooling: str | None = config_option(X, "pooling", help="response_*: over the response's own tokens only"),
    max_tokens: int | None = config_option(X, "max_tokens", help="tokens per text; the prompt is cut from the left"),
    batch_size: int | None = config_option(X, "batch_size", help="texts per forward pass (speed and memory only)"),
    dtype: str | None = config_option(X, "dtype", help="compute dtype (float16 on a GPU; auto: bfloat16 on GPU, float32 on CPU)"),
    layers: str | None = config_option(X, "layers", "--layers", "--layer",
                                  help="hidden_states index or indices, e.g. -1 or -1,-8,15 (several: concatenated, each RMS-normalised)"),
    logprob_features: bool | None = config_option(X, "logprob_features", help="append loglik_mean and pmi_mean of the response"),
    share_prefix: bool | None = config_option(X, "share_prefix", help="one prompt cut and one prompt pass per pair (KV cache reused)"),
    chunk_rows: int | None = config_option(X, "chunk_rows", help="rows per committed store chunk (storage layout, not identity)"),
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: extract only shard I of N chunk ranges", show_default="all")] = None,
    device: str | None = config_option(X, "device"),
    preset: Annotated[str | None, typer.Option("--preset", help="default | paper (the authors' extraction settings)",
                                               show_default="none")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file; its 'features' section")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar (none either when stderr is not a terminal)", show_default="false")] = False,
) -> None:
    """Extract f(prompt + chosen) and f(prompt + rejected) for every pair; resumes an interrupted store."""
    from storage import FeatureStore, read_pairs
    from storage.pairs import table_digest

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = dict(model=model, pooling=pooling, max_tokens=max_tokens, batch_size=batch_size, dtype=dtype, layers=layers, device=device,
                     logprob_features=logprob_features, share_prefix=share_prefix, chunk_rows=chunk_rows)
    base = ExtractionConfig.preset(preset).to_dict() if preset else {}
    if config is not None:
        cfg = ExtractionConfig.from_yaml(
            config, section="features", **{**{k: v for k, v in base.items() if k not in _yaml_keys(config)}, **overrides}
        )
    else:
        cfg = ExtractionConfig.build(base, **overrides)
    if (output is None) == (store_root is None):
        raise fail("give exactly one of --output STORE_URI or --store-root DIR")
    if output is not None:
        _check_target(output)  # before the model loads: a wrong path costs a line, not a minute
    shard_ix = parse_shard(shard)
    table = read_pairs(pairs)
    digest = table_digest(table)  # stored at write time, or computed from the rows (files from polars/pyarrow)
    extractor = FeatureExtractor(load_model(cfg), cfg)
    if output is None:
        key = feature_store_key(digest, extractor.loaded.model_id, extractor.loaded.revision, cfg, extractor.loaded.dtype_name)
        output = f"{str(store_root).rstrip('/')}/{key}.zarr"
    store = FeatureStore.open_or_create(
        output,
        n_rows=table.num_rows,
        dim=extractor.dim,
        dtype=cfg.store_dtype,
        chunk_rows=cfg.chunk_rows,
        provenance=extractor.provenance(digest),
    )
    from coala_cli.progress import extraction_progress

    with extraction_progress(quiet=quiet) as progress:  # a bar on a terminal; none when piped or --quiet
        stats = extract_features(table, store, cfg, extractor=extractor, shard=shard_ix, progress=progress,
                                 show_progress=False)
    typer.echo(json.dumps({"store": output, "complete": store.is_complete, "completed_rows": store.completed_rows, **stats.to_dict()}))


def _check_target(uri: str) -> None:
    """A local ``--output`` must be a feature store or not exist yet (an empty directory is fine)."""
    if "://" in uri and not uri.startswith("file://"):
        return
    path = Path(uri.removeprefix("file://"))
    if path.is_file():
        raise fail(f"--output {uri}: a file is in the way; a feature store is a directory (give a new path)")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").is_file():
        raise fail(f"--output {uri}: an existing directory that is not a feature store (no zarr.json); give a new path "
                   "or an existing store to resume")


def _yaml_keys(path: Path) -> set[str]:
    """Keys the YAML's features section sets (they win over the preset; flags win over both)."""
    from coala_core.config import load_yaml

    section = load_yaml(path).get("features") or {}
    return set(section) if isinstance(section, dict) else set()


def _register_verify() -> None:
    from coala_cli.features_verify import verify

    app.command("verify")(verify)


_register_verify()
