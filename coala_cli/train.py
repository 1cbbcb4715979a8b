"""``coala train``, ``coala evaluate``, ``coala baseline``: thin wrappers over the engine
(:func:`coala_core.engine.fit_head`), the evaluation, the baselines and the report (``coala score``:
:mod:`coala_cli.score`).

Features come from a FeatureStore, read chunk by chunk; splits, sources and groups from the pairs Parquet,
aligned to the store's rows by ``pair_id``. ``--config YAML`` reads the ``phase1``, ``phase2`` and ``train``
sections (a pipeline YAML works as is: its other sections are skipped); flags override the file, and a flag
not given changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from coala_cli._common import config_option, handle_errors
from coala_core.baselines import compare_heads, comparison_table, fit_baselines
from coala_core.engine.fit import fit_head
from coala_core.engine.sources import SubsetPairs, align_to_store
from coala_core.engine.spec import HeadSpec, TrainConfig
from coala_core.errors import DataError
from coala_core.evaluation import evaluate_head
from coala_core.phase1.config import Phase1Config
from coala_core.phase2.config import Phase2Config
from coala_core.report import render_report
from storage.atomic import atomic_write_files
from storage.feature_store import FeatureStore
from storage.heads import load_head, save_head

FEATURES = typer.Option(..., "--features", help="feature store (path or fsspec URL)")
PAIRS = typer.Option(None, "--pairs", help="pairs Parquet with split/source/group_id (aligned by pair_id)",
                     show_default="none: every row, split 'all'")


def _labels(store: FeatureStore, pairs: Path | None) -> dict[str, np.ndarray]:
    """Per-row split, source and group labels in the store's row order (no features are read)."""
    ids = store.pair_ids()
    if pairs is None:
        n = len(ids)
        return {"split": np.full(n, "all", dtype=object), "source": np.full(n, "all", dtype=object),
                "group_id": ids.astype(object)}
    from storage.pairs import read_pairs, table_digest

    table = read_pairs(pairs)
    store.require_dataset(table_digest(table), where=str(pairs))  # a re-split file could leak test rows into training
    cols = {k: table.column(k).to_pylist() for k in ("split", "source", "group_id")}
    return align_to_store(ids, table.column("pair_id").to_pylist(), cols, where=str(pairs))


def _open(features: str) -> FeatureStore:
    store = FeatureStore.open(features, mode="r")
    store.verify()
    return store


def _rows(labels: dict[str, np.ndarray], split: str) -> np.ndarray:
    rows = np.flatnonzero(labels["split"] == split) if split != "all" else np.arange(len(labels["split"]))
    if rows.size == 0:
        raise DataError(f"--split {split}: no pairs with that split label")
    return rows


