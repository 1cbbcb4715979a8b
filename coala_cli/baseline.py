"""``coala baseline``: what the COALA head is measured against, on the same pairs.

* ``--method heads`` (default): the linear Bradley-Terry head and the AdamW two-layer ReLU net on the same
  feature store, fit on the training split and chosen on the validation split, compared with a COALA head
  (``--head``) on the held-out split, plus the zero-shot likelihood scores when the store has them. Without
  ``--head`` the first row is a random ReLU first layer with a Phase II refit, labelled as such (it is not
  COALA). ``--cv K`` compares them by K-fold group cross-validation instead (every pair held out once).
* ``--method dpo|orpo``: fine-tunes the language model with TRL on the training split (``--config YAML``:
  the ``llm_baseline`` section, or the whole file, holds :class:`PreferenceTuneConfig`), scores the held-out
  pairs by the implicit reward, counts its compute (analytic FLOPs, wall time, peak memory) and tracks the
  run in the pipeline's MLflow experiment (TRL's metric names); per-pair rewards go to ``scores.parquet``
  for paired comparisons. Trainer checkpoints go to ``--output``/checkpoints while the epoch is unfinished: a
  run that was cut, or stopped by ``--max-train-seconds``, is continued by the same command (another
  training's checkpoints there are an error); one command at a time per output directory (a lock).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from coala_cli._common import handle_errors
from coala_core.errors import ConfigError, DataError

RANDOM_LABEL = "random_relu_phase2"  # a random ReLU first layer + Phase II: not a COALA head


def _heads_table(store: Any, labels: dict[str, np.ndarray], head: Any, head_label: str, rows: np.ndarray, seed: int,
                 n_boot: int) -> list[dict[str, Any]]:
    from coala_cli.train import _materialize, _rows
    from coala_core.baselines import compare_heads, comparison_table, fit_baselines
    from coala_core.baselines.zero_shot import zero_shot_scorers
    from coala_core.engine.sources import SubsetPairs

    Cw, Cl = _materialize(SubsetPairs(store, _rows(labels, "train")))
    Vw, Vl = _materialize(SubsetPairs(store, _rows(labels, "validation")))
    heads = {head_label: head, **fit_baselines(Cw, Cl, Vw, Vl, width=head.width, seed=seed),
             **zero_shot_scorers(store.provenance, store.dim)}
    Tw, Tl = _materialize(SubsetPairs(store, rows))
    evals = compare_heads(heads, Tw, Tl, groups=labels["group_id"][rows], n_boot=n_boot, seed=seed)
    table = comparison_table(evals)
    for row in table:
        h = heads[row["head"]]
        row["selected"] = (f"lr={h.lr:g}, epoch={h.epoch}" if hasattr(h, "lr") else
                           f"l2={h.l2:g}" if hasattr(h, "l2") else
                           "nothing fit (zero-shot)" if row["head"].startswith("zero_shot") else
                           "Phase II on validation (random first layer)" if row["head"] == RANDOM_LABEL else
                           "Phase I/II on validation")
    return table


def _heads(features: str | None, pairs: Path, head: Path | None, output: Path | None, split: str, n_boot: int,
           seed: int, cv: int | None) -> None:
    from coala_cli.train import _labels, _open, _rows
    from coala_core.engine.fit import fit_head
    from coala_core.engine.sources import SubsetPairs
    from coala_core.engine.spec import HeadSpec
    from coala_core.report import md_table
    from storage.atomic import atomic_write_text
    from storage.heads import load_head

    if features is None:
        raise ConfigError("--features: required with --method heads")
    if cv is not None:
        from coala_cli.cv import evaluate_cv

        evaluate_cv(head=head, features=features, pairs=pairs, output=output, k=cv, baselines=True, n_boot=n_boot,
                    seed=seed)
        return
    store = _open(features)
    labels = _labels(store, pairs)
    if head is not None:
        h, label = load_head(head, expected_dim=store.dim, expected_provenance=store.provenance), "coala"
    else:
        spec = HeadSpec.build({"train": {"first_layer": "random", "seed": seed}})
        h = fit_head(SubsetPairs(store, _rows(labels, "train")), SubsetPairs(store, _rows(labels, "validation")),
                     spec).head
        label = RANDOM_LABEL
    table = _heads_table(store, labels, h, label, _rows(labels, split), seed, n_boot)
    text = md_table(table)
    typer.echo(text)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "comparison.json", json.dumps(table, indent=2))
        atomic_write_text(output / "comparison.md", f"# Heads on the same features ({split} split)\n\n{text}")


def _tune_config(method: str, config: Path | None, overrides: dict[str, Any]) -> Any:
    from coala_core.config import check_sections, load_yaml
    from coala_core.llm_baselines import PreferenceTuneConfig

    data: dict[str, Any] = {}
    if config is not None:
        raw = load_yaml(config)
        if "llm_baseline" in raw:
            check_sections(raw, config)  # a misspelled section beside it is an error, never ignored
        data = dict(raw.get("llm_baseline") or {}) if "llm_baseline" in raw else dict(raw)
    if "method" in data and data["method"] != method:
        raise ConfigError(f"--config {config}: method {data['method']!r} differs from --method {method}")
    data["method"] = method
    data.update({k: v for k, v in overrides.items() if v is not None})
    return PreferenceTuneConfig.build(data)


def _split_rows(pairs: Path, split: str, limit: int | None) -> list[dict[str, Any]]:
    from storage.pairs import read_pairs

    rows = [r for r in read_pairs(pairs).to_pylist() if r["split"] == split]
    if not rows:
        raise DataError(f"{pairs}: no pairs in the {split!r} split")
    return rows[:limit] if limit else rows


def _track(run: Any, workdir: Path, experiment: str, pairs: Path, output: Path) -> str:
    """Log the run to MLflow (the pipeline's experiment): params, TRL's per-step history, held-out metrics
    under TRL's names, compute, and the output directory as artifacts. Returns the run id."""
    from mlflow.entities import RunStatus

    from storage.pairs import read_digest
    from tasks.tracking import client_for, ensure_experiment, params_from_config, start_run

    client = client_for(workdir)
    exp = ensure_experiment(client, experiment, workdir)
    tracked = start_run(client, exp, f"baseline-{run.method}", tags={"coala.stage": "baseline",
                                                                     "coala.method": run.method,
                                                                     "coala.label": run.label})
    try:
        tracked.log_params({**params_from_config({"llm_baseline": run.config.to_dict()}),
                            "model.id": run.model["id"], "model.revision": run.model["revision"],
                            "n_test_pairs": len(run.pair_ids)})
        tracked.log_history([{k: v for k, v in h.items() if k != "epoch"} for h in run.log_history
                             if "step" in h and "train_runtime" not in h], prefix="train/", step_key="step")
        s = run.summary()
        test = {f"test/{k}": v for k, v in run.trl_metrics.items()}
        test.update({"test/accuracy": s["accuracy"], "test/accuracy_ci_lo": s["ci95"][0],
                     "test/accuracy_ci_hi": s["ci95"][1]})
        compute = {f"compute/{name}/{k}": v for name, st in s["compute"].items() for k, v in st.items()
                   if k in ("seconds", "tflops", "tokens", "peak_rss_gib")}
        tracked.log_metrics({**test, **compute, "compute/total_tflops": s["total_tflops"],
                             "compute/total_seconds": s["total_seconds"], "compute/peak_rss_gib": s["peak_rss_gib"],
                             "train/steps": float(s["steps"] or 0)})
        digest = read_digest(pairs)
        if digest:
            tracked.log_dataset(pairs, name=Path(pairs).stem, digest=digest, context="baseline")
        for name in ("metrics.json", "scores.parquet", "report.md"):  # not the checkpoints of an unfinished epoch
            tracked.log_artifact(output / name, "baseline")
        tracked.end(RunStatus.to_string(RunStatus.FINISHED))
    except BaseException:
        tracked.end(RunStatus.to_string(RunStatus.FAILED))
        raise
    return tracked.run_id


def _tuned(method: str, pairs: Path, config: Path | None, output: Path | None, model: str, split: str,
           max_tokens: int | None, max_train_seconds: float | None, limit: int | None, n_boot: int, seed: int,
           track: bool, workdir: Path, experiment: str) -> None:
    from coala_core.llm_baselines.run import run_preference_baseline
    from coala_core.report import md_table
    from storage.atomic import atomic_write_text
    from storage.heads import write_scores
    from storage.locks import file_lock
    from storage.tune_checkpoints import TuneCheckpoints

    if output is None:
        raise ConfigError(f"--output: required with --method {method} (metrics.json, scores.parquet, report.md)")
    cfg = _tune_config(method, config, {"max_tokens": max_tokens, "max_seconds": max_train_seconds, "seed": seed})
    train_rows, test_rows = _split_rows(pairs, "train", limit), _split_rows(pairs, split, limit)
    output.mkdir(parents=True, exist_ok=True)
    checkpoints = TuneCheckpoints(output / "checkpoints")  # kept only while the epoch is unfinished
    with file_lock(output / ".coala-baseline.lock", purpose=f"coala baseline --method {method}", timeout=0):
        run = run_preference_baseline(train_rows, test_rows, cfg, model=model, n_boot=n_boot, seed=seed,
                                      checkpoints=checkpoints)
        s = run.summary()
        write_scores(output / "scores.parquet", {"pair_id": np.asarray(run.pair_ids, dtype=object),
                                                "reward_chosen": run.r_w, "reward_rejected": run.r_l,
                                                "margin": run.r_w - run.r_l})
        atomic_write_text(output / "metrics.json", json.dumps({**s, "log_history": run.log_history}, indent=2,
                                                              default=float))
        stages = [{"stage": name, **{k: st[k] for k in ("seconds", "tflops", "tokens", "peak_rss_gib")}}
                  for name, st in s["compute"].items()]
        partial = (f" (stopped after {s['steps']} of {s['max_steps']} steps by the wall-time limit: a partial epoch; "
                   f"the same command continues it from {checkpoints.root})" if s["stopped_early"] else "")
        resumed = s["compute"][f"{method}_train"].get("resumed_from_step", 0)
        if resumed:
            partial += f" (resumed from the checkpoint of step {resumed})"
        report = [f"# {run.label}\n",
                  f"Trained on {len(train_rows)} {'train'} pairs, {s['steps']} optimiser steps{partial}; "
                  f"held-out {split} pairs: {len(run.pair_ids)}.\n",
                  f"- **accuracy {s['accuracy']:.4f}** [95% group bootstrap {s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}] "
                  "(a tie counts 1/2)",
                  "- TRL names on the held-out pairs: " + ", ".join(f"{k} {v:.4g}" for k, v in run.trl_metrics.items()),
                  "", "Compute (FLOPs analytic: forward 2NT, backward 4NT, DPO's reference forward 2NT):\n",
                  md_table(stages)]
        atomic_write_text(output / "report.md", "\n".join(report))
        if not s["stopped_early"]:
            checkpoints.remove()
        run_id = _track(run, workdir, experiment, pairs, output) if track else None
        typer.echo(f"{method}: {len(run.pair_ids)} {split} pairs, accuracy {s['accuracy']:.4f} "
                   f"(95% CI {s['ci95'][0]:.4f}-{s['ci95'][1]:.4f}); {s['steps']} steps{partial}; "
                   f"{s['total_tflops']:.3f} TFLOPs, {s['total_seconds']:.1f} s, peak RSS {s['peak_rss_gib']:.2f} GiB"
                   + (f"; MLflow run {run_id}" if run_id else "") + f"; report: {output / 'report.md'}")


@handle_errors
def baseline(
    pairs: Path = typer.Option(..., "--pairs", help="pairs Parquet with train/validation/test splits"),
    method: str = typer.Option("heads", "--method", help="heads (same-feature heads), dpo or orpo (TRL fine-tuning)"),
    features: str | None = typer.Option(None, "--features", help="feature store (--method heads)", show_default="none"),
    head: Path | None = typer.Option(None, "--head", help="a COALA head to compare", show_default="none: a random ReLU layer + Phase II, labelled so"),
    config: Path | None = typer.Option(None, "--config", help="YAML: the llm_baseline section (or the whole file) for dpo/orpo", show_default="none"),
    output: Path | None = typer.Option(None, "--output", help="output directory", show_default="none: print only (heads)"),
    split: str = typer.Option("test", help="held-out split to score"),
    cv: int | None = typer.Option(None, "--cv", help="--method heads: K-fold group cross-validation over all pairs", show_default="none: no CV"),
    model: str = typer.Option("default", help="dpo/orpo: 'default' (bundled SmolLM2-135M) or a model directory"),
    max_tokens: int | None = typer.Option(None, help="dpo/orpo: token budget per sequence", show_default="the config's, else 128"),
    max_train_seconds: float | None = typer.Option(None, help="dpo/orpo: stop training after this wall time (partial epoch, reported)", show_default="none: the whole epoch"),
    limit: int | None = typer.Option(None, help="dpo/orpo: first N pairs of each split only (smoke runs)", show_default="none: all"),
    track: bool = typer.Option(True, "--track/--no-track", help="dpo/orpo: log the run to MLflow"),
    workdir: Path = typer.Option(Path(".coala"), help="work folder of the embedded MLflow store"),
    experiment: str = typer.Option("coala", help="MLflow experiment (the pipeline's by default)"),
    n_boot: int = typer.Option(1000, help="bootstrap resamples for the 95% intervals"),
    seed: int = typer.Option(0),
) -> None:
    """Baselines on the same pairs: same-feature heads (linear BT, AdamW net, zero-shot), or DPO/ORPO via TRL."""
    if method == "heads":
        _heads(features, pairs, head, output, split, n_boot, seed, cv)
    elif method in ("dpo", "orpo"):
        _tuned(method, pairs, config, output, model, split, max_tokens, max_train_seconds, limit, n_boot, seed,
               track, workdir, experiment)
    else:
        raise ConfigError(f"--method: {method!r} is not one of heads, dpo, orpo")


def register(app: typer.Typer) -> None:
    """Add ``baseline`` to the root app."""
    app.command("baseline")(baseline)
