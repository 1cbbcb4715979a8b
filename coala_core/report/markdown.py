"""The evaluation report: numbers, plots and configuration in one markdown file, plus its PNG files.

:func:`render_report` returns ``{file name: bytes}`` (``report.md``, ``metrics.json`` and the PNGs); the caller
writes them through ``storage``. Nothing here touches the file system.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from coala_core.evaluation.evaluate import Evaluation
from coala_core.evaluation.metrics import monotonicity
from coala_core.report.plots import beta_path_png, margin_histograms_png, reliability_png, training_curves_png


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(text: str) -> str:
    """A table cell: a ``|`` inside it (a method named ``features|head``) escaped, so it stays one cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of dict rows (columns default to the first row's keys)."""
    if not rows:
        return "_(none)_\n"
    cols = list(columns or rows[0].keys())
    out = ["| " + " | ".join(_cell(str(c)) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(_fmt(r.get(c))) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _metrics_section(name: str, ev: Evaluation) -> list[str]:
    m = ev.metrics
    lo, hi = ev.ci["accuracy"]
    lines = [
        f"### {name} ({int(m['n_pairs'])} pairs)\n",
        f"- **pairwise accuracy: {m['accuracy']:.4f}** (95% bootstrap interval {lo:.4f} to {hi:.4f}; a tie "
        "counts 1/2, so a head that cannot decide reads 0.5); on human-labelled pairs this is the "
        "human-consistency figure",
        f"- paper's reward margin, mean sigmoid(r_w - r_l): {m['sigmoid_margin']:.4f} "
        f"({ev.ci['sigmoid_margin'][0]:.4f} to {ev.ci['sigmoid_margin'][1]:.4f})",
        f"- TRL names: rewards/chosen {m['rewards/chosen']:.4g}, rewards/rejected {m['rewards/rejected']:.4g}, "
        f"rewards/margins {m['rewards/margins']:.4g} ({ev.ci['rewards/margins'][0]:.4g} to "
        f"{ev.ci['rewards/margins'][1]:.4g}), rewards/accuracies {m['rewards/accuracies']:.4f}. These margins "
        "are head reward differences, not DPO's log-ratio to a reference model.",
        f"- calibration of p = sigmoid({ev.beta:g} (r_w - r_l)): ECE {m['ece']:.4f}, log loss {m['log_loss']:.4f}",
        "",
    ]
    if ev.by_source:
        rows = [{"source": s, **{k: v[k] for k in ("n_pairs", "accuracy", "sigmoid_margin", "ece")}}
                for s, v in ev.by_source.items()]
        lines += ["Per source:\n", md_table(rows)]
    return lines


def render_report(
    *,
    evaluations: Mapping[str, Evaluation],
    head_meta: Mapping[str, Any],
    baselines: Sequence[Mapping[str, Any]] | None = None,
    title: str = "COALA reward head: evaluation report",
    inputs: Mapping[str, Any] | None = None,
    warnings: Sequence[str] | None = None,
    cv: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """Build ``report.md``, ``metrics.json`` and the plots from evaluations per split and the head's metadata
    (``head.json``: config, Phase I beta path and chosen beta, Phase II selection table and history).

    Degenerate-head warnings (:mod:`coala_core.evaluation.degenerate`) are computed from the head's training
    record and the evaluated rewards, added to ``warnings``, and listed first; ``cv`` (a
    :func:`coala_core.evaluation.cv.summarise_cv` summary) adds the cross-validated comparison."""
    from coala_core.evaluation.degenerate import head_warnings
    from coala_core.report.cv import cv_section, warnings_section

    files: dict[str, bytes] = {}
    md = [f"# {title}\n"]
    if inputs:
        md += ["Inputs:\n", md_table([{"input": k, "value": v} for k, v in inputs.items()])]
    train = head_meta.get("training", {})
    found = list(warnings or []) + head_warnings(head_meta)
    for name, ev in evaluations.items():
        found += head_warnings(None, ev.r_w, ev.r_l, ev.beta, name=f"head on {name}")
    if cv:
        found += [w for w in cv.get("warnings", []) if w not in found]
    md += warnings_section(found)
    if cv:
        md += cv_section(cv)
    md += ["## Held-out metrics\n"]
    for name, ev in evaluations.items():
        md += _metrics_section(name, ev)
        safe = name.replace("/", "_")
        files[f"margins_{safe}.png"] = margin_histograms_png(ev.r_w, ev.r_l, f"{name} pairs")
        files[f"reliability_{safe}.png"] = reliability_png(ev.reliability, ev.metrics["ece"], ev.beta)
        md += [f"![margins {name}](margins_{safe}.png)\n", f"![reliability {name}](reliability_{safe}.png)\n",
               "Reliability table:\n", md_table(ev.reliability, ["lo", "hi", "count", "confidence", "accuracy"])]
    if baselines:
        md += ["## Baselines on the same features\n",
               "Each head is fit on the training split and chosen on the validation split; the same test pairs.\n",
               md_table(baselines)]
    path = train.get("phase1_path") or []
    md += ["## Model selection\n", "### Phase I beta path (selected on the validation split)\n"]
    if path:
        files["beta_path.png"] = beta_path_png(path, train.get("phase1_beta"))
        md += [f"Chosen Phase I beta: **{_fmt(train.get('phase1_beta'))}**\n", md_table(path),
               "![beta path](beta_path.png)\n"]
    else:
        md += [f"No beta path recorded (first layer: {train.get('first_layer', 'unknown')}).\n"]
    selection = train.get("phase2_selection") or []
    md += ["### Phase II: beta, gamma and l2 on the same validation split\n"]
    md += [md_table(selection) if selection else "Fixed by the configuration (no grid search).\n"]
    summary = train.get("phase2_summary", {})
    history = train.get("phase2_history") or []
    if summary:
        md += ["## Phase II solve\n", md_table([summary])]
    if history:
        files["phase2_curves.png"] = training_curves_png(history, summary.get("solver", ""))
        md += ["![Phase II curves](phase2_curves.png)\n"]
        mono = {k: monotonicity([h[k] for h in history if k in h])
                for k in ("train/sigmoid_margin", "val/sigmoid_margin", "val/accuracy") if any(k in h for h in history)}
        mono["loss (decreasing)"] = monotonicity([h["loss"] for h in history], increasing=False)
        md += ["Monotonicity over iterations (share of steps in the expected direction, Spearman rho with the "
               "iteration, largest reversal):\n", md_table([{"curve": k, **v} for k, v in mono.items()])]
    md += ["## Configuration\n", "```yaml\n" + yaml.safe_dump(dict(head_meta.get("config", {})), sort_keys=True)
           + "```\n", "Feature provenance:\n", "```yaml\n"
           + yaml.safe_dump(dict(head_meta.get("feature_provenance", {})), sort_keys=True) + "```\n"]
    files["report.md"] = "\n".join(md).encode("utf-8")
    metrics: dict[str, Any] = {name: ev.to_dict() for name, ev in evaluations.items()}
    if baselines:
        metrics["baselines"] = list(baselines)
    metrics["warnings"] = found
    if cv:
        metrics["cv"] = dict(cv)
    files["metrics.json"] = json.dumps(metrics, indent=2, sort_keys=True, default=float).encode("utf-8")
    return files
