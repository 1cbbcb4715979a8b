"""The reward head: a frozen Phase I first layer and a Phase II output layer.

For pooled LM features ``f`` (n, d) (numpy or cupy) the head computes, through the one forward pass of
:mod:`coala_core.engine.network`, z = (f - mean) / scale, with a trailing column of ones
when ``bias`` (so z is (n, d') with d' = d + bias), and then

    relu program:   x~ = relu(z @ theta1)                                  (n, m)
    gated program:  x~ = 1[z @ gates[:, pattern] >= 0] * (z @ theta1)      (n, m)
    linear term:    x~ = [x~ | z[:, :d]]                                   (n, m + d)   when ``linear``
    reward:         r  = x~ @ theta2                                       (n,)

``gates`` (d', P) are the Phase I gate vectors (kept so activation patterns on new data can be recomputed),
``pattern`` (m,) the gate index of each neuron;
``v`` and ``w`` are the optional convex-form Phase I weights. ``beta`` is the Phase II temperature: the head's
preference probability for a pair is ``sigmoid(beta * (r_w - r_l))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coala_core.engine.backend import get_xp
from coala_core.engine.network import hidden
from coala_core.errors import DimensionMismatchError, NonFiniteError


@dataclass(frozen=True)
class RewardHead:
    theta1: np.ndarray  # (d', m)
    theta2: np.ndarray  # (m,), or (m + d,) with the linear term
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    gates: np.ndarray  # (d', P)
    beta: float = 1.0
    program: str = "relu"
    bias: bool = False
    pattern: np.ndarray | None = None  # (m,) int64
    v: np.ndarray | None = None
    w: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    linear: bool = False  # Phase II's linear term: theta2's last d entries weigh the standardised features

    def __post_init__(self) -> None:
        dp, m = self.theta1.shape if self.theta1.ndim == 2 else (-1, -1)
        d = dp - int(self.bias)
        k = m + d * int(self.linear)
        checks = {
            "theta1": (self.theta1.ndim == 2, f"(d', m), got shape {self.theta1.shape}"),
            "theta2": (self.theta2.shape == (k,), f"({k},), got {self.theta2.shape}"),
            "mean": (self.mean.shape == (d,), f"({d},), got {self.mean.shape}"),
            "scale": (self.scale.shape == (d,), f"({d},), got {self.scale.shape}"),
            "gates": (self.gates.ndim == 2 and self.gates.shape[0] == dp, f"({dp}, P), got {self.gates.shape}"),
            "program": (self.program in ("relu", "gated"), f"'relu' or 'gated', got {self.program!r}"),
        }
        if self.program == "gated" or self.pattern is not None:
            ok = (
                self.pattern is not None and self.pattern.shape == (m,)
                and bool(np.all((self.pattern >= 0) & (self.pattern < self.gates.shape[1])))
            )
            checks["pattern"] = (ok, f"({m},) gate indices in [0, {self.gates.shape[1]})")
        for name, (ok, msg) in checks.items():
            if not ok:
                raise DimensionMismatchError(f"RewardHead.{name}: expected shape {msg}")
        for name in ("theta1", "theta2", "mean", "scale"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise NonFiniteError(f"RewardHead.{name}: contains NaN or infinite values")

    @property
    def dim(self) -> int:
        """d, the width of the LM features the head reads."""
        return int(self.mean.shape[0])

    @property
    def width(self) -> int:
        """m, the number of hidden neurons."""
        return int(self.theta1.shape[1])

    @property
    def n_hidden(self) -> int:
        """The width of ``hidden``: m, plus d with the linear term (the length of theta2)."""
        return self.width + self.dim * int(self.linear)

    def hidden(self, features: Any) -> Any:
        """The frozen first layer ``x~`` (n, m), (n, m + d) with the linear term, float64, of pooled features
        (n, d), numpy or cupy (one forward pass for every head: :func:`coala_core.engine.network.hidden`)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"features: expected shape (n, {self.dim}) for this head, got {tuple(features.shape)}"
            )
        return hidden(features, self.theta1, self.mean, self.scale, bias=self.bias, program=self.program,
                      gates=self.gates, pattern=self.pattern, linear=self.linear)

    def score(self, features: Any) -> Any:
        """Rewards ``r`` (n,) for pooled features (n, d) (on the features' backend)."""
        xp = get_xp(features)
        return self.hidden(features) @ xp.asarray(self.theta2)

    def with_theta2(self, theta2: np.ndarray, beta: float, **meta: Any) -> RewardHead:
        return RewardHead(
            theta1=self.theta1, theta2=np.asarray(theta2, dtype=np.float64), mean=self.mean,
            scale=self.scale, gates=self.gates, beta=float(beta), program=self.program, bias=self.bias,
            pattern=self.pattern, v=self.v, w=self.w, meta={**self.meta, **meta}, linear=self.linear,
        )

    def with_linear_term(self) -> RewardHead:
        """The same network with the linear term switched on, its d new output weights zero (scores unchanged)."""
        if self.linear:
            return self
        theta2 = np.concatenate([np.asarray(self.theta2, np.float64), np.zeros(self.dim)])
        return replace(self, theta2=theta2, linear=True)


def random_relu_head(dim: int, width: int, *, seed: int = 0, features: np.ndarray | None = None,
                     mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> RewardHead:
    """A head with random Gaussian first layer (for tests and for developing Phase II without Phase I).

    The standardisation is ``mean``/``scale`` (d,) when given, else the column mean and standard deviation of
    ``features`` (n, d) when given, else none.
    """
    rng = np.random.default_rng(seed)
    if mean is not None and scale is not None:
        mean, scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
    elif features is not None:
        mean = features.mean(axis=0).astype(np.float64)
        scale = features.std(axis=0).astype(np.float64)
        scale[scale < 1e-12] = 1.0
    else:
        mean, scale = np.zeros(dim), np.ones(dim)
    theta1 = rng.standard_normal((dim, width)) / np.sqrt(dim)
    return RewardHead(theta1=theta1, theta2=np.zeros(width), mean=mean, scale=scale, gates=theta1.copy())
