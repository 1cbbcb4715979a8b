"""The Phase I result: convex solution, recovered network, standardisation, diagnostics, scoring.

Shapes: ``v``, ``w`` (P, d'); ``gates`` (d', P); ``theta1`` (d', m); ``theta2`` (m,); ``mean``, ``scale`` (d,);
d' = d + 1 when a bias column is used (its weight is the last row). Scoring standardises raw features with
the stored training statistics, appends the bias column, and applies the recovered network:
``relu``: f(x) = sum_j relu(x~ . theta1_j) theta2_j;  ``gated``: f(x) = sum_j 1[x~ . g_j >= 0] (x~ . theta1_j).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coala_core.errors import DimensionMismatchError
from coala_core.phase1.patterns import gate_signs, standardize_block
from coala_core.phase1.source import get_xp


@dataclass
class Phase1Result:
    """Solution and diagnostics of one Phase I solve (objectives in float64; ``objective`` is 1/n-scaled)."""

    objective: float
    objective_unscaled: float
    v: np.ndarray
    w: np.ndarray
    gates: np.ndarray
    theta1: np.ndarray
    theta2: np.ndarray
    neuron_pattern: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    program: str = "relu"
    beta: float = 0.0
    converged: bool = False
    iterations: int = 0
    cone_violation: float = 0.0
    train_accuracy: float = float("nan")
    val_accuracy: float = float("nan")
    pattern_shares: np.ndarray = field(default_factory=lambda: np.zeros(0))
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    path: list[dict[str, float]] | None = None

    @property
    def bias(self) -> bool:
        return self.theta1.shape[0] == self.mean.shape[0] + 1

    @property
    def n_active(self) -> int:
        """Number of nonzero neurons m."""
        return int(self.theta2.shape[0])

    def _standardize(self, features: Any) -> Any:
        xp = get_xp(features)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise DimensionMismatchError(
                f"features: expected shape (n, {self.mean.shape[0]}), got {tuple(features.shape)}")
        return standardize_block(features, self.mean, self.scale, self.bias, xp.float64)

    def features(self, features: Any) -> Any:
        """Hidden activations (n, m) of the recovered network on raw features (n, d): the one forward pass of
        :mod:`coala_core.engine.network` (the same as a reward head's)."""
        from coala_core.engine.network import hidden

        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise DimensionMismatchError(
                f"features: expected shape (n, {self.mean.shape[0]}), got {tuple(features.shape)}")
        return hidden(features, self.theta1, self.mean, self.scale, bias=self.bias, program=self.program,
                      gates=self.gates, pattern=self.neuron_pattern)

    def score(self, features: Any) -> Any:
        """Scores (n,) of raw features (n, d) by the recovered network."""
        xp = get_xp(features)
        return self.features(features) @ xp.asarray(self.theta2)

    def convex_score(self, features: Any) -> Any:
        """The convex model sum_i D_i X (v_i - w_i) on raw features (n, d), with D_i from the gates."""
        xp = get_xp(features)
        Xs = self._standardize(features)
        D = gate_signs(Xs, self.gates) > 0
        return (D * (Xs @ xp.asarray((self.v - self.w).T))).sum(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays for safetensors: theta1, theta2, gates, mean, scale, v, w, neuron_pattern."""
        return {
            "theta1": np.ascontiguousarray(self.theta1), "theta2": np.ascontiguousarray(self.theta2),
            "gates": np.ascontiguousarray(self.gates), "mean": np.ascontiguousarray(self.mean),
            "scale": np.ascontiguousarray(self.scale), "v": np.ascontiguousarray(self.v),
            "w": np.ascontiguousarray(self.w), "neuron_pattern": np.ascontiguousarray(self.neuron_pattern),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able scalars and the config (for head.json / tracking)."""
        return {
            "program": self.program, "beta": self.beta, "objective": self.objective,
            "objective_unscaled": self.objective_unscaled, "converged": self.converged,
            "iterations": self.iterations, "cone_violation": self.cone_violation,
            "train_accuracy": self.train_accuracy, "val_accuracy": self.val_accuracy,
            "n_active": self.n_active, "pattern_shares": [float(s) for s in self.pattern_shares],
            "seconds": self.seconds, "config": self.config, "path": self.path,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], summary: dict[str, Any] | None = None) -> Phase1Result:
        """Rebuild a scoring-capable result from :meth:`to_arrays` output (and optionally :meth:`summary`)."""
        s = summary or {}
        a = {k: np.asarray(v) for k, v in arrays.items()}
        P, d = a["gates"].shape[1], a["gates"].shape[0]
        return cls(
            objective=float(s.get("objective", float("nan"))),
            objective_unscaled=float(s.get("objective_unscaled", float("nan"))),
            v=a.get("v", np.zeros((P, d))), w=a.get("w", np.zeros((P, d))), gates=a["gates"],
            theta1=a["theta1"], theta2=a["theta2"],
            neuron_pattern=a.get("neuron_pattern", np.zeros(a["theta2"].shape[0], dtype=np.int64)).astype(np.int64),
            mean=a["mean"], scale=a["scale"], program=s.get("program", "relu"), beta=float(s.get("beta", 0.0)),
            converged=bool(s.get("converged", False)), iterations=int(s.get("iterations", 0)),
            config=dict(s.get("config", {})),
        )