def _materialize(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a pair source as two arrays (for the in-memory baselines only), read chunk by chunk."""
    chosen = np.empty((source.n_rows, source.dim), dtype=np.float32)
    rejected = np.empty_like(chosen)
    for start, stop, c, r in source.iter_chunks():
        chosen[start:stop], rejected[start:stop] = c, r
    return chosen, rejected


def _pipeline_sections() -> list[str]:
    from flows.config import PipelineConfig

    return list(PipelineConfig.model_fields)


def _spec(config: Path | None, overrides: dict[str, dict[str, Any]]) -> HeadSpec:
    if config is None:
        return HeadSpec.with_overrides({}, overrides)
    return HeadSpec.from_yaml(config, ignore=_pipeline_sections(), overrides=overrides)


@handle_errors
def train(
    features: str = FEATURES,
    pairs: Path = typer.Option(..., "--pairs", help="pairs Parquet with the split column"),
    output: Path = typer.Option(..., "--output", help="head directory to write"),
    config: Path | None = typer.Option(None, "--config", help="YAML with phase1/phase2/train sections (a pipeline YAML works)"),
    preset: str | None = config_option(Phase2Config, "preset", help="Phase II preset (paper: the authors' code)"),
    loss: str | None = config_option(Phase2Config, "loss", help="Phase II loss"),
    solver: str | None = config_option(Phase2Config, "solver", help="Phase II solver"),
    phase1_preset: str | None = config_option(Phase1Config, "preset", "--phase1-preset", help="Phase I preset"),
    n_patterns: int | None = config_option(Phase1Config, "n_patterns", help="Phase I P (2P neurons)"),
    backend: str | None = config_option(Phase1Config, "backend",
                                        help="Phase I arrays: auto = the GPU when cupy sees a CUDA device"),
    memory_budget_mb: float | None = config_option(
        Phase1Config, "memory_budget_mb", help="Phase I keeps its rows in (device) memory up to this size, else streams them"),
    first_layer: str | None = config_option(TrainConfig, "first_layer"),
    seed: int | None = config_option(Phase1Config, "seed", help="seed of the gates, the Phase II solver and the head's other draws"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar (none either when stderr is not a terminal)",
                               show_default="false"),
) -> None:
    """Run Phase I (beta path selected on validation) then Phase II, and write the head."""
    spec = _spec(config, {
        "phase1": {"preset": phase1_preset, "n_patterns": n_patterns, "seed": seed, "backend": backend,
                   "memory_budget_mb": memory_budget_mb},
        "phase2": {"preset": preset, "loss": loss, "solver": solver, "seed": seed},
        "train": {"first_layer": first_layer, "seed": seed},
    })
    store = _open(features)
    labels = _labels(store, pairs)
    train_rows = SubsetPairs(store, np.flatnonzero(labels["split"] == "train"), "train")
    val_rows = SubsetPairs(store, np.flatnonzero(labels["split"] == "validation"), "validation")
    from coala_cli.progress import beta_path_progress

    with beta_path_progress(quiet=quiet) as progress:  # a bar over the beta path on a terminal
        trained = fit_head(train_rows, val_rows, spec, progress=progress)
    save_head(output, trained.head, provenance=store.provenance, **trained.record.head_json())
    rec = trained.record
    from coala_core.evaluation.degenerate import training_warnings

    for w in training_warnings(rec.training(), n_validation=int(val_rows.n_rows)):
        typer.echo(f"warning: {w}", err=True)
    s, val = rec.phase2_summary, rec.validation_accuracy()
    typer.echo(f"head written to {output}: d={trained.head.dim}, m={trained.head.width}, "
               f"Phase I beta={rec.phase1_beta}, Phase II beta={s['beta']} gamma={s['gamma']} l2={s['l2']}, "
               f"||grad||={s['grad_norm']:.2e}, validation accuracy={float('nan') if val is None else val:.4f}")


def _baselines(store: FeatureStore, labels: dict[str, np.ndarray], head, rows: np.ndarray, seed: int,
               n_boot: int) -> list[dict[str, Any]]:
    Cw, Cl = _materialize(SubsetPairs(store, _rows(labels, "train")))
    Vw, Vl = _materialize(SubsetPairs(store, _rows(labels, "validation")))
    heads = fit_baselines(Cw, Cl, Vw, Vl, width=head.width, seed=seed)
    heads = {"coala": head, **heads}
    Tw, Tl = _materialize(SubsetPairs(store, rows))
    evals = compare_heads(heads, Tw, Tl, groups=labels["group_id"][rows], n_boot=n_boot, seed=seed)
    table = comparison_table(evals)
    for row in table:
        h = heads[row["head"]]
        row["selected"] = (f"lr={h.lr:g}, epoch={h.epoch}" if hasattr(h, "lr") else
                           f"l2={h.l2:g}" if hasattr(h, "l2") else "Phase I/II on validation")
    return table


@handle_errors
def evaluate(
    head: Path = typer.Option(..., "--head", help="head directory"),
    features: str = FEATURES,
    pairs: Path | None = PAIRS,
    output: Path = typer.Option(..., "--output", help="directory for metrics.json, plots and report.md"),
    split: str | None = typer.Option(None, help="split to evaluate", show_default="test with --pairs, else all"),
    baselines: bool = typer.Option(False, "--baselines/--no-baselines", help="also fit and compare the baselines"),
    n_boot: int = typer.Option(1000, help="bootstrap resamples for the 95% intervals"),
    seed: int = typer.Option(0),
    cv: int | None = typer.Option(None, "--cv", help="K: refit the head's recipe on K group folds; every pair held out once", show_default="none: no CV"),
    memory_budget_mb: float | None = typer.Option(
        None, "--memory-budget-mb", min=0.0, help="--cv: the baselines hold a fold's rows only up to this size (the head streams)",
        show_default="the head's phase1.memory_budget_mb"),
) -> None:
    """Write metrics JSON, plots and report.md for the head on held-out pairs."""
    if cv is not None:
        from coala_cli.cv import evaluate_cv

        evaluate_cv(head=head, features=features, pairs=pairs, output=output, k=cv, baselines=baselines,
                    n_boot=n_boot, seed=seed, memory_budget_mb=memory_budget_mb)
        return
    store = _open(features)
    h = load_head(head, expected_dim=store.dim, expected_provenance=store.provenance)
    labels = _labels(store, pairs)
    split = split or ("test" if pairs is not None else "all")
    rows = _rows(labels, split)
    ev = evaluate_head(h, SubsetPairs(store, rows, split), sources=labels["source"][rows],
                       groups=labels["group_id"][rows], n_boot=n_boot, seed=seed)
    table = _baselines(store, labels, h, rows, seed, n_boot) if baselines else None
    files = render_report(evaluations={split: ev}, head_meta=h.meta, baselines=table,
                          inputs={"head": str(head), "features": features, "pairs": str(pairs), "split": split})
    atomic_write_files(output, files)  # the report directory replaced in one rename
    for w in json.loads(files["metrics.json"]).get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    m = ev.metrics
    typer.echo(f"{split}: {int(m['n_pairs'])} pairs, accuracy {m['accuracy']:.4f} "
               f"(95% CI {ev.ci['accuracy'][0]:.4f}-{ev.ci['accuracy'][1]:.4f}), sigmoid margin "
               f"{m['sigmoid_margin']:.4f}, ECE {m['ece']:.4f}; report: {output / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the root app (``score``: coala_cli/score.py; ``baseline``:
    coala_cli/baseline.py)."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
