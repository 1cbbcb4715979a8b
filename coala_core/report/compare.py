"""Side-by-side comparison of pipeline runs: one figure (metrics as grouped bars, Phase I beta paths
overlaid) and a self-contained HTML page with the comparison table. Pure: inputs are plain dicts."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from coala_core.report.embed import STYLE, data_uri
from coala_core.report.plots import _png, plt


def compare_png(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> bytes:
    """``runs``: dicts with ``label``, ``metrics`` (name -> value), ``beta_path`` (rows with ``beta`` and
    ``val_accuracy``) and ``chosen_beta``. Left: each metric's value per run; right: validation accuracy
    against beta for every run, chosen beta marked."""
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    shown = [m for m in metrics if any(m in r["metrics"] for r in runs)]
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(shown))
    for i, r in enumerate(runs):
        vals = [float(r["metrics"].get(m, np.nan)) for m in shown]
        left.bar(x + i * width - 0.4 + width / 2, vals, width, label=r["label"])
    left.set_xticks(x, shown, rotation=20, ha="right", fontsize=8)
    left.set(title="held-out metrics per run")
    left.legend(fontsize=7)
    for r in runs:
        rows = sorted((p for p in r.get("beta_path") or [] if "beta" in p), key=lambda p: p["beta"])
        if not rows:
            continue
        line, = right.semilogx([p["beta"] for p in rows], [p.get("val_accuracy", np.nan) for p in rows], "o-",
                               label=r["label"])
        if r.get("chosen_beta") is not None:
            right.axvline(float(r["chosen_beta"]), color=line.get_color(), lw=1, ls=":")
    right.set(xlabel="Phase I beta", ylabel="validation pairwise accuracy",
              title="Phase I beta paths (dotted: chosen beta)")
    if right.lines:
        right.legend(fontsize=7)
    return _png(fig)


def compare_html(header: Sequence[str], rows: Sequence[Sequence[str]], png: bytes, title: str) -> str:
    """The comparison table and figure as one HTML page with no external reference."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
            f"<p><img alt=\"metrics and beta paths\" src=\"{data_uri(png)}\"></p>\n</body></html>\n")
