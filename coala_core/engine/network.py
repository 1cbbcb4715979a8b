"""The one forward pass of a trained two-layer head, on numpy or cupy arrays (``xp`` from the data).

For pooled LM features ``f`` (n, d), training statistics ``mean``, ``scale`` (d,) and first-layer weights
``theta1`` (d', m), with d' = d + 1 when ``bias`` appends a column of ones:

    z  = (f - mean) / scale  [| 1]                                         (n, d')
    relu program:   x~ = relu(z @ theta1)                                  (n, m)
    gated program:  x~ = 1[z @ gates[:, pattern] >= 0] * (z @ theta1)      (n, m)
    linear term:    x~ = [x~ | (f - mean) / scale]                         (n, m + d)   when ``linear``
    reward:         r  = x~ @ theta2                                       (n,)

The optional linear term (``phase2.linear_term``) gives Phase II a skip connection: the head is the ReLU network
plus a linear function of the standardised features, still fit by one convex program in theta2 (m + d,).

Everything is computed in float64. ``RewardHead`` (Phase II) and ``Phase1Result`` (the recovered Phase I
network) both score through these two functions, so a head scores the same before and after Phase II
changes its theta2, on either backend.
"""

from __future__ import annotations

from typing import Any

from coala_core.engine.backend import get_xp


def standardized(f: Any, mean: Any, scale: Any, bias: bool) -> Any:
    """``(f - mean) / scale`` in float64, with a trailing column of ones when ``bias``: (n, d) -> (n, d')."""
    xp = get_xp(f)
    Z = (xp.asarray(f, dtype=xp.float64) - xp.asarray(mean, dtype=xp.float64)) / xp.asarray(scale, dtype=xp.float64)
    if bias:
        Z = xp.concatenate([Z, xp.ones((Z.shape[0], 1), dtype=xp.float64)], axis=1)
    return Z


def hidden(f: Any, theta1: Any, mean: Any, scale: Any, *, bias: bool = False, program: str = "relu",
           gates: Any = None, pattern: Any = None, linear: bool = False) -> Any:
    """The frozen first layer x~ (n, m), or (n, m + d) with the ``linear`` term, of features ``f`` (n, d)
    (see the module docstring)."""
    xp = get_xp(f)
    Z = standardized(f, mean, scale, bias)
    pre = Z @ xp.asarray(theta1, dtype=xp.float64)
    if program == "gated":
        G = xp.asarray(gates, dtype=xp.float64)[:, xp.asarray(pattern)]
        H = xp.where(Z @ G >= 0, pre, 0.0)
    else:
        H = xp.maximum(pre, 0.0)
    if linear:  # the standardised features without the bias column
        H = xp.concatenate([H, Z[:, : Z.shape[1] - int(bias)]], axis=1)
    return H


def forward(f: Any, theta1: Any, theta2: Any, mean: Any, scale: Any, *, bias: bool = False, program: str = "relu",
            gates: Any = None, pattern: Any = None, linear: bool = False) -> Any:
    """Rewards r (n,) of features ``f`` (n, d): ``hidden(f, ...) @ theta2``."""
    xp = get_xp(f)
    H = hidden(f, theta1, mean, scale, bias=bias, program=program, gates=gates, pattern=pattern, linear=linear)
    return H @ xp.asarray(theta2, dtype=xp.float64)
