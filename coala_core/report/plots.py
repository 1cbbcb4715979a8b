"""Report plots as PNG bytes (matplotlib, Agg backend; the caller decides where the bytes go).

Every margin plot says which margin it shows: a COALA margin is the head's reward difference r_w - r_l (or its
sigmoid, the paper's "reward margin"), not DPO's log-ratio to a reference model.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from coala_core.evaluation.metrics import monotonicity  # noqa: E402


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [h for h in history if key in h]
    return np.array([h["iteration"] for h in rows]), np.array([h[key] for h in rows])


def training_curves_png(history: Sequence[Mapping[str, float]], solver: str = "") -> bytes:
    """Four panels over iterations: loss, gradient norm, sigmoid margin and pairwise accuracy (train and
    held-out), the margin panel titled with its monotonicity statistic."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    it, loss = _series(history, "loss")
    axes[0, 0].plot(it, loss, color="black")
    axes[0, 0].set(title="Phase II training loss", xlabel="iteration", ylabel="loss")
    it, g = _series(history, "grad_norm")
    axes[0, 1].semilogy(it, np.maximum(g, 1e-300), color="black")
    axes[0, 1].set(title="gradient norm (optimality certificate)", xlabel="iteration", ylabel="||grad||_2")
    for split, style in (("train", "-"), ("val", "--")):
        it, sm = _series(history, f"{split}/sigmoid_margin")
        if sm.size:
            mono = monotonicity(sm)
            axes[1, 0].plot(it, sm, style, label=f"{split} (monotone steps {mono['share_monotone']:.0%})")
        it, acc = _series(history, f"{split}/accuracy")
        if acc.size:
            axes[1, 1].plot(it, acc, style, label=split)
    axes[1, 0].set(title="COALA reward margin: mean sigmoid(r_w - r_l)", xlabel="iteration", ylabel="margin")
    axes[1, 1].set(title="pairwise accuracy", xlabel="iteration", ylabel="accuracy")
    for ax in axes[1]:
        ax.legend(fontsize=8)
    fig.suptitle(f"Phase II ({solver})" if solver else "Phase II")
    return _png(fig)


def margin_histograms_png(r_w: np.ndarray, r_l: np.ndarray, title: str = "") -> bytes:
    """Rewards of chosen and rejected responses (overlaid) and the per-pair margin r_w - r_l."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.histogram_bin_edges(np.concatenate([r_w, r_l]), bins=30)
    axes[0].hist(r_w, bins=bins, alpha=0.6, label="chosen r_w")
    axes[0].hist(r_l, bins=bins, alpha=0.6, label="rejected r_l")
    axes[0].set(title="head rewards", xlabel="reward r = theta2 . x~", ylabel="pairs")
    axes[0].legend(fontsize=8)
    margin = np.asarray(r_w) - np.asarray(r_l)
    axes[1].hist(margin, bins=30, color="gray")
    axes[1].axvline(0.0, color="red", lw=1)
    axes[1].set(title=f"COALA margin r_w - r_l ({np.mean(margin > 0):.1%} > 0)", xlabel="margin", ylabel="pairs")
    if title:
        fig.suptitle(title)
    return _png(fig)


def reliability_png(table: Sequence[Mapping[str, float]], ece: float, beta: float) -> bytes:
    """Reliability diagram: accuracy against confidence per bin, with bin counts."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    rows = [r for r in table if r["count"]]
    conf = [r["confidence"] for r in rows]
    acc = [r["accuracy"] for r in rows]
    ax.plot([0.5, 1.0], [0.5, 1.0], ":", color="gray", label="perfect calibration")
    ax.plot(conf, acc, "o-", label=f"head (ECE {ece:.3f})")
    for r in rows:
        ax.annotate(str(r["count"]), (r["confidence"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlim=(0.5, 1.0), ylim=(0.0, 1.0), xlabel=f"confidence max(p, 1-p), p = sigmoid({beta:g} (r_w - r_l))",
           ylabel="accuracy", title="reliability (held-out pairs)")
    ax.legend(fontsize=8)
    return _png(fig)


def beta_path_png(path: Sequence[Mapping[str, Any]], chosen_beta: float | None) -> bytes:
    """Phase I model selection: train and validation pairwise accuracy against beta (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = sorted(path, key=lambda r: r["beta"])
    betas = [r["beta"] for r in rows]
    for key, style in (("train_accuracy", "o-"), ("val_accuracy", "s--")):
        vals = [r.get(key, np.nan) for r in rows]
        ax.semilogx(betas, vals, style, label=key.replace("_", " "))
    if chosen_beta is not None:
        ax.axvline(chosen_beta, color="red", lw=1, label=f"chosen beta = {chosen_beta:.3g}")
    ax.set(xlabel="Phase I beta (group-lasso weight)", ylabel="pairwise accuracy", title="Phase I beta path")
    ax.legend(fontsize=8)
    return _png(fig)
