"""``coala evaluate --cv K`` (and ``coala baseline --cv K``): K-fold group cross-validation of a head's
training recipe on every pair of a feature store, compared pair by pair with the baselines.

The COALA head is refit on each fold with the spec recorded in its ``head.json`` (Phase I, Phase II and
train sections), selecting on validation groups inside the training folds; the held-out fold is scored. With
``baselines`` the linear Bradley-Terry head, the AdamW ReLU net and the zero-shot likelihood scores are
evaluated on the same folds. Writes ``cv.json`` (per-method accuracy with group-bootstrap intervals, every
pair of methods compared with an exact McNemar p-value, per-pair out-of-fold rewards) and ``report.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from coala_core.errors import ConfigError


def evaluate_cv(*, head: Path | None, features: str, pairs: Path | None, output: Path | None, k: int,
                baselines: bool, n_boot: int, seed: int, memory_budget_mb: float | None = None) -> dict[str, Any]:
    """Run the cross-validation, write ``cv.json`` and ``report.md`` under ``output``, print the summary.

    The store is read chunk by chunk, each fold a row index set over it: the head's recipe streams its rows;
    the baselines that hold theirs load them only within ``memory_budget_mb`` (default: the recipe's
    ``phase1.memory_budget_mb``), else a ``ConfigError`` naming the budget."""
    from coala_cli.train import _labels, _open
    from coala_core.baselines.methods import cv_fitters
    from coala_core.engine.spec import HeadSpec
    from coala_core.evaluation.cv import cross_validate_pairs, summarise_cv
    from coala_core.report.cv import render_cv_report
    from storage.atomic import atomic_write_text
    from storage.heads import load_head

    if output is None:
        raise ConfigError("--output: required with --cv (cv.json and report.md)")
    store = _open(features)
    labels = _labels(store, pairs)
    if head is not None:
        h = load_head(head, expected_dim=store.dim, expected_provenance=store.provenance)
        spec, width, label = HeadSpec.build(dict(h.meta.get("config") or {})), h.width, "coala"
    else:
        spec = HeadSpec.build({"train": {"first_layer": "random", "seed": seed}})
        width, label = spec.train.random_width, "random_relu_phase2"
    fitters = cv_fitters(spec, baselines=baselines, width=width, seed=seed, provenance=dict(store.provenance),
                         dim=store.dim, head_label=label, memory_budget_mb=memory_budget_mb)

    def on_fold(rec: dict[str, Any]) -> None:
        accs = ", ".join(f"{m} {v['accuracy']:.3f}" for m, v in rec["methods"].items())
        typer.echo(f"fold {rec['fold'] + 1}/{k}: {rec['n_train']} train, {rec['n_validation']} validation, "
                   f"{rec['n_test']} held-out pairs; {accs}", err=True)

    result = cross_validate_pairs(store, labels["group_id"], fitters, k=k, seed=seed, on_fold=on_fold)
    summary = summarise_cv(result, n_boot=n_boot, seed=seed, reference=label,
                           metadata={"head": str(head), "features": features, "pairs": str(pairs),
                                     "spec": spec.model_dump(mode="json")})
    for w in summary["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    output.mkdir(parents=True, exist_ok=True)
    per_pair = {"pair_id": [str(p) for p in store.pair_ids()], "fold": result.folds.tolist(),
                **{f"{m}/{side}": rw[i].tolist() for m, rw in result.rewards.items()
                   for i, side in enumerate(("r_w", "r_l"))}}
    atomic_write_text(output / "cv.json", json.dumps({**summary, "per_pair": per_pair}, indent=1, default=float))
    report = render_cv_report(summary, title=f"Cross-validated evaluation ({k} folds)",
                              inputs={"head": str(head), "features": features, "pairs": str(pairs)})
    atomic_write_text(output / "report.md", report)
    for name, m in summary["methods"].items():
        typer.echo(f"{name}: accuracy {m['accuracy']:.4f} (95% CI {m['ci95'][0]:.4f}-{m['ci95'][1]:.4f}) "
                   f"over {summary['n_pairs']} pairs, {k}-fold group CV")
    for c in summary["comparisons"]:
        typer.echo(f"{c['a']} - {c['b']}: {c['difference']:+.4f} [{c['ci_lo']:+.4f}, {c['ci_hi']:+.4f}], "
                   f"McNemar p = {c['p_value']:.3g} ({c['only_a']} vs {c['only_b']} discordant)")
    typer.echo(f"report: {output / 'report.md'}")
    sys.stdout.flush()
    return summary
