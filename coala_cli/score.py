"""``coala score``: rewards of a head for (prompt, response) texts, or for the pairs of a feature store.

The head comes from ``--model-uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/PATH`` or
a head directory. With ``--input FILE`` (JSONL or Parquet rows with ``prompt``, text or a message list, and
``response``) the backbone named by the head's provenance is loaded, its provenance is checked against the
head's, the texts are pooled by the training feature path, and the rows are written back with ``reward``.
With ``--features STORE`` (optionally ``--pairs``) the store's pairs are scored as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import typer

from coala_cli._common import handle_errors
from coala_core.errors import ConfigError, DataError, SchemaError

MODEL_URI = typer.Option(..., "--model-uri", "--head",
                         help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/PATH or a head directory")
BACKBONE = typer.Option(None, "--backbone", help="the head's LM from a local path (overrides the recorded hub id)", show_default="the recorded hub id")
WORKDIR = typer.Option(Path(".coala"), "--workdir",
                       help="project work folder whose MLflow store resolves models:/ and runs:/ (MLFLOW_TRACKING_URI wins)")


def tracking_uri(workdir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``workdir``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir.resolve() / 'mlflow.db').as_posix()}"


def read_text_rows(path: Path) -> tuple[list[dict[str, Any]], list[list[dict[str, str]]], list[str]]:
    """Rows of ``path`` with their prompts as message lists and their responses; DataError ``file:line`` on a
    row without ``prompt`` or ``response``."""
    from coala_core.data.sources import read_records
    from coala_core.generation import to_messages

    records, _ = read_records(path)
    if not records:
        raise DataError(f"{path}: no rows")
    rows, prompts, responses = [], [], []
    for rec in records:
        missing = [c for c in ("prompt", "response") if c not in rec.data]
        if missing:
            raise SchemaError(f"{rec.where}: missing column(s) {missing}; each row needs prompt (text or messages) and response")
        response = rec.data["response"]
        if not isinstance(response, str) or not response.strip():
            raise DataError(f"{rec.where}: response must be non-empty text, got {response!r}"[:200])
        prompts.append(to_messages(rec.data["prompt"], f"{rec.where}: prompt"))
        responses.append(response)
        rows.append(rec.data)
    return rows, prompts, responses


def scoring_provenance(scorer: Any, uri: str) -> dict[str, Any]:
    """What produced the rewards: the backbone (model, revision, dtype) and the feature settings, checked
    against the head's on load, plus the head's reference."""
    prov = scorer.extractor.provenance(dataset_digest="")
    prov.pop("dataset_digest", None)
    prov.pop("stage", None)
    return {**prov, "model_uri": uri, "head_code_version": scorer.head.meta.get("code_version")}


def write_rows(path: Path, rows: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    """JSONL (provenance in ``PATH.provenance.json``) or Parquet (provenance in the file metadata ``coala.provenance``)."""
    from storage.atomic import atomic_path, atomic_write_text

    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"coala.provenance": json.dumps(provenance).encode()})
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(table, tmp)
        return
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise ConfigError(f"--output {path}: expected a .jsonl or .parquet file")
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    atomic_write_text(path.with_name(path.name + ".provenance.json"), json.dumps(provenance, indent=2) + "\n")


def _score_texts(model_uri: str, input: Path, output: Path, backbone: str | None, workdir: Path,
                 batch_size: int | None, device: str | None) -> None:
    from tasks.model_uri import open_scorer

    rows, prompts, responses = read_text_rows(input)
    scorer, _ = open_scorer(model_uri, backbone=backbone, tracking_uri=tracking_uri(workdir), device=device, batch_size=batch_size)
    rewards = scorer.score(prompts, responses)
    if output.suffix.lower() == ".parquet":  # one column type: prompts as message lists (the pairs schema)
        rows = [{**r, "prompt": p} for r, p in zip(rows, prompts, strict=True)]
    out = [{**r, "reward": float(x)} for r, x in zip(rows, rewards, strict=True)]
    write_rows(output, out, scoring_provenance(scorer, model_uri))
    typer.echo(f"{len(out)} rows scored (mean reward {np.mean(rewards):.4f}); written to {output}")


def _score_store(model_uri: str, features: str, pairs: Path | None, output: Path, workdir: Path) -> None:
    from coala_core.engine.sources import score_source
    from storage.feature_store import FeatureStore
    from storage.heads import load_head
    from tasks.model_uri import resolve

    resolved = resolve(model_uri, tracking_uri=tracking_uri(workdir))
    store = FeatureStore.open(features, mode="r")
    try:
        h = load_head(resolved.head_dir, expected_dim=store.dim, expected_provenance=store.provenance)
    finally:
        resolved.cleanup()
    r_w, r_l = score_source(h, store, str(features))  # streamed chunk by chunk; non-finite features refused
    ids = [str(x) for x in store.pair_ids()]
    cols: dict[str, Any] = {"pair_id": ids, "reward_chosen": r_w.tolist(), "reward_rejected": r_l.tolist(),
                            "margin": (r_w - r_l).tolist(), "p_chosen": (1.0 / (1.0 + np.exp(-h.beta * (r_w - r_l)))).tolist()}
    if pairs is not None:
        from storage.pairs import read_pairs

        table = read_pairs(pairs)
        index = {pid: i for i, pid in enumerate(table.column("pair_id").to_pylist())}
        absent = [pid for pid in ids if pid not in index]
        if absent:
            raise DataError(f"{pairs}: {len(absent)} pair ids of the store are not in the pairs file (first: {absent[0]!r})")
        for name in ("prompt", "chosen", "rejected"):
            values = table.column(name).to_pylist()
            cols[name] = [values[index[pid]] for pid in ids]
    rows = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    prov = {k: v for k, v in store.provenance.items() if k != "stage"}
    write_rows(output, rows, {**prov, "model_uri": model_uri, "features": str(features)})
    typer.echo(f"{len(ids)} pairs scored; accuracy {np.mean(r_w > r_l):.4f}; written to {output}")


@handle_errors
def score(
    model_uri: str = MODEL_URI,
    input: Path | None = typer.Option(None, "--input", help="JSONL or Parquet rows with prompt (text or messages) and response", show_default="none: give --input or --features"),
    features: str | None = typer.Option(None, "--features", help="feature store to score pair by pair (instead of --input)", show_default="none"),
    pairs: Path | None = typer.Option(None, "--pairs", help="with --features: pairs Parquet whose texts join the output", show_default="none: ids only"),
    output: Path = typer.Option(..., "--output", help="output .jsonl or .parquet"),
    backbone: str | None = BACKBONE,
    workdir: Path = WORKDIR,
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="texts per forward pass (speed only)", show_default="the head's extraction batch size"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (speed only)", show_default="auto"),
) -> None:
    """Rewards of a head: texts of --input (the head's backbone is loaded and checked) or the pairs of --features."""
    if (input is None) == (features is None):
        raise ConfigError("give exactly one of --input FILE (texts) or --features STORE (pairs of a feature store)")
    if input is not None:
        if pairs is not None:
            raise ConfigError("--pairs goes with --features, not with --input")
        _score_texts(model_uri, input, output, backbone, workdir, batch_size, device)
    else:
        _score_store(model_uri, str(features), pairs, output, workdir)


def register(app: typer.Typer) -> None:
    """Add ``score`` to the root app."""
    app.command("score")(score)
