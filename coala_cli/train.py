"""``coala train``, ``coala evaluate``, ``coala baseline``, ``coala score``: thin wrappers over
:func:`coala_core.phase2.train_head`, :func:`coala_core.evaluation.evaluate_head`, the baselines and the report.

Features come from a FeatureStore; splits, sources and groups from the pairs Parquet, aligned to the store's
rows by ``pair_id``. Config files: ``--config YAML`` with sections ``phase1``, ``phase2`` and ``train``; flags
override the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from coala_cli._common import handle_errors
from coala_core.baselines import compare_heads, comparison_table, fit_baselines
from coala_core.errors import DataError
from coala_core.evaluation import evaluate_head
from coala_core.phase1 import Phase1Config
from coala_core.phase2 import Phase2Config, TrainConfig, align_to_store, train_head
from coala_core.report import md_table, render_report
from storage.atomic import atomic_write_bytes, atomic_write_text
from storage.feature_store import FeatureStore
from storage.heads import load_head, save_head, write_scores

FEATURES = typer.Option(..., "--features", help="feature store (path or fsspec URL)")
PAIRS = typer.Option(None, "--pairs", help="pairs Parquet with split/source/group_id (aligned by pair_id)")


def _load(features: str, pairs: Path | None) -> dict[str, Any]:
    """Features and per-row labels, in the store's row order."""
    store = FeatureStore.open(features, mode="r")
    store.verify()
    chosen, rejected = store.read_all()
    ids = store.pair_ids()
    data: dict[str, Any] = {"store": store, "chosen": chosen, "rejected": rejected, "pair_id": ids}
    if pairs is None:
        n = len(ids)
        data.update(split=np.full(n, "all", dtype=object), source=np.full(n, "all", dtype=object),
                    group_id=ids.astype(object))
        return data
    from storage.pairs import read_pairs

    table = read_pairs(pairs)
    cols = {k: table.column(k).to_pylist() for k in ("split", "source", "group_id")}
    data.update(align_to_store(ids, table.column("pair_id").to_pylist(), cols, where=str(pairs)))
    return data


def _configs(config: Path | None, p1: dict[str, Any], p2: dict[str, Any], tr: dict[str, Any]):
    if config is None:
        return Phase1Config.build(p1), Phase2Config.build(p2), TrainConfig.build(tr)
    return (Phase1Config.from_yaml(config, "phase1", **p1), Phase2Config.from_yaml(config, "phase2", **p2),
            TrainConfig.from_yaml(config, "train", **tr))


@handle_errors
def train(
    features: str = FEATURES,
    pairs: Path = typer.Option(..., "--pairs", help="pairs Parquet with the split column"),
    output: Path = typer.Option(..., "--output", help="head directory to write"),
    config: Path | None = typer.Option(None, "--config", help="YAML with phase1/phase2/train sections"),
    preset: str | None = typer.Option(None, help="Phase II preset: convex or paper"),
    loss: str | None = typer.Option(None, help="Phase II loss: pairwise or pointwise"),
    solver: str | None = typer.Option(None, help="Phase II solver: newton, agd or adamw"),
    phase1_preset: str | None = typer.Option(None, help="Phase I preset: default or paper"),
    n_patterns: int | None = typer.Option(None, help="Phase I P (2P neurons)"),
    first_layer: str | None = typer.Option(None, help="phase1 or random"),
    seed: int | None = typer.Option(None),
) -> None:
    """Run Phase I (beta path selected on validation) then Phase II, and write the head."""
    p1cfg, p2cfg, trcfg = _configs(
        config, {"preset": phase1_preset, "n_patterns": n_patterns, "seed": seed},
        {"preset": preset, "loss": loss, "solver": solver, "seed": seed}, {"first_layer": first_layer, "seed": seed},
    )
    data = _load(features, pairs)
    result = train_head(data["chosen"], data["rejected"], data["split"], phase1_config=p1cfg,
                        phase2_config=p2cfg, config=trcfg)
    meta = result.training_meta()
    val = [h for h in result.phase2.history if "val/accuracy" in h]
    save_head(
        output, result.head, provenance=data["store"].provenance,
        config={"phase1": p1cfg.to_dict(), "phase2": result.phase2.config.to_dict(), "train": trcfg.to_dict()},
        metrics={"val_accuracy": val[-1]["val/accuracy"] if val else None, **meta["phase2_summary"]},
        extra={"training": meta, "features": {"uri": str(features), "pairs": str(pairs)}},
    )
    s = meta["phase2_summary"]
    typer.echo(f"head written to {output}: d={result.head.dim}, m={result.head.width}, "
               f"Phase I beta={meta['phase1_beta']}, Phase II beta={s['beta']} gamma={s['gamma']} l2={s['l2']}, "
               f"||grad||={s['grad_norm']:.2e}, validation accuracy="
               f"{val[-1]['val/accuracy'] if val else float('nan'):.4f}")


