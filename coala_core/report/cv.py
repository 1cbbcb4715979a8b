"""Report sections for a cross-validated, paired comparison (:func:`coala_core.evaluation.cv.summarise_cv`)
and for degenerate-head warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def warnings_section(warnings: Sequence[str]) -> list[str]:
    """A ``## Warnings`` section (nothing when there are none)."""
    if not warnings:
        return []
    return ["## Warnings\n", *[f"- **warning:** {w}" for w in warnings], ""]


def cv_section(summary: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> list[str]:
    """Accuracy per method over all pairs (each scored out of fold) and every pair of methods compared."""
    labels = labels or {}
    k, n = summary["k"], summary["n_pairs"]
    lines = [
        f"## Cross-validated comparison ({k} folds by group, {n} pairs, {summary['n_groups']} groups)\n",
        f"Every pair is held out exactly once: each method is fit on the other {k - 1} folds (selection on "
        "validation groups inside them) and scores the held-out fold. Accuracy counts a tie as 1/2 (a head "
        "that cannot decide is at chance); intervals are 95% percentile bootstraps over groups; "
        "rewards/accuracies is TRL's strict r_w > r_l.\n",
        "| method | accuracy [95% CI] | per fold | rewards/accuracies | rewards/margins |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        label = labels.get(name, name)
        folds = ", ".join(f"{a:.3f}" for a in m["fold_accuracy"])
        lines.append(f"| {label} | {m['accuracy']:.4f} [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] | {folds} | "
                     f"{m['rewards/accuracies']:.4f} | {m['rewards/margins']:.4g} |")
    lines += ["", "Paired comparisons on the same pairs (difference A - B with its group-bootstrap 95% interval; "
              "exact McNemar p-value on the pairs exactly one method gets right):\n",
              "| A | B | A - B [95% CI] | only A right | only B right | McNemar p |", "|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        lines.append(f"| {labels.get(c['a'], c['a'])} | {labels.get(c['b'], c['b'])} | {c['difference']:+.4f} "
                     f"[{c['ci_lo']:+.4f}, {c['ci_hi']:+.4f}] | {c['only_a']} | {c['only_b']} | {_p(c['p_value'])} |")
    lines.append("")
    return lines


def render_cv_report(summary: Mapping[str, Any], *, title: str = "Cross-validated evaluation",
                     inputs: Mapping[str, Any] | None = None, labels: Mapping[str, str] | None = None) -> str:
    """The markdown of a CV run: inputs, warnings, the comparison."""
    from coala_core.report.markdown import md_table

    md = [f"# {title}\n"]
    if inputs:
        md += ["Inputs:\n", md_table([{"input": k, "value": v} for k, v in inputs.items()])]
    md += warnings_section(summary.get("warnings") or [])
    md += cv_section(summary, labels)
    rows = [{"fold": f["fold"], "train pairs": f["n_train"], "validation pairs": f["n_validation"],
             "held-out pairs": f["n_test"],
             **{f"{m} acc": v["accuracy"] for m, v in f["methods"].items()}} for f in summary["folds"]]
    md += ["## Folds\n", md_table(rows)]
    return "\n".join(md)
