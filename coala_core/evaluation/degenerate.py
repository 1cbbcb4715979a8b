"""Say when a head is degenerate (issue 11 item 9), instead of reporting its numbers as if it were a model.

Three symptoms, each a one-line warning that the CLI prints, the flow logs and the report lists:

* **near-constant rewards**: the head's preference probability ``sigmoid(beta * (r_w - r_l))`` stays within
  ``PROB_TOL`` of 1/2 on every pair, or more than half of the pairs are exact ties. Such a head decides
  nothing; its accuracy counts ties as 1/2 (chance), never as 0 (a zero head reads 0.5, not 0.0);
* **all selection points tied**: every candidate of a selection table (Phase II grid, Phase I beta path, a
  baseline's l2 or learning-rate grid) has the same validation accuracy, so the choice fell to the tie-break;
* **a beta path at chance**: no Phase I path point's validation accuracy leaves the 95% band of a coin,
  ``0.5 +- 1.96 * 0.5 / sqrt(n_validation)``; the selected beta is then noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PROB_TOL = 1e-3  # |p - 1/2| below this on every pair: the head does not prefer anything
TIE_SHARE = 0.5  # more than this share of exact ties: the head does not rank most pairs
Z95 = 1.959963984540054


def reward_warnings(r_w: np.ndarray, r_l: np.ndarray, beta: float = 1.0, *, name: str = "head") -> list[str]:
    """Warnings about the rewards of one head on a set of pairs (empty when none applies)."""
    r_w, r_l = np.asarray(r_w, np.float64).ravel(), np.asarray(r_l, np.float64).ravel()
    if r_w.size == 0:
        return []
    out = []
    margin = float(beta) * (r_w - r_l)
    p_dev = float(np.max(np.abs(0.5 * np.tanh(0.5 * margin))))  # max |sigmoid(m) - 1/2|
    ties = float(np.mean(r_w == r_l))
    if ties > TIE_SHARE:
        out.append(f"{name}: degenerate head: {ties:.0%} of {r_w.size} pairs are exact ties (ties count 1/2, "
                   "i.e. chance)")
    elif p_dev < PROB_TOL:
        scale = float(np.max(np.abs(np.concatenate([r_w, r_l]))))
        out.append(f"{name}: degenerate head: near-constant rewards (|reward| <= {scale:.2g}, "
                   f"|beta * margin| <= {float(np.max(np.abs(margin))):.2g}; every preference probability is "
                   f"within {p_dev:.1e} of 1/2)")
    return out


def tied_selection_warning(table: Sequence[Mapping[str, Any]], what: str, key: str = "val_accuracy") -> list[str]:
    """A warning when every candidate of ``table`` (two or more) has the same ``key``."""
    vals = [float(v) for row in table if (v := row.get(key)) is not None and np.isfinite(v)]
    if len(vals) >= 2 and max(vals) == min(vals):
        return [f"{what}: all {len(vals)} selection points tied at validation accuracy {vals[0]:.4f}; "
                "the choice fell to the tie-break"]
    return []


def chance_path_warning(path: Sequence[Mapping[str, Any]], n_validation: int | None) -> list[str]:
    """A warning when no Phase I path point's validation accuracy leaves the coin's 95% band."""
    accs = [float(a) for row in path if (a := row.get("val_accuracy")) is not None and np.isfinite(a)]
    if not accs or not n_validation:
        return []
    half = Z95 * 0.5 / np.sqrt(n_validation)
    if max(abs(a - 0.5) for a in accs) <= half:
        return [f"Phase I beta path: validation accuracy never leaves chance on {n_validation} pairs "
                f"(range {min(accs):.3f}-{max(accs):.3f}, chance band 0.5 +- {half:.3f}); the selected beta is noise"]
    return []


def training_warnings(training: Mapping[str, Any] | None, n_validation: int | None = None) -> list[str]:
    """Warnings from a head's training record (``head.json`` ``training``: phase1_path, phase2_selection)."""
    if not training:
        return []
    out: list[str] = []
    path = training.get("phase1_path") or []
    out += tied_selection_warning(path, "Phase I beta path")
    out += chance_path_warning(path, n_validation or training.get("n_validation"))
    out += tied_selection_warning(training.get("phase2_selection") or [], "Phase II grid")
    return out


def head_warnings(meta: Mapping[str, Any] | None, r_w: np.ndarray | None = None, r_l: np.ndarray | None = None,
                  beta: float = 1.0, *, name: str = "head", n_validation: int | None = None) -> list[str]:
    """All warnings about a head: its training record (``meta['training']``) and, when given, its rewards."""
    out = training_warnings((meta or {}).get("training"), n_validation)
    if r_w is not None and r_l is not None:
        out += reward_warnings(r_w, r_l, beta, name=name)
    return out