def _subset(data: dict[str, Any], split: str) -> np.ndarray:
    rows = np.flatnonzero(data["split"] == split) if split != "all" else np.arange(len(data["pair_id"]))
    if rows.size == 0:
        raise DataError(f"--split {split}: no pairs with that split label")
    return rows


def _baselines(data: dict[str, Any], head, rows: np.ndarray, seed: int, n_boot: int) -> list[dict[str, Any]]:
    tr, va = _subset(data, "train"), _subset(data, "validation")
    C, R = data["chosen"], data["rejected"]
    heads = fit_baselines(C[tr], R[tr], C[va], R[va], width=head.width, seed=seed)
    heads = {"coala": head, **heads}
    evals = compare_heads(heads, C[rows], R[rows], groups=data["group_id"][rows], n_boot=n_boot, seed=seed)
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
    split: str | None = typer.Option(None, help="split to evaluate (default: test with --pairs, else all)"),
    baselines: bool = typer.Option(False, "--baselines/--no-baselines", help="also fit and compare the baselines"),
    n_boot: int = typer.Option(1000, help="bootstrap resamples for the 95% intervals"),
    seed: int = typer.Option(0),
) -> None:
    """Write metrics JSON, plots and report.md for the head on held-out pairs."""
    data = _load(features, pairs)
    h = load_head(head, expected_dim=data["store"].dim, expected_provenance=data["store"].provenance)
    split = split or ("test" if pairs is not None else "all")
    rows = _subset(data, split)
    ev = evaluate_head(h, data["chosen"][rows], data["rejected"][rows], sources=data["source"][rows],
                       groups=data["group_id"][rows], n_boot=n_boot, seed=seed)
    table = _baselines(data, h, rows, seed, n_boot) if baselines else None
    files = render_report(evaluations={split: ev}, head_meta=h.meta, baselines=table,
                          inputs={"head": str(head), "features": features, "pairs": str(pairs), "split": split})
    output.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        atomic_write_bytes(output / name, blob)
    m = ev.metrics
    typer.echo(f"{split}: {int(m['n_pairs'])} pairs, accuracy {m['accuracy']:.4f} "
               f"(95% CI {ev.ci['accuracy'][0]:.4f}-{ev.ci['accuracy'][1]:.4f}), sigmoid margin "
               f"{m['sigmoid_margin']:.4f}, ECE {m['ece']:.4f}; report: {output / 'report.md'}")


@handle_errors
def baseline(
    features: str = FEATURES,
    pairs: Path = typer.Option(..., "--pairs", help="pairs Parquet with train/validation/test splits"),
    head: Path | None = typer.Option(None, "--head", help="a COALA head to compare (default: random-ReLU width 20)"),
    output: Path | None = typer.Option(None, "--output", help="directory for comparison.json and comparison.md"),
    split: str = typer.Option("test"),
    n_boot: int = typer.Option(1000),
    seed: int = typer.Option(0),
) -> None:
    """Fit the linear Bradley-Terry and AdamW ReLU-net baselines on the same features and compare."""
    data = _load(features, pairs)
    if head is not None:
        h = load_head(head, expected_dim=data["store"].dim, expected_provenance=data["store"].provenance)
    else:
        h = train_head(data["chosen"], data["rejected"], data["split"],
                       config=TrainConfig(first_layer="random", seed=seed)).head
    table = _baselines(data, h, _subset(data, split), seed, n_boot)
    text = md_table(table)
    typer.echo(text)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "comparison.json", json.dumps(table, indent=2))
        atomic_write_text(output / "comparison.md", f"# Heads on the same features ({split} split)\n\n{text}")


@handle_errors
def score(
    head: Path = typer.Option(..., "--head"),
    features: str = FEATURES,
    output: Path = typer.Option(..., "--output", help="Parquet file of per-pair rewards"),
) -> None:
    """Score every pair of the store with the head; write pair_id, rewards, margin and probability."""
    store = FeatureStore.open(features, mode="r")
    h = load_head(head, expected_dim=store.dim, expected_provenance=store.provenance)
    chosen, rejected = store.read_all()
    r_w, r_l = h.score(chosen), h.score(rejected)
    write_scores(output, {"pair_id": store.pair_ids(), "reward_chosen": r_w, "reward_rejected": r_l,
                          "margin": r_w - r_l, "p_chosen": 1.0 / (1.0 + np.exp(-h.beta * (r_w - r_l)))})
    typer.echo(f"{len(r_w)} pairs scored; accuracy {np.mean(r_w > r_l):.4f}; written to {output}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``baseline`` and ``score`` to the root app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("baseline")(baseline)
    app.command("score")(score)
