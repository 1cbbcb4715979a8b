"""The training record of a head: what ``head.json`` says about how the head was made.

One record, built by the engine in the same way whether ``coala train`` fits both phases in one process or
the pipeline fits them in two cached tasks (the Phase II task rebuilds the Phase I part from the Phase I
head's ``head.json``). :meth:`TrainingRecord.head_json` gives the ``config``, ``metrics`` and ``training``
sections that :func:`storage.heads.save_head` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from coala_core.engine.spec import HeadSpec


@dataclass(frozen=True)
class TrainingRecord:
    """Spec, Phase I selection (beta path, summary), Phase II selection (summary, grid, history), compute."""

    spec: HeadSpec
    first_layer: str = "phase1"
    phase1_beta: float | None = None
    phase1_path: list[dict[str, Any]] = field(default_factory=list)
    phase1_summary: dict[str, Any] = field(default_factory=dict)
    phase1_history: dict[str, list[float]] = field(default_factory=dict)
    phase2_summary: dict[str, Any] = field(default_factory=dict)
    phase2_selection: list[dict[str, Any]] = field(default_factory=list)
    phase2_history: list[dict[str, float]] = field(default_factory=list)
    compute: dict[str, float] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        """``phase1`` until Phase II has run, then ``phase2``."""
        return "phase2" if self.phase2_summary else "phase1"

    def validation_accuracy(self) -> float | None:
        """Validation pairwise accuracy of the head as shipped (after Phase II when it ran)."""
        val = [h["val/accuracy"] for h in self.phase2_history if "val/accuracy" in h]
        if val:
            return float(val[-1])
        acc = self.phase1_summary.get("val_accuracy")
        return None if acc is None else float(acc)

    def with_phase2(self, spec: HeadSpec, summary: dict[str, Any], selection: list[dict[str, Any]],
                    history: list[dict[str, float]], compute: dict[str, float]) -> TrainingRecord:
        return replace(self, spec=spec, phase2_summary=summary, phase2_selection=selection, phase2_history=history,
                       compute={**self.compute, **compute})

    def training(self) -> dict[str, Any]:
        """The ``training`` section of head.json (also what the report reads)."""
        return {
            "first_layer": self.first_layer, "phase": self.phase, "phase1_beta": self.phase1_beta,
            "phase1_path": self.phase1_path, "phase1_summary": self.phase1_summary,
            "phase1_history": self.phase1_history, "phase2_summary": self.phase2_summary,
            "phase2_selection": self.phase2_selection, "phase2_history": self.phase2_history,
            "compute": self.compute,
        }

    def metrics(self) -> dict[str, Any]:
        """Headline metrics: validation accuracy of the shipped head and the last phase's summary."""
        last = self.phase2_summary if self.phase2_summary else {
            k: v for k, v in self.phase1_summary.items() if not isinstance(v, list | dict)}
        return {"val_accuracy": self.validation_accuracy(), **last}

    def head_json(self) -> dict[str, Any]:
        """Keyword arguments of :func:`storage.heads.save_head` besides the head and the provenance."""
        return {"config": self.spec.to_dict(), "metrics": self.metrics(), "extra": {"training": self.training()}}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TrainingRecord:
        """The record stored in a head's ``head.json`` (as parsed by ``storage.heads.load_head``)."""
        t = dict(meta.get("training") or {})
        return cls(
            spec=HeadSpec.build(meta.get("config") or {}),
            first_layer=str(t.get("first_layer", "phase1")), phase1_beta=t.get("phase1_beta"),
            phase1_path=list(t.get("phase1_path") or []), phase1_summary=dict(t.get("phase1_summary") or {}),
            phase1_history=dict(t.get("phase1_history") or {}),
            phase2_summary=dict(t.get("phase2_summary") or {}),
            phase2_selection=list(t.get("phase2_selection") or []),
            phase2_history=list(t.get("phase2_history") or []), compute=dict(t.get("compute") or {}),
        )
